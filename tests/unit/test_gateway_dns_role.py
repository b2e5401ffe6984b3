"""The gateway role's dns.yml.j2 renders og-dns's configuration from the og_gateway_dns_* defaults, with only keys of
og-dns's config (the dns helpers' contract, docs/dns.md) and the unit runs og-dns with the capabilities it needs."""

import os

import jinja2
import yaml

ROLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles", "gateway")
OG_DNS_KEYS = {"listen", "port", "upstreams", "domains_file", "spool_dir", "min_ttl", "max_ttl", "grace", "name_cap",
               "gateway_cap", "unlisted", "internal_networks", "ipv6", "upstream_timeout", "metrics_listen", "name"}


def render(**overrides):
    with open(os.path.join(ROLE, "defaults", "main.yml")) as fh:
        values = yaml.safe_load(fh)
    values.update(ansible_managed="managed", og_gateway_name="gw1", og_gateway_state_dir="/var/lib/og",
                  _og_dns_listen=["10.88.0.1"], _og_dns_upstreams=["192.0.2.53", "192.0.2.54:5353"],
                  _og_gateway_web={"enabled": False})
    values.update(overrides)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    env.filters["bool"] = lambda v: v if isinstance(v, bool) else str(v).lower() in ("true", "yes", "1")
    for key in ("og_gateway_dns_metrics_listen",):   # defaults that are templates themselves, as Ansible resolves them
        values[key] = env.from_string(values[key]).render(**values)
    with open(os.path.join(ROLE, "templates", "dns.yml.j2")) as fh:
        return yaml.safe_load(env.from_string(fh.read()).render(**values))


def test_dns_yml_holds_og_dns_keys_only_with_the_role_defaults():
    cfg = render()
    assert set(cfg) <= OG_DNS_KEYS
    assert cfg == {"name": "gw1", "listen": ["10.88.0.1"], "port": 53, "upstreams": ["192.0.2.53", "192.0.2.54:5353"],
                   "domains_file": "/var/lib/og/domains.json", "spool_dir": "/var/lib/og/dns-spool", "min_ttl": 5,
                   "max_ttl": 3600, "grace": 900, "name_cap": 64, "gateway_cap": 100000, "unlisted": "forward",
                   "ipv6": False, "metrics_listen": "0.0.0.0:9901"}
    assert render(og_gateway_dns_unlisted="refuse", og_gateway_ipv6=True)["unlisted"] == "refuse"
    # On IPv6 as well with og_gateway_ipv6, as the agent's metrics: og-route probes its /healthz on IPv6 gateways.
    assert render(og_gateway_ipv6=True)["metrics_listen"] == "[::]:9901"
    assert render(og_gateway_ipv6=True, og_gateway_dns_metrics_listen="10.88.0.1:9911")["metrics_listen"] == \
        "10.88.0.1:9911"


def test_og_dns_and_the_agent_read_the_metrics_web_config_the_role_writes_only_when_there_is_one():
    """roles/service/tasks/webconfig.yml's og_service_web (kept as _og_gateway_web): both daemons get its file."""
    web = {"enabled": True, "tls": True, "file": "/etc/og/metrics-web.yml", "files": []}
    assert render(_og_gateway_web=web)["metrics_web_config_file"] == "/etc/og/metrics-web.yml"
    with open(os.path.join(ROLE, "templates", "agent.yml.j2")) as fh:
        agent = fh.read()
    assert 'metrics_web_config_file: "{{ _og_gateway_web.file }}"' in agent
    assert "{% if _og_gateway_web.enabled | bool %}" in agent


def test_the_agent_writes_the_domains_file_og_dns_reads():
    with open(os.path.join(ROLE, "templates", "agent.yml.j2")) as fh:
        agent = fh.read()
    assert 'dns_domains_file: "{{ og_gateway_state_dir }}/domains.json"' in agent
    assert render()["domains_file"] == "/var/lib/og/domains.json"


def test_the_og_dns_unit_is_its_own_with_net_admin_and_bind_service_and_is_off_by_default():
    with open(os.path.join(ROLE, "tasks", "dns.yml")) as fh:
        tasks = yaml.safe_load(fh)
    (run,) = [t for t in tasks if "ansible.builtin.include_role" in t]
    assert run["vars"]["og_service_name"] == "og-dns"
    assert run["vars"]["og_service_capabilities"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE"]
    assert run["vars"]["og_service_exec"][1:] == ["--config", "{{ og_gateway_config_dir }}/dns.yml"]
    with open(os.path.join(ROLE, "tasks", "main.yml")) as fh:
        (step,) = [t for t in yaml.safe_load(fh) if t.get("ansible.builtin.import_tasks") == "dns.yml"]
    assert step["when"] == "og_gateway_dns_enabled | bool"
    with open(os.path.join(ROLE, "defaults", "main.yml")) as fh:
        assert yaml.safe_load(fh)["og_gateway_dns_enabled"] is True
