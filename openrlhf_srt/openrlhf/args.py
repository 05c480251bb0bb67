"""OpenRLHF 0.11.2's own argument parser and argument checks, reused unchanged.

`openrlhf/cli/train_ppo_ray.py` builds its parser, parses, hierarchizes and validates the
arguments inside `if __name__ == "__main__":`, then calls `train(args)`; none of it is a
function we could call. Choices we did not take: copying the ~500 lines of flags (they would
drift from the installed OpenRLHF), `runpy.run_module(..., run_name="__main__")` (it would
parse sys.argv without our flags and start training), or patching `argparse` (a monkeypatch).

What we do: read that file's source from the installed package (without importing it: the
module imports ray's trainer actors and, through them, deepspeed), find the `__main__`
block with `ast`, and split it at `args = parser.parse_args()`:

- the statements before it build the parser: `build_parser()` runs them and returns it,
  so every OpenRLHF flag, default, choice and help text is OpenRLHF's own;
- the statements after it (hierarchize, then every check and derived default OpenRLHF
  applies) end with `train(args)`: `finalize(namespace)` runs them with `train` bound to a
  function that only captures `args`, and returns the hierarchized, checked namespace.

If a later OpenRLHF changes that structure, `OpenRLHFArgsError` says what was not found
(and the version check at start names the supported version first).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
from datetime import datetime
from functools import lru_cache
from pathlib import Path

MODULE = "openrlhf.cli.train_ppo_ray"


class OpenRLHFArgsError(RuntimeError):
    """OpenRLHF's train_ppo_ray.py no longer has the structure this module relies on."""


def source_path() -> Path:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None or not spec.submodule_search_locations:
        raise OpenRLHFArgsError("openrlhf is not installed (pip install 'openrlhf==0.11.2')")
    path = Path(next(iter(spec.submodule_search_locations))) / "cli" / "train_ppo_ray.py"
    if not path.is_file():
        raise OpenRLHFArgsError(f"{path} not found")
    return path


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    t = node.test
    return (isinstance(t.left, ast.Name) and t.left.id == "__name__" and len(t.comparators) == 1
            and isinstance(t.comparators[0], ast.Constant) and t.comparators[0].value == "__main__")


def _is_parse_args(node: ast.stmt) -> bool:
    return (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "args"
            and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Attribute)
            and node.value.func.attr == "parse_args")


@lru_cache(maxsize=1)
def _blocks() -> tuple:
    path = source_path()
    tree = ast.parse(path.read_text(), filename=str(path))
    main = next((n for n in tree.body if _is_main_guard(n)), None)
    if main is None:
        raise OpenRLHFArgsError(f"no `if __name__ == '__main__':` block in {path}")
    split = next((i for i, n in enumerate(main.body) if _is_parse_args(n)), None)
    if split is None:
        raise OpenRLHFArgsError(f"no `args = parser.parse_args()` in the __main__ block of {path}")
    last = main.body[-1]
    if not (isinstance(last, ast.Expr) and isinstance(last.value, ast.Call)
            and isinstance(last.value.func, ast.Name) and last.value.func.id == "train"):
        raise OpenRLHFArgsError(f"the __main__ block of {path} no longer ends with train(args)")

    def code(stmts):
        return compile(ast.Module(body=list(stmts), type_ignores=[]), str(path), "exec")

    return code(main.body[:split]), code(main.body[split + 1:])


def build_parser() -> argparse.ArgumentParser:
    """A fresh ArgumentParser with every flag of OpenRLHF's train_ppo_ray."""
    build, _ = _blocks()
    ns = {"argparse": argparse, "datetime": datetime, "os": os, "__name__": MODULE + ".args"}
    exec(build, ns)  # noqa: S102 - OpenRLHF's own parser construction, from its installed source
    parser = ns.get("parser")
    if not isinstance(parser, argparse.ArgumentParser):
        raise OpenRLHFArgsError("the __main__ block did not build `parser`")
    return parser


def finalize(flat: argparse.Namespace):
    """OpenRLHF's post-parse steps on a parsed namespace (hierarchize, checks, derived
    defaults); returns the namespace OpenRLHF's train() would receive. Its checks raise
    AssertionError with OpenRLHF's messages."""
    _, post = _blocks()
    captured = []
    ns = {"argparse": argparse, "datetime": datetime, "os": os, "args": flat,
          "train": captured.append, "__name__": MODULE + ".args"}
    exec(post, ns)  # noqa: S102 - OpenRLHF's own checks, from its installed source
    if len(captured) != 1:
        raise OpenRLHFArgsError("OpenRLHF's checks did not reach train(args)")
    return captured[0]
