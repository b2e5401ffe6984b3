"""og-gateway-agent: enforce the allowlist of an outputguard.egress server on this gateway."""

from __future__ import annotations

import logging
import signal
import sys

from . import config as config_mod


def main(argv=None):
    try:
        cfg = config_mod.load(argv)
    except config_mod.ConfigError as exc:
        print("og-gateway-agent: %s" % exc, file=sys.stderr)
        return 2
    logging.basicConfig(level=str(cfg["log_level"]).upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from og_kernel.og_command import CommandError
    from og_kernel.og_conntrack import ConnectionCutter
    from og_kernel.og_firewall import EgressPolicy, Firewall

    from . import metrics, state
    from .client import Agent

    fw = Firewall(EgressPolicy(cfg["client_networks"], cfg["outside_interface"], cfg["ipv6"],
                               cfg["internal_networks"], allow_dns_over_tls=cfg["allow_dns_over_tls"],
                               mode=starting_mode(cfg, state)))
    agent = Agent(cfg, fw, conntrack=ConnectionCutter(cfg["client_networks"], cfg["ipv6"]))

    def stop(signum, _frame):
        agent.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        metrics.serve(agent, cfg["metrics_listen"], cfg["name"], cfg["metrics_web_config"])
    except OSError as exc:
        print("og-gateway-agent: cannot listen on %s for metrics: %s; set metrics_listen to a free ADDRESS:PORT"
              % (cfg["metrics_listen"], exc.strerror), file=sys.stderr)
        return 1
    try:
        agent.run()
    except CommandError as exc:
        print("og-gateway-agent: %s" % exc.msg, file=sys.stderr)
        return 1
    except OSError as exc:
        print("og-gateway-agent: %s: %s" % (exc.filename or "I/O error", exc.strerror), file=sys.stderr)
        return 1
    return 0


def starting_mode(cfg, state):
    """The mode a server last set (kept by state.save_mode), else the configuration's: a restart while no server
    answers keeps what the fleet's admin chose, as it keeps the rules; the server corrects it at the hello."""
    log = logging.getLogger("og.agent")
    try:
        saved = state.load_mode(cfg["state_file"])
    except state.StateError as exc:
        log.error("%s", exc)
        saved = ""
    if saved and saved != cfg["mode"]:
        log.warning("gateway mode %s, as a server last set it (the configuration says %s)", saved, cfg["mode"])
    return saved or cfg["mode"]


if __name__ == "__main__":
    sys.exit(main())
