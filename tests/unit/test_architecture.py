# -*- coding: utf-8 -*-
# Copyright (c) outputguard.egress contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The import rules of docs/architecture.md, read from the source (the AST of every module, nothing imported).

The server never imports an agent, the agents never import the server or each other, and they share only
plugins/module_utils (og_kernel). Inside server_app: web (api, ui, ws, metrics) -> services -> models -> core,
never upwards, no cycles, and no function-level import unless a comment on its line says why.
"""

from __future__ import annotations

import ast
import os

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Folder of the checkout -> the name its modules are imported under.
PACKAGES = {"server_app": "server_app", "gateway_agent": "gateway_agent", "route_agent": "route_agent",
            "plugins/module_utils": "og_kernel", "plugins/modules": "og_modules"}
COLLECTION_UTILS = "ansible_collections.outputguard.egress.plugins.module_utils"

# The programs deployed apart, and what each may import of the others (their own package aside).
SHARED = {
    "server_app": {"og_kernel"},
    "gateway_agent": {"og_kernel"},
    "route_agent": {"og_kernel"},
    "og_kernel": set(),
    "og_modules": {"og_kernel"},   # through ansible_collections.outputguard.egress.plugins.module_utils
}

# server_app's layers, lowest first: a module may import its own layer's modules and those below.
LAYERS = [
    ("core", ("server_app.version", "server_app.config", "server_app.extensions", "server_app.errors")),
    ("models", ("server_app.models",)),
    ("services", ("server_app.services",)),
    ("web", ("server_app.api", "server_app.ui", "server_app.ws", "server_app.metrics")),
    ("app", ("server_app", "server_app.background", "server_app.serving", "server_app.cli",
             "server_app.migrations")),
]
# Within the web layer the parts are side by side: none imports another.
WEB_PARTS = ("server_app.api", "server_app.ui", "server_app.ws", "server_app.metrics")


def module_name(path):
    """The dotted name a file of the checkout is imported under (None for files outside PACKAGES)."""
    rel = os.path.relpath(path, TOP).replace(os.sep, "/")
    for folder, name in sorted(PACKAGES.items(), key=lambda kv: -len(kv[0])):
        if rel.startswith(folder + "/"):
            parts = rel[len(folder) + 1:-len(".py")].split("/")
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([name] + parts)
    return None


def sources():
    """{module name: (path, is a package)} of every Python file in PACKAGES."""
    found = {}
    for folder in PACKAGES:
        for root, _dirs, files in os.walk(os.path.join(TOP, folder)):
            for filename in files:
                if filename.endswith(".py"):
                    path = os.path.join(root, filename)
                    found[module_name(path)] = (path, filename == "__init__.py")
    return found


def imports(name, is_package, source, known):
    """[(imported module, line, at module level, the line's text)] of one module's source.

    Relative imports are resolved against `name`; `from pkg import sub` names the module pkg.sub when that is
    a known module, else pkg. The collection's own module_utils path counts as og_kernel."""
    found = []
    lines = source.splitlines()
    package = name if is_package else name.rpartition(".")[0]

    def visit(node, top):
        for child in ast.iter_child_nodes(node):
            nested = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append((alias.name, child.lineno, top, lines[child.lineno - 1]))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[:len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module
                if target.startswith(COLLECTION_UTILS):
                    target = "og_kernel" + target[len(COLLECTION_UTILS):]
                for alias in child.names:
                    sub = target + "." + alias.name
                    found.append((sub if sub in known else target, child.lineno, top, lines[child.lineno - 1]))
            visit(child, nested)
    visit(ast.parse(source), True)
    return found


def component(name):
    return name.split(".")[0]


def layer(name):
    """(index, part) of a server_app module in LAYERS (the longest prefix wins)."""
    best = None
    for index, (_label, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (index, prefix)
    return best


def violations(graph):
    """Every broken rule of a {module: [(imported, line, at module level, text)]} graph, as sorted texts."""
    found = set()
    ours = set(SHARED)
    for name, edges in graph.items():
        for target, line, top, text in edges:
            own, other = component(name), component(target)
            if other in ours and other != own and other not in SHARED[own]:
                found.add("%s:%d imports %s: %s may import only %s of the other parts" % (
                    name, line, target, own, ", ".join(sorted(SHARED[own])) or "nothing"))
            if own == "server_app" and not top and "#" not in text:
                found.add("%s:%d imports %s inside a function without a comment saying why" % (name, line, target))
            if own == "server_app" and other == "server_app" and target != name:
                (mine, part), (theirs, their_part) = layer(name), layer(target)
                if theirs > mine:
                    found.add("%s:%d imports %s: the %s layer may not import the %s layer" % (
                        name, line, target, LAYERS[mine][0], LAYERS[theirs][0]))
                elif theirs == mine and part in WEB_PARTS and their_part != part:
                    found.add("%s:%d imports %s: %s and %s are side by side and share through services" % (
                        name, line, target, part, their_part))
    for cycle in cycles({name: {t for t, _l, top, _x in edges if top and t in graph and t != name}
                         for name, edges in graph.items()}):
        found.add("import cycle: " + " -> ".join(cycle))
    return sorted(found)


def cycles(edges):
    """The module-level import cycles of a {module: {imported modules}} graph, each from its smallest name."""
    found, state = set(), {}

    def walk(node, path):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                loop = path[path.index(target):]
                start = loop.index(min(loop))
                found.add(tuple(loop[start:] + loop[:start] + [min(loop)]))
            elif target not in state:
                walk(target, path + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            walk(node, [node])
    return sorted(found)


def checkout_graph():
    known = sources()
    graph = {}
    for name, (path, is_package) in known.items():
        with open(path, encoding="utf-8") as fh:
            graph[name] = imports(name, is_package, fh.read(), known)
    return graph


def test_the_checkout_keeps_every_import_rule():
    assert violations(checkout_graph()) == []


def test_every_part_is_read():
    graph = checkout_graph()
    assert {component(name) for name in graph} == set(SHARED)
    assert {"server_app.api", "server_app.ui", "server_app.ws.gateway", "server_app.services.hub",
            "server_app.errors", "server_app.extensions", "gateway_agent.client", "route_agent.daemon",
            "og_kernel.og_firewall", "og_modules.og_entry"} <= set(graph)
    # Every server_app module lies in one of the documented layers.
    assert [name for name in graph if component(name) == "server_app" and layer(name) is None] == []


def _graph(modules):
    """A graph from {module name: source} (a module is a package when another's name extends it)."""
    names = set(modules)
    return {name: imports(name, any(other.startswith(name + ".") for other in names), source, names)
            for name, source in modules.items()}


def test_relative_imports_resolve_to_the_module_they_name():
    graph = _graph({"server_app.services": "", "server_app.services.entries": "from . import hub\n",
                    "server_app.services.hub": "from ..extensions import db\nfrom .. import models\n",
                    "server_app.extensions": "", "server_app.models": ""})
    assert [(t, top) for t, _line, top, _text in graph["server_app.services.entries"]] == [
        ("server_app.services.hub", True)]
    assert [t for t, _line, _top, _text in graph["server_app.services.hub"]] == [
        "server_app.extensions", "server_app.models"]


@pytest.mark.parametrize("modules, expected", [
    ({"server_app.services.entries": "from gateway_agent import client\n", "gateway_agent.client": ""},
     ["server_app.services.entries:1 imports gateway_agent.client: server_app may import only og_kernel of the "
      "other parts"]),
    ({"gateway_agent.client": "import server_app.models\n", "server_app.models": ""},
     ["gateway_agent.client:1 imports server_app.models: gateway_agent may import only og_kernel of the other "
      "parts"]),
    ({"og_kernel.og_firewall": "from route_agent import daemon\n", "route_agent.daemon": ""},
     ["og_kernel.og_firewall:1 imports route_agent.daemon: og_kernel may import only nothing of the other parts"]),
    ({"og_modules.og_entry": "from ansible_collections.outputguard.egress.plugins.module_utils.og_api import x\n",
      "og_kernel.og_api": ""}, []),
    ({"server_app.services.entries": "from ..api import error\n", "server_app.api": ""},
     ["server_app.services.entries:1 imports server_app.api: the services layer may not import the web layer"]),
    ({"server_app.ui": "from .api import bp\n", "server_app.api": ""},
     ["server_app.ui:1 imports server_app.api: server_app.ui and server_app.api are side by side and share "
      "through services"]),
    ({"server_app.services.hub": "def f():\n    from . import entries\n", "server_app.services.entries": ""},
     ["server_app.services.hub:2 imports server_app.services.entries inside a function without a comment "
      "saying why"]),
    ({"server_app.services.hub": "def f():\n    import dns  # optional: only with the resolver\n"}, []),
    ({"server_app.services.a": "from . import b\n", "server_app.services.b": "from . import c\n",
      "server_app.services.c": "from . import a\n"},
     ["import cycle: server_app.services.a -> server_app.services.b -> server_app.services.c -> "
      "server_app.services.a"]),
])
def test_each_rule_is_enforced(modules, expected):
    assert violations(_graph(modules)) == expected
