"""StepCurve: interpolation on a hand-made grid, validation, JSON round trip."""

import json

import numpy as np
import pytest

from openrlhf_srt.drafting.cost_model import CPU_PRIOR
from openrlhf_srt.drafting.step_curve import MachineKind, StepCurve, closest_curve, step_cost_prior

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


# ------------------------------------------------------------- choosing the closest curve
MACHINES = {  # file stem -> (machine, model, source)
    "cpu-avx512bf16-smol": (MachineKind("cpu", "AMD EPYC", ("avx512_bf16",)), "SmolLM2", "vllm"),
    "cpu-amx-smol": (MachineKind("cpu", "Intel Xeon Platinum 8480+",
                                 ("amx_bf16", "avx512_bf16")), "SmolLM2", "vllm"),
    "cpu-nobf16-smol": (MachineKind("cpu", "AMD EPYC 7B13"), "SmolLM2", "vllm"),
    "h100-roofline": (MachineKind("cuda", "NVIDIA H100 80GB HBM3"), "Qwen2.5-1.5B", "roofline"),
    "h200-roofline": (MachineKind("cuda", "NVIDIA H200"), "Qwen2.5-1.5B", "roofline"),
    "h200-vllm-qwen": (MachineKind("cuda", "NVIDIA H200"), "Qwen2.5-1.5B", "vllm"),
    "h200-vllm-other": (MachineKind("cuda", "NVIDIA H200"), "Llama-3-8B", "vllm"),
}


@pytest.fixture
def curves_dir(tmp_path):
    for i, (stem, (machine, model, source)) in enumerate(MACHINES.items()):
        c = StepCurve(header={"source": source, "machine": machine.to_dict(), "model": model},
                      seqs=[1, 4, 16], draft_tokens=[0, 2], baseline=[0.01 * (i + 1)] * 3,
                      speculative=[[0.01 * (i + 1), 0.02 * (i + 1)],
                                   [0.015 * (i + 1), 0.03 * (i + 1)],
                                   [0.02 * (i + 1), 0.08 * (i + 1)]])
        c.save(tmp_path / f"{stem}.json")
    (tmp_path / "no-machine.json").write_text(  # a curve without a machine is never chosen
        json.dumps({**curve().to_json(), "header": {"source": "vllm"}}))
    return tmp_path


@pytest.mark.parametrize(("machine", "model", "chosen"), [
    (MachineKind("cpu", "AMD EPYC", ("avx512_bf16",)), None, "cpu-avx512bf16-smol"),
    # another CPU model with the same flags: still the avx512_bf16 curve
    (MachineKind("cpu", "Intel Xeon Gold 6338", ("avx512_bf16",)), None, "cpu-avx512bf16-smol"),
    (MachineKind("cpu", "Intel Xeon w9", ("amx_bf16", "avx512_bf16")), None, "cpu-amx-smol"),
    (MachineKind("cpu", "Intel Core i7", ()), None, "cpu-nobf16-smol"),
    # a measured curve beats a roofline one of the same GPU; the same model beats another
    (MachineKind("cuda", "NVIDIA H200"), "/models/Qwen2.5-1.5B", "h200-vllm-qwen"),
    (MachineKind("cuda", "NVIDIA H200"), "meta/Llama-3-8B", "h200-vllm-other"),
    (MachineKind("cuda", "NVIDIA H100 PCIe"), "Qwen2.5-1.5B", "h100-roofline"),
    # no curve of its generation: a GPU curve, never a CPU one
    (MachineKind("cuda", "NVIDIA A100-SXM4-80GB"), "Qwen2.5-1.5B", "h200-vllm-qwen"),
])
def test_closest_curve_by_machine_kind(curves_dir, machine, model, chosen):
    path, c = closest_curve(machine, model, curves_dir)
    assert path.stem == chosen
    assert MachineKind.from_dict(c.header["machine"]) == MACHINES[chosen][0]


def test_machine_kind_distance_and_names():
    epyc = MachineKind("cpu", "AMD EPYC", ("avx512_bf16",))
    assert epyc.distance(epyc) == 0
    assert epyc.distance(MachineKind("cpu", "AMD EPYC")) > epyc.distance(
        MachineKind("cpu", "Other", ("avx512_bf16",)))
    assert epyc.distance(MachineKind("cuda", "NVIDIA H200")) > 50
    assert MachineKind("cpu", "x", ("avx512_bf16", "amx_bf16")).slug() == "cpu-amxbf16-avx512bf16"
    assert MachineKind("cpu", "x").slug() == "cpu-nobf16"
    assert MachineKind("cuda", "NVIDIA H100 80GB HBM3").slug() == "h100"
    with pytest.raises(ValueError, match="device"):
        MachineKind("tpu")


def test_prior_is_the_closest_curves_hinge_or_cpu_prior_without_curves(curves_dir, tmp_path):
    machine = MachineKind("cpu", "Intel Core i7")
    prior, name = step_cost_prior(machine, None, curves_dir)
    assert name == "cpu-nobf16-smol.json"
    assert prior == StepCurve.load(curves_dir / name).to_step_cost()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert closest_curve(machine, None, empty) is None
    assert step_cost_prior(machine, None, empty) == (CPU_PRIOR, "CPU_PRIOR")


def test_packaged_curves_load_and_name_their_machine():
    from openrlhf_srt.drafting.step_curve import CURVES_DIR, packaged_curves

    files = sorted(CURVES_DIR.glob("*.json"))
    found = packaged_curves()
    assert [p for p, _ in found] == files  # every packaged file is a curve with a machine
    for _, c in found:
        c.to_step_cost()
