"""The local trainer's loss, advantages and overlong penalty against OpenRLHF 0.11.2's own
modules, loaded by path as OpenRLHF's tests do (importing `openrlhf.models` reaches
flash_attn, which has no CPU build)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from openrlhf_srt.local.algorithms import (
    group_advantages,
    informative_groups,
    overlong_penalty,
    policy_loss,
)

_PKG = "_openrlhf_srt_loss_test"


def _openrlhf_root() -> Path:
    spec = importlib.util.find_spec("openrlhf")
    if spec is None:
        pytest.fail("openrlhf is not installed: `make setup` installs it with --no-deps")
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def openrlhf_loss():
    """OpenRLHF's models/loss.py. Its sibling utils.py imports deepspeed at module top for
    ZeRO-3 helpers; PolicyLoss never calls them, so a stand-in module satisfies the import
    (deepspeed itself does not install on this CPU machine's torch)."""
    models = _openrlhf_root() / "models"
    saved = sys.modules.get("deepspeed")
    sys.modules.setdefault("deepspeed", types.ModuleType("deepspeed"))
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [str(models)]
    sys.modules[_PKG] = pkg
    try:
        for name in ("utils", "loss"):
            spec = importlib.util.spec_from_file_location(f"{_PKG}.{name}", models / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[f"{_PKG}.{name}"] = module
            spec.loader.exec_module(module)
        yield sys.modules[f"{_PKG}.loss"]
    finally:
        for name in [m for m in sys.modules if m.startswith(_PKG)]:
            del sys.modules[name]
        if saved is None:
            sys.modules.pop("deepspeed", None)


@pytest.mark.parametrize("token_level", [True, False])
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("seed", range(3))
def test_policy_loss_equals_openrlhf(openrlhf_loss, token_level, eps, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (6, 11)
    old = -torch.rand(shape, generator=g, dtype=torch.float64) * 3
    new = (old + torch.randn(shape, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    adv = torch.randn(shape[0], 1, generator=g, dtype=torch.float64).expand(shape)
    mask = (torch.rand(shape, generator=g) > 0.3).double()
    mask[2] = 0  # a fully masked sample
    ref_fn = openrlhf_loss.PolicyLoss(clip_eps_low=eps[0], clip_eps_high=eps[1],
                                      token_level_loss=token_level)
    ref_loss, ref_clip, ref_kl, *_ = ref_fn(new, old, adv, action_mask=mask)
    (ref_grad,) = torch.autograd.grad(ref_loss, new)
    ours = policy_loss(new, old, adv, mask, eps[0], eps[1], token_level=token_level)
    (grad,) = torch.autograd.grad(ours.loss, new)
    torch.testing.assert_close(ours.loss, ref_loss)
    torch.testing.assert_close(grad, ref_grad)
    torch.testing.assert_close(ours.clip_ratio, ref_clip)
    torch.testing.assert_close(ours.ppo_kl, ref_kl)


def test_group_advantages_match_openrlhf_formulas():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    adv = group_advantages(r)
    expected = (r - r.mean(-1, keepdim=True)) / (r.std(-1, keepdim=True) + 1e-9)
    torch.testing.assert_close(adv, expected)
    assert adv[1].abs().sum() == 0  # all-equal group: no signal
    assert adv[0].tolist() == pytest.approx([0.866, -0.866, -0.866, 0.866], abs=1e-3)
    torch.testing.assert_close(group_advantages(r, "dr_grpo"), r - r.mean(-1, keepdim=True))
    with pytest.raises(ValueError, match="estimator"):
        group_advantages(r, "gae")
    assert informative_groups(r).tolist() == [True, False, True]



@pytest.fixture
def openrlhf_length_penalty(monkeypatch):
    """OpenRLHF's length_penalty.py. It imports openrlhf.utils.logging_utils, whose package
    __init__ pulls math libraries not installed here; apply_overlong_penalty never logs, so a
    stand-in logging_utils with init_logger satisfies the import."""
    import logging

    path = _openrlhf_root() / "trainer" / "ppo_utils" / "length_penalty.py"
    for name in ("openrlhf", "openrlhf.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    stand_in = types.ModuleType("openrlhf.utils.logging_utils")
    stand_in.init_logger = logging.getLogger
    monkeypatch.setitem(sys.modules, "openrlhf.utils.logging_utils", stand_in)
    spec = importlib.util.spec_from_file_location("_openrlhf_srt_length_penalty", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overlong_penalty_matches_openrlhf(openrlhf_length_penalty):
    lengths = torch.tensor([10, 190, 200, 230, 256, 256])
    rewards = torch.ones(len(lengths), dtype=torch.float64)
    exp = SimpleNamespace(response_length=lengths, rewards=rewards.clone())
    openrlhf_length_penalty.apply_overlong_penalty([exp], max_new_tokens=256,
                                                   overlong_buffer_len=64,
                                                   overlong_penalty_factor=1.5)
    ours = rewards + overlong_penalty(lengths, 256, 64, 1.5)
    torch.testing.assert_close(ours, exp.rewards)
    assert ours[0] == 1.0 and ours[-1] == pytest.approx(1 - 1.5)
    with pytest.raises(ValueError, match="overlong buffer"):
        overlong_penalty(lengths, 256, 300)
