"""Run one of OpenRLHF's functions with some of the names it looks up replaced.

OpenRLHF 0.11.2 hard-codes two classes we need to swap: `create_vllm_engines` starts
`RolloutRayActor` (a module global), and `train()` builds `create_vllm_engines(...)` (a
module global) and `PPOTrainer` (a local `from openrlhf.trainer.ppo_trainer import ...`).
Neither takes a parameter for them. Instead of copying those functions, `rebind` makes a
new function object from the same code with a private globals dict: OpenRLHF's modules are
not modified, nothing else in the process sees the change, and the Ray actors the function
starts are our subclasses, so the SRT behaviour lives in the actor processes.

`check_names` guards against drift: it fails if the function no longer looks the names up
(an OpenRLHF release that renames them must be looked at, not silently run unchanged).
"""

from __future__ import annotations

import builtins
import dis
import types
from collections.abc import Callable
from typing import Any


class RebindError(RuntimeError):
    pass


def looked_up_names(fn: Callable) -> set[str]:
    """Global names fn's code loads, plus `module:name` for every `from module import name`
    executed inside it."""
    code = fn.__code__
    out = set()
    module = None
    for ins in dis.get_instructions(code):
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            out.add(ins.argval)
        elif ins.opname == "IMPORT_NAME":
            module = ins.argval
        elif ins.opname == "IMPORT_FROM" and module is not None:
            out.add(f"{module}:{ins.argval}")
    return out


def check_names(fn: Callable, names: set[str]) -> None:
    missing = sorted(set(names) - looked_up_names(fn))
    if missing:
        raise RebindError(
            f"{fn.__module__}.{fn.__qualname__} no longer looks up {', '.join(missing)}; this "
            "OpenRLHF version is not supported by openrlhf_srt (see openrlhf/versions.py)")


def rebind(fn: Callable, globals_: dict[str, Any] | None = None,
           imports: dict[str, dict[str, Any]] | None = None) -> Callable:
    """fn's code with `globals_` replacing module globals and `imports[module][name]`
    replacing `from module import name` inside the function. Both are checked to be names
    fn actually uses."""
    globals_ = globals_ or {}
    imports = imports or {}
    check_names(fn, set(globals_) | {f"{m}:{n}" for m, names in imports.items() for n in names})
    namespace = dict(fn.__globals__)
    namespace.update(globals_)
    if imports:
        namespace["__builtins__"] = {**vars(builtins), "__import__": _importer(imports)}
    new = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__,
                             fn.__closure__)
    new.__kwdefaults__ = fn.__kwdefaults__
    new.__doc__ = fn.__doc__
    new.__qualname__ = fn.__qualname__
    new.__module__ = fn.__module__
    return new


def _importer(imports: dict[str, dict[str, Any]]) -> Callable:
    real_import = builtins.__import__

    def import_(name, globals=None, locals=None, fromlist=(), level=0):
        replaced = imports.get(name) if level == 0 else None
        if replaced is None or not fromlist:
            return real_import(name, globals, locals, fromlist, level)
        unknown = [n for n in fromlist if n not in replaced]
        if unknown:  # a name we were not told about: import the real module for all
            module = real_import(name, globals, locals, fromlist, level)
            return types.SimpleNamespace(**{n: replaced[n] if n in replaced else getattr(module, n)
                                            for n in fromlist})
        return types.SimpleNamespace(**{n: replaced[n] for n in fromlist})

    return import_
