"""StepCurve: interpolation on a hand-made grid, validation, JSON round trip."""

import numpy as np
import pytest

from openrlhf_srt.drafting.step_curve import StepCurve

GRID = dict(seqs=[1, 4, 16], draft_tokens=[0, 2, 4], baseline=[0.04, 0.05, 0.09],
            speculative=[[0.05, 0.06, 0.07], [0.06, 0.08, 0.10], [0.10, 0.15, 0.20]])


def curve(**changes):
    return StepCurve(header={"source": "vllm"}, **{**GRID, **changes})


def test_grid_points_and_linear_interpolation():
    c = curve()
    assert c.step_seconds(4, 4 * 3) == pytest.approx(0.08)  # on the grid: 4 seqs, k = 2
    # 2 seqs (1/3 of the way from 1 to 4), k = 1 (half way from 0 to 2)
    assert c.step_seconds(2, 4) == pytest.approx((0.05 + 0.01 / 3 + 0.06 + 0.02 / 3) / 2)
    assert c.baseline_seconds(2) == pytest.approx(0.04 + 0.01 / 3)
    got = c.step_seconds(np.array([1, 16]), np.array([1, 16 * 5]))
    np.testing.assert_allclose(got, [0.05, 0.20])


def test_beyond_the_grid_the_last_slope_continues():
    c = curve()
    assert c.baseline_seconds(32) == pytest.approx(0.09 + 16 * (0.04 / 12))
    assert c.step_seconds(16, 16 * 7) == pytest.approx(0.20 + 2 * 0.025)  # k = 6
    assert c.step_seconds(0.5, 0.5) >= 0.05  # never below the cheapest measured step


def test_invalid_curves_are_refused():
    with pytest.raises(ValueError, match="source"):
        StepCurve(header={}, **GRID)
    with pytest.raises(ValueError, match="start at 0"):
        curve(draft_tokens=[1, 2, 4])
    with pytest.raises(ValueError, match="shapes"):
        curve(baseline=[0.04, 0.05])
    with pytest.raises(ValueError, match="> 0"):
        curve(baseline=[0.04, 0.0, 0.09])
    with pytest.raises(ValueError, match="at least one token"):
        curve().step_seconds(4, 3)


def test_json_round_trip_and_bad_file(tmp_path):
    c = curve()
    c.save(tmp_path / "c.json")
    back = StepCurve.load(tmp_path / "c.json")
    np.testing.assert_array_equal(back.speculative, c.speculative)
    assert back.header == c.header
    (tmp_path / "bad.json").write_text('{"format": 1}')
    with pytest.raises(ValueError, match="bad.json: not a step curve"):
        StepCurve.load(tmp_path / "bad.json")


def test_hinge_prior_fitted_from_the_grid_tracks_it():
    cost = curve().to_step_cost()
    assert cost(16 * 5) == pytest.approx(0.20, rel=0.25)
    assert cost(1) == pytest.approx(0.05, rel=0.25)
