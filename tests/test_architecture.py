"""The package's rooms and the imports each may make (docs/architecture.md).

Every `import` in every module of `openrlhf_srt`, at any depth (a lazy import inside a function
counts), is checked against ALLOWED: a room imports only itself and the rooms listed for it,
so dependencies run one way, downwards. The low rooms (the cache, the online draft policy, the
traces and prompts, run-ahead, the replay) import no engine or training framework, so they
load and test without vLLM or torch.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "openrlhf_srt"

# room -> the package rooms it may import. A room is a folder of the package, or a top-level
# module (srt_config, run_logger) beside the folders. Kept in step with docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "cache": set(),
    "drafting": set(),
    "models": set(),
    "data": {"cache"},
    "runahead": {"drafting"},
    "replay": {"cache", "drafting", "data"},
    "vllm": {"cache", "drafting", "models", "runahead"},
    "srt_config": {"cache", "drafting", "runahead", "vllm"},
    "run_logger": set(),
    "local": {"cache", "drafting", "models", "data", "runahead", "vllm", "srt_config",
              "run_logger"},
    "openrlhf": {"cache", "drafting", "models", "data", "runahead", "vllm", "srt_config",
                 "run_logger"},
    "cli": {"cache", "drafting", "models", "data", "runahead", "replay", "vllm", "srt_config",
            "run_logger", "local", "openrlhf"},
    "__init__": set(),
}

# Engines and training frameworks: none of them in the rooms that must load without them.
HEAVY = {"torch", "vllm", "transformers", "ray", "openrlhf", "deepspeed", "wandb"}
LIGHT_ROOMS = {"cache", "drafting", "data", "runahead", "replay"}
# The online policy and the cache core run inside every engine step: standard library and numpy.
NUMPY_ONLY_ROOMS = {"cache", "drafting"}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def room_of(module: str) -> str:
    """`openrlhf_srt.vllm.proposer` -> `vllm`; `openrlhf_srt.srt_config` -> `srt_config`."""
    parts = module.split(".")
    assert parts[0] == "openrlhf_srt", module
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Imports of `module` (given its source) that the rules forbid, one line each."""
    me = room_of(module)
    bad = []
    for line, name in imports_of(source, module, is_package):
        top = name.split(".")[0]
        if top == "openrlhf_srt":
            other = room_of(name) if "." in name else "__init__"
            if other != me and other not in ALLOWED[me]:
                bad.append(f"{module}:{line} imports {name} (room {me} may import "
                           f"{sorted(ALLOWED[me]) or 'no other room'})")
        elif me in LIGHT_ROOMS and top in HEAVY:
            bad.append(f"{module}:{line} imports {name} ({me} must load without {top})")
        elif me in NUMPY_ONLY_ROOMS and top != "numpy" and top not in STDLIB:
            bad.append(f"{module}:{line} imports {name} ({me}: standard library and numpy only)")
    return bad


def package_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_room_of_the_package_has_rules():
    rooms = {room_of(module_name(p)) for p in package_modules()}
    assert rooms <= set(ALLOWED), f"rooms without import rules: {sorted(rooms - set(ALLOWED))}"


def test_the_rules_run_one_way():
    """ALLOWED is a layering: no room can reach itself through the rooms it may import."""
    def reach(room, seen):
        for other in ALLOWED[room]:
            if other == room or other in seen:
                continue
            seen.add(other)
            reach(other, seen)
        return seen
    for room in ALLOWED:
        assert room not in reach(room, set()), f"{room} can import itself through others"


def test_no_module_imports_against_the_rules():
    bad = []
    for path in package_modules():
        bad += violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


@pytest.mark.parametrize("module,source,expected", [
    ("openrlhf_srt.cache.cache", "import torch", "must load without torch"),
    ("openrlhf_srt.drafting.budget", "def f():\n    from openrlhf_srt.data import traces",
     "room drafting may import no other room"),
    ("openrlhf_srt.vllm.proposer", "from openrlhf_srt.openrlhf.engine_group import X",
     "room vllm may import"),
    ("openrlhf_srt.drafting.budget", "import scipy", "standard library and numpy only"),
    ("openrlhf_srt.cache.snapshot", "from ..vllm import proposer", "imports openrlhf_srt.vllm"),
])
def test_the_checker_catches_an_import_against_the_rules(module, source, expected):
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0], found


def test_the_checker_allows_what_the_rules_allow():
    assert violations("import numpy\nfrom . import config\nfrom .config import X",
                      "openrlhf_srt.cache.cache") == []
    assert violations("from openrlhf_srt.cache import TreeCache\nimport vllm",
                      "openrlhf_srt.vllm.proposer") == []


def module_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth, a lazy import too)."""
    paths = {module_name(p): p for p in package_modules()}
    graph = {}
    for module, path in paths.items():
        targets = set()
        for _, name in imports_of(path.read_text(), module, path.name == "__init__.py"):
            # `from openrlhf_srt.cache import snapshot` names a module; `... import TreeCache`
            # names its package: take the longest module the name starts with.
            while name and name not in paths:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def test_no_two_modules_import_each_other():
    """No import circle between modules (a lazy import that hides one counts), packages'
    __init__ re-exports aside (a package imports its modules, which import their siblings)."""
    graph = module_graph()
    packages = {m for m in graph if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    graph = {m: {t for t in ts if t not in packages} for m, ts in graph.items()}
    circles = []
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, "modules that import each other:\n" + "\n".join(circles)


def test_the_light_rooms_load_without_engines_or_frameworks():
    """The same rule at run time, in a fresh interpreter: importing every module of the light
    rooms loads none of the heavy packages, whatever their own imports pull in."""
    modules = sorted(module_name(p) for p in package_modules()
                     if room_of(module_name(p)) in LIGHT_ROOMS)
    code = (f"import importlib, json, sys; [importlib.import_module(m) for m in {modules!r}]; "
            f"print(json.dumps(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)))")
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent) + os.pathsep
               + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [], f"loaded by {sorted(LIGHT_ROOMS)}"


def test_no_two_modules_classes_or_constants_share_a_name():
    """A name says which thing it is: no two modules of the package share a file name, no two
    top-level classes a class name, no two modules define the same module-level constant
    (an UPPER_CASE name assigned at top level; one definition of each setting and limit)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for path in package_modules():
        module = module_name(path)
        if path.name != "__init__.py":
            seen.setdefault(("file", path.name), []).append(module)
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(("class", node.name), []).append(module)
            targets = (node.targets if isinstance(node, ast.Assign)
                       else [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                if isinstance(t, ast.Name) and t.id.isupper() and t.id != "__all__":
                    seen.setdefault(("constant", t.id), []).append(module)
    clashes = [f"{kind} {name}: {', '.join(mods)}" for (kind, name), mods in sorted(seen.items())
               if len(mods) > 1]
    assert not clashes, "names defined twice:\n" + "\n".join(clashes)
