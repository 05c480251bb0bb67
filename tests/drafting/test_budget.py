"""The draft budget policy and the step cost model (pure numpy, no engine)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from openrlhf_srt.drafting.budget import (
    BudgetConfig,
    choose_budgets,
    goodput_budgets,
    length_aware_budgets,
)
from openrlhf_srt.drafting.cost_model import CPU_PRIOR, StepCost, StepCostModel, fit_hinge


def _csr(drafts):
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in drafts])])
    flat = np.concatenate([np.asarray(d, dtype=float) for d in drafts]) if drafts else np.zeros(0)
    return flat, offsets


def _throughput(drafts, ks, cost):
    gain = sum(sum(d[:k]) for d, k in zip(drafts, ks))
    return (len(drafts) + gain) / cost(len(drafts) + sum(ks))


@pytest.mark.parametrize("seed", range(20))
def test_goodput_allocation_is_optimal_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    drafts = [np.cumprod(rng.uniform(0.2, 1.0, size=rng.integers(0, 4))) for _ in range(3)]
    cost = StepCost(fixed=0.04, per_token=rng.uniform(0.001, 0.05), knee=rng.integers(0, 8))
    ks = goodput_budgets(*_csr(drafts), cost)
    best = max(
        _throughput(drafts, c, cost)
        for c in itertools.product(*[range(len(d) + 1) for d in drafts])
    )
    assert _throughput(drafts, ks, cost) == pytest.approx(best)
    assert all(0 <= k <= len(d) for k, d in zip(ks, drafts))


def test_goodput_speculates_more_in_the_long_tail():
    cost = StepCost(fixed=0.040, per_token=0.0016, knee=16)  # free tokens below a knee
    draft = np.cumprod(np.full(16, 0.8))
    per_seq = [goodput_budgets(*_csr([draft] * n), cost).mean() for n in (1, 2, 8, 32, 128)]
    assert per_seq == sorted(per_seq, reverse=True)
    # 2 sequences: 2 + 14 draft tokens fill the 16 free tokens below the knee
    assert per_seq[1] == 7
    assert per_seq[-1] < 2  # a large batch pays full price for every draft token


def test_goodput_ignores_hopeless_drafts_in_a_big_batch():
    ks = goodput_budgets(*_csr([np.full(8, 0.01)] * 64), CPU_PRIOR)
    assert ks.sum() == 0


def test_choose_budgets_rules():
    drafts = [np.cumprod(np.full(10, 0.9)), np.cumprod(np.full(3, 0.9)), np.zeros(0)]
    flat, offsets = _csr(drafts)
    lengths = np.array([2000, 10, 500])
    fixed = choose_budgets(BudgetConfig(rule="fixed", max_draft_tokens=6), flat, offsets, lengths, CPU_PRIOR)
    assert fixed.tolist() == [6, 3, 0]
    la = BudgetConfig(rule="length_aware", max_draft_tokens=8, length_aware_full_at=1000,
                      length_aware_min=2)
    assert choose_budgets(la, flat, offsets, lengths, CPU_PRIOR).tolist() == [8, 2, 0]
    assert length_aware_budgets(np.array([0, 500, 5000]), la).tolist() == [2, 5, 8]
    gp = choose_budgets(BudgetConfig(max_draft_tokens=4), flat, offsets, lengths, CPU_PRIOR)
    assert gp.tolist() == [4, 3, 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(rule="bogus"), "budget rule"),
        (dict(max_draft_tokens=-1), "max_draft_tokens"),
        (dict(length_aware_min=99), "length_aware_min"),
    ],
)
def test_bad_budget_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BudgetConfig(**kwargs)


def test_hinge_fit_recovers_the_engine_curve():
    truth = StepCost(fixed=0.041, per_token=0.0016, knee=16)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 300, size=200)
    seconds = truth(tokens) * rng.normal(1, 0.02, size=tokens.size)
    fit = fit_hinge(np.stack([tokens, seconds], axis=1).astype(float))
    assert fit.fixed == pytest.approx(0.041, rel=0.1)
    assert fit.per_token == pytest.approx(0.0016, rel=0.1)
    model = StepCostModel(prior=StepCost(1.0, 1.0, 0))
    for t, s in zip(tokens, seconds):
        model.observe(int(t), float(s))
    assert model(256) == pytest.approx(truth(256), rel=0.1)
    model.observe(0, 1.0)  # ignored
    model.observe(5, float("nan"))  # ignored
    assert model(256) == pytest.approx(truth(256), rel=0.1)


def test_cost_model_moves_its_level_when_all_steps_have_one_size():
    model = StepCostModel(prior=StepCost(0.040, 0.002, 4), window=32, min_points=8)
    for _ in range(8):
        model.observe(10, 0.070)
    assert model(10) == pytest.approx(0.070)  # slope and knee kept, level fitted
    assert model.current.per_token == 0.002 and model.current.knee == 4
