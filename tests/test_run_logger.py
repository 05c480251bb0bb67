"""Run records: RunLogger's metrics.jsonl / TensorBoard output, and tools/compare_runs.py on
two recorded runs."""

from __future__ import annotations

import json

import pytest

from openrlhf_srt.cli import compare_runs
from openrlhf_srt.run_logger import RunLogger, read_metrics


def _record(run_dir, gen_seconds, accept_len):
    logger = RunLogger(run_dir, {"name": run_dir.name}, wandb=False, tensorboard=True)
    for step, (g, a) in enumerate(zip(gen_seconds, accept_len)):
        logger.log(step, {"timing/generation": g, "timing/step": g + 10.0,
                          "timing/generation_per_token": g / 1000, "srt/accept_len": a,
                          "rollout/reward": 0.1 * step, "rollout/response_length": 150.0,
                          "not_a_number": float("nan")})
    logger.close()


def test_logger_writes_jsonl_and_tensorboard(tmp_path):
    _record(tmp_path / "a", [10.0, 12.0], [1.0, 1.0])
    rows = read_metrics(tmp_path / "a")
    assert [r["step"] for r in rows] == [0, 1]
    assert rows[1]["timing/generation"] == 12.0
    assert "not_a_number" not in rows[0]  # non-finite values are dropped, not written as NaN
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == {"name": "a"}
    assert list((tmp_path / "a" / "tensorboard").glob("events.out.tfevents.*"))


def test_a_resumed_run_records_each_step_once(tmp_path):
    """A run killed after logging step 2 but before its checkpoint resumes at step 2: the
    rows of steps 2 and later are dropped (a last row cut off mid-write too), then redone."""
    run_dir = tmp_path / "run"
    first = RunLogger(run_dir, {}, wandb=False, tensorboard=False)
    for step in range(3):
        first.log(step, {"rollout/reward": float(step)}, info={"prompts": [step, step + 1]})
    first.close()
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rollout/rew')  # the write a SIGKILL interrupted
    resumed = RunLogger(run_dir, {}, wandb=False, tensorboard=True, first_step=2)
    resumed.log(2, {"rollout/reward": 20.0}, info={"prompts": [7, 8]})
    resumed.close()
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 1, 2]
    rows = read_metrics(run_dir)
    assert [r["rollout/reward"] for r in rows] == [0.0, 1.0, 20.0]
    assert [r["prompts"] for r in rows] == [[0, 1], [1, 2], [7, 8]]  # info: JSONL only
    fresh = RunLogger(run_dir, {}, wandb=False, tensorboard=False)  # step 0: a new record
    fresh.close()
    assert (run_dir / "metrics.jsonl").read_text() == ""


def test_a_bad_row_before_the_resume_point_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{oops\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        RunLogger(tmp_path, {}, wandb=False, tensorboard=False, first_step=1)


def test_read_metrics_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)


def test_compare_runs_table_and_plot(tmp_path, capsys):
    _record(tmp_path / "baseline", [20.0, 20.0, 20.0], [1.0, 1.0, 1.0])
    _record(tmp_path / "srt", [10.0, 10.0, 10.0], [1.8, 2.0, 2.2])
    png = tmp_path / "cmp.png"
    assert compare_runs.main([str(tmp_path / "baseline"), str(tmp_path / "srt"),
                              "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "baseline" in out.splitlines()[0] and "srt" in out.splitlines()[0]
    assert lines["Gen (s)"].split()[-2:] == ["20.0", "10.0"]
    assert lines["Step (s)"].split()[-2:] == ["30.0", "20.0"]
    assert lines["Tokens/verify"].split()[-2:] == ["1.00", "2.00"]
    assert lines["Gen speedup"].split()[-2:] == ["1.00x", "2.00x"]
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_compare_runs_rejects_unknown_run(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_runs.main([str(tmp_path / "missing-run")])
    assert "neither a run folder" in capsys.readouterr().err
