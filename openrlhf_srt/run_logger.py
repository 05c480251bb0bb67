"""Per-step metrics to a JSONL file, TensorBoard and Weights & Biases, with one call.

Names follow OpenRLHF's conventions: `rollout/...`, `timing/...`, `train/...`, and `srt/...`
for the speculative figures (docs/metrics.md). `metrics.jsonl` is the record of truth
(tools/compare_runs.py reads it); TensorBoard and W&B get the same numbers. W&B runs
offline unless the user is logged in (WANDB_API_KEY or a netrc entry) or WANDB_MODE is set,
so nothing is sent anywhere by default; a W&B that cannot start is reported and skipped,
never fatal.

A run that resumes at step k (`first_step=k`) first drops the rows of steps k and later from
`metrics.jsonl` (written after the checkpoint it resumes from, and about to be redone), and
TensorBoard hides its events of those steps (`purge_step`), so every step is recorded once.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


class RunLogger:
    def __init__(
        self,
        run_dir: str | Path,
        config: dict[str, Any],
        *,
        tensorboard: bool = True,
        wandb: bool = True,
        project: str = "openrlhf-srt",
        first_step: int = 0,
    ):
        """`first_step`: the step this run starts at (a resumed run: its checkpoint's next
        step); rows of that step and later already in metrics.jsonl are dropped."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / "metrics.jsonl"
        (self.run_dir / "config.json").write_text(json.dumps(config, indent=1, default=str))
        if first_step:
            _keep_rows_before(self.path, first_step)
        self._file = open(self.path, "a" if first_step else "w",  # noqa: SIM115 - closed in close()
                          encoding="utf-8")
        self._tb = self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"),
                                         purge_step=first_step or None)
            except Exception as e:  # noqa: BLE001 - tensorboard broken: keep the JSONL record
                log.warning("TensorBoard logging off: %s", e)
        if wandb:
            self._start_wandb(project, config)

    def _start_wandb(self, project: str, config: dict[str, Any]) -> None:
        try:
            import wandb

            mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
            self._wandb = wandb.init(
                project=project, name=self.run_dir.name, dir=str(self.run_dir), config=config,
                mode=mode, reinit="finish_previous",
            )
        except Exception as e:  # noqa: BLE001 - W&B is optional; never fatal
            log.warning("W&B logging off: %s", e)
            self._wandb = None

    def log(self, step: int, metrics: dict[str, float], info: dict[str, Any] | None = None) -> None:
        """One step's numbers to every sink; `info` (what is not a number, e.g. the step's
        prompts) goes to metrics.jsonl only."""
        clean = {k: float(v) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))}
        self._file.write(json.dumps({"step": step, **clean, **(info or {})}, default=str) + "\n")
        self._file.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _parse_row(line: str, where: str) -> dict:
    try:
        row = json.loads(line)
        row["step"] = int(row["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{where}: bad metrics row ({e})") from None
    return row


def _keep_rows_before(path: Path, step: int) -> None:
    """Rewrite `path` with only its rows of steps before `step`. A last line cut off by a
    kill mid-write is dropped; any other bad line is an error naming it."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            lines.pop()  # the write a kill interrupted
    kept = [line.rstrip("\n") + "\n" for n, line in enumerate(lines, start=1)
            if line.strip() and _parse_row(line, f"{path}:{n}")["step"] < step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's metrics.jsonl, in order; the last row wins for a repeated step."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run folder?")
    rows: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            row = _parse_row(line, f"{path}:{lineno}")
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]
