"""What the drafting and replay packages may import (their docstrings, README "Layout"): the
online draft policy runs in every engine step and needs numpy only; the replay laboratory is
offline and never loads torch or vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loaded_after_import(modules: list[str], watched: list[str]) -> list[str]:
    """Import ``modules`` in a fresh interpreter; which of ``watched`` got loaded."""
    code = (f"import importlib, json, sys; [importlib.import_module(m) for m in {modules!r}]; "
            f"print(json.dumps([m for m in {watched!r} if m in sys.modules]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       check=False)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def package_modules(package: str) -> list[str]:
    folder = ROOT / package.replace(".", "/")
    return [package] + [f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))
                        if p.stem != "__init__"]


def test_drafting_imports_neither_cache_nor_traces_nor_torch_nor_vllm():
    watched = ["openrlhf_srt.cache", "openrlhf_srt.data", "openrlhf_srt.replay", "torch",
               "vllm"]
    assert loaded_after_import(package_modules("openrlhf_srt.drafting"), watched) == []


def test_replay_imports_neither_torch_nor_vllm():
    assert loaded_after_import(package_modules("openrlhf_srt.replay"), ["torch", "vllm"]) == []
