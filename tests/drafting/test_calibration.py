"""Draft probability calibration against verification outcomes (drafting/calibration.py)."""

from __future__ import annotations

import numpy as np
import pytest

from openrlhf_srt.drafting.calibration import AcceptanceCalibrator, conditionals, running_products


def test_conditionals_and_running_products_invert_each_other():
    offsets = np.array([0, 3, 3, 5])
    path = np.array([0.8, 0.4, 0.1, 1.0, 0.5])
    cond = conditionals(path, offsets)
    assert cond == pytest.approx([0.8, 0.5, 0.25, 1.0, 0.5])
    assert running_products(cond, offsets) == pytest.approx(path)
    assert conditionals(np.zeros(0), np.array([0, 0])).size == 0


def test_unseen_bins_leave_probabilities_unchanged():
    cal = AcceptanceCalibrator()
    offsets = np.array([0, 2])
    path = np.array([0.9, 0.45])
    assert cal.calibrate(path, offsets) == pytest.approx(path)


def test_overconfident_certain_continuations_are_pulled_to_observed_rate():
    """Continuations seen once score 1.0; if the policy accepts them 30% of the time, the
    calibrated probability approaches 0.3 and path products follow."""
    rng = np.random.default_rng(0)
    cal = AcceptanceCalibrator(prior_weight=20)
    cond = np.ones(4000)
    cal.observe(cond, rng.random(4000) < 0.3)
    got = cal.calibrate(np.array([1.0, 1.0]), np.array([0, 2]))
    assert got[0] == pytest.approx(0.3, abs=0.03)
    assert got[1] == pytest.approx(got[0] ** 2, rel=1e-9)
    # other bins untouched
    assert cal.calibrate(np.array([0.55]), np.array([0, 1]))[0] == pytest.approx(0.55)


def test_calibrated_bins_track_a_miscalibrated_source():
    """Raw estimates r, true acceptance r**2: after enough outcomes every bin's calibrated
    value is within sampling error of the truth, not of the raw estimate."""
    rng = np.random.default_rng(1)
    cal = AcceptanceCalibrator(bins=10, prior_weight=10)
    raw = rng.random(50_000)
    cal.observe(raw, rng.random(raw.size) < raw**2)
    probe = np.array([0.15, 0.45, 0.85])
    calibrated = cal.calibrate_conditionals(probe)
    # bin averages of r**2 over [0.1,0.2), [0.4,0.5), [0.8,0.9)
    truth = np.array([(0.2**3 - 0.1**3) / 0.3, (0.5**3 - 0.4**3) / 0.3, (0.9**3 - 0.8**3) / 0.3])
    assert calibrated == pytest.approx(truth, abs=0.02)


def test_memory_bounds_counts_and_follows_change():
    cal = AcceptanceCalibrator(prior_weight=10, memory=1000)
    cal.observe(np.full(5000, 0.95), np.ones(5000))
    assert cal.verified.max() <= 1000 + 1e-9
    for _ in range(50):  # the policy changed; outcomes arrive step by step
        cal.observe(np.full(100, 0.95), np.zeros(100))
    assert cal.calibrate_conditionals(np.array([0.95]))[0] < 0.05
    with pytest.raises(ValueError):
        AcceptanceCalibrator(bins=0)
