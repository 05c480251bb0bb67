"""Compare training runs: the paper's table 1 layout and a plot.

    python tools/compare_runs.py runs/demo/baseline runs/demo/srt --plot runs/demo/compare.png
    python tools/compare_runs.py entity/project/run_id ...   # W&B run paths, when online

One column per run: generation time, step time and generation time per token (mean per
step, as the paper's Gen (s), Step (s), /token), tokens per verification step, reward; then
each run's generation speedup against the first run. The plot shows generation seconds per
step, tokens per verification step and reward against step, one line per run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from openrlhf_srt.run_logger import read_metrics

ROWS = [
    ("Gen (s)", "timing/generation", "{:.1f}"),
    ("Step (s)", "timing/step", "{:.1f}"),
    ("Gen ms/token", "timing/generation_per_token", "{:.2f}", 1000.0),
    ("Tokens/verify", "srt/accept_len", "{:.2f}"),
    ("Reward", "rollout/reward", "{:.3f}"),
    ("Response len", "rollout/response_length", "{:.0f}"),
]


def load_run(spec: str) -> tuple[str, list[dict]]:
    path = Path(spec)
    if path.exists():
        return path.name, read_metrics(path)
    if spec.count("/") == 2:
        return spec.split("/")[-1], _wandb_rows(spec)
    raise FileNotFoundError(f"{spec} is neither a run folder nor a W&B run path (entity/project/id)")


def _wandb_rows(path: str) -> list[dict]:
    try:
        import wandb

        run = wandb.Api().run(path)
        history = run.history(pandas=False)
    except Exception as e:
        raise RuntimeError(f"cannot read W&B run {path}: {e}") from e
    return [{"step": int(r.get("_step", i)), **r} for i, r in enumerate(history)]


def mean_of(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def generation_totals(rows: list[dict]) -> tuple[float, float]:
    """(generation seconds, generated tokens) of a whole run."""
    return (sum(r.get("timing/generation", 0.0) for r in rows),
            sum(r.get("rollout/tokens", 0.0) for r in rows))


def format_table(runs: list[tuple[str, list[dict]]]) -> str:
    width = max(14, *(len(name) + 2 for name, _ in runs))
    lines = [f"{'':<16}" + "".join(f"{name:>{width}}" for name, _ in runs)]
    for row in ROWS:
        label, key, fmt = row[:3]
        scale = row[3] if len(row) > 3 else 1.0
        cells = "".join(f"{fmt.format(mean_of(r, key) * scale):>{width}}" for _, r in runs)
        lines.append(f"{label:<16}{cells}")
    base = generation_totals(runs[0][1])[0]
    cells = "".join(f"{base / max(generation_totals(rows)[0], 1e-9):>{width - 1}.2f}x"
                    for _, rows in runs)
    lines.append(f"{'Gen speedup':<16}{cells}")
    lines.append("(means per step; speedup = total generation seconds of the first run / this run's)")
    return "\n".join(lines)


def plot(runs: list[tuple[str, list[dict]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("timing/generation", "generation (s)"), ("srt/accept_len", "tokens / verification"),
              ("rollout/reward", "reward")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (key, label) in zip(axes, panels):
        for name, rows in runs:
            pts = [(r["step"], r[key]) for r in rows if key in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=name)
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("runs", nargs="+", help="run folders (with metrics.jsonl) or W&B run paths")
    p.add_argument("--plot", type=Path, default=None, help="write the comparison PNG here")
    a = p.parse_args(argv)
    try:
        runs = [load_run(s) for s in a.runs]
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        p.error(str(e))
    print(format_table(runs))
    if a.plot:
        plot(runs, a.plot)
        print(f"plot: {a.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
