"""Measured engine step cost against batch shape: the curve the budget policy and the
rollout-time simulator read.

A curve is a grid: for each number of running sequences ``s`` (ascending) the wall time of
one engine step of a non-speculative engine (``baseline[s]``) and of a speculative engine in
which every running sequence verifies ``k`` draft tokens (``speculative[s, k]``, one column
per entry of ``draft_tokens``, which starts at 0: the speculative path with empty drafts).
The header says where it came from (``source``: a vLLM engine, a plain-PyTorch forward pass
standing in for one, or a roofline model), on what hardware, model, dtype and versions.
Queries between grid points interpolate linearly; beyond the grid they extend the last
segment's slope, so a batch larger than any measured one costs more, not the same.

No vLLM or torch imports: curves are JSON files (``curves/`` beside this module holds the
packaged ones) and the policy and simulator need only numpy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openrlhf_srt.drafting.cost_model import CPU_PRIOR, StepCost, fit_hinge

CURVE_FORMAT = 1
CURVE_SOURCES = ("vllm", "torch-forward", "roofline")
CURVES_DIR = Path(__file__).with_name("curves")


@dataclass(frozen=True)
class StepCurve:
    header: dict  # source (one of CURVE_SOURCES), hardware, model, dtype, versions, context...
    seqs: np.ndarray  # running sequences per step, ascending, >= 1
    draft_tokens: np.ndarray  # draft tokens per sequence, ascending, starting at 0
    baseline: np.ndarray  # seconds per step without speculation, shape (len(seqs),)
    speculative: np.ndarray  # seconds per step, shape (len(seqs), len(draft_tokens))
    extra: dict = field(default_factory=dict)  # raw samples, notes: kept, not interpreted

    def __post_init__(self):
        seqs = np.asarray(self.seqs, dtype=np.float64)
        ks = np.asarray(self.draft_tokens, dtype=np.float64)
        base = np.asarray(self.baseline, dtype=np.float64)
        spec = np.asarray(self.speculative, dtype=np.float64)
        object.__setattr__(self, "seqs", seqs)
        object.__setattr__(self, "draft_tokens", ks)
        object.__setattr__(self, "baseline", base)
        object.__setattr__(self, "speculative", spec)
        if self.header.get("source") not in CURVE_SOURCES:
            raise ValueError(f"step curve header 'source' must be one of {CURVE_SOURCES}, "
                             f"got {self.header.get('source')!r}")
        if seqs.ndim != 1 or seqs.size < 1 or seqs[0] < 1 or np.any(np.diff(seqs) <= 0):
            raise ValueError("step curve 'seqs' must be ascending and >= 1")
        if ks.ndim != 1 or ks.size < 1 or ks[0] != 0 or np.any(np.diff(ks) <= 0):
            raise ValueError("step curve 'draft_tokens' must be ascending and start at 0")
        if base.shape != seqs.shape or spec.shape != (seqs.size, ks.size):
            raise ValueError(f"step curve shapes: baseline {base.shape}, speculative "
                             f"{spec.shape} for {seqs.size} seqs x {ks.size} draft lengths")
        if not (np.all(np.isfinite(base)) and np.all(base > 0)
                and np.all(np.isfinite(spec)) and np.all(spec > 0)):
            raise ValueError("step curve seconds must be finite and > 0")

    # ------------------------------------------------------------------ queries
    def baseline_seconds(self, seqs) -> np.ndarray | float:
        """One non-speculative decoding step with `seqs` running sequences."""
        out = _interp_extend(np.asarray(seqs, dtype=np.float64), self.seqs, self.baseline)
        return out.reshape(np.shape(seqs)) if np.ndim(seqs) else float(out[0])

    def step_seconds(self, seqs, tokens) -> np.ndarray | float:
        """One speculative step with `seqs` running sequences processing `tokens` tokens in
        all (each sequence's next token plus its draft): interpolated at the mean draft
        length (tokens - seqs) / seqs."""
        s = np.asarray(seqs, dtype=np.float64)
        k = (np.asarray(tokens, dtype=np.float64) - s) / np.maximum(s, 1.0)
        if np.any(k < 0):
            raise ValueError("a step processes at least one token per running sequence")
        s_flat, k_flat = (a.ravel() for a in np.broadcast_arrays(s, k))
        columns = np.stack([_interp_extend(s_flat, self.seqs, self.speculative[:, j])
                            for j in range(self.draft_tokens.size)], axis=1)  # (n, len(ks))
        ks = self.draft_tokens
        if ks.size == 1:
            out = columns[:, 0]
        else:  # linear in k between the two bracketing columns, last slope beyond them
            j = np.clip(np.searchsorted(ks, k_flat, side="right") - 1, 0, ks.size - 2)
            rows = np.arange(k_flat.size)
            lo, hi = columns[rows, j], columns[rows, j + 1]
            out = lo + (k_flat - ks[j]) * (hi - lo) / (ks[j + 1] - ks[j])
            out = np.maximum(out, columns.min(axis=1))
        out = out.reshape(np.broadcast(s, k).shape)
        return out if np.ndim(out) else float(out)

    def to_step_cost(self) -> StepCost:
        """The hinge (cost_model.StepCost) fitted to the speculative grid: the budget policy's
        starting point before its online fit has enough steps."""
        s, k = np.meshgrid(self.seqs, self.draft_tokens, indexing="ij")
        obs = np.stack([(s * (1 + k)).ravel(), self.speculative.ravel()], axis=1)
        fitted = fit_hinge(obs)
        if fitted is None:
            raise ValueError("step curve has a single batch size: no hinge can be fitted")
        return fitted

    # ------------------------------------------------------------------ files
    def to_json(self) -> dict:
        return {"format": CURVE_FORMAT, "header": self.header, "seqs": self.seqs.tolist(),
                "draft_tokens": self.draft_tokens.tolist(), "baseline": self.baseline.tolist(),
                "speculative": self.speculative.tolist(), "extra": self.extra}

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> StepCurve:
        try:
            d = json.loads(Path(path).read_text())
            if d.get("format") != CURVE_FORMAT:
                raise ValueError(f"format {d.get('format')!r}, expected {CURVE_FORMAT}")
            return cls(header=d["header"], seqs=d["seqs"], draft_tokens=d["draft_tokens"],
                       baseline=d["baseline"], speculative=d["speculative"],
                       extra=d.get("extra", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a step curve: {e}") from e


def _interp_extend(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp inside [xp[0], xp[-1]], the end segments' slopes outside (flat for a single
    point); never below the smallest measured value."""
    x = np.atleast_1d(x)
    y = np.interp(x, xp, fp)
    if xp.size >= 2:
        lo = x < xp[0]
        hi = x > xp[-1]
        y[lo] = fp[0] + (x[lo] - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
        y[hi] = fp[-1] + (x[hi] - xp[-1]) * (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    return np.maximum(y, np.min(fp))


# ---------------------------------------------------------------------- machine kinds
DEVICES = ("cpu", "cuda")
# What a mismatch costs in closest_curve's distance; a smaller sum is a closer curve.
OTHER_DEVICE = 100.0  # a GPU curve for a CPU engine (or back) only when nothing else exists
OTHER_GPU_GENERATION = 4.0  # e.g. an A100 curve for an H200
OTHER_GPU_MODEL = 2.0  # same generation letter, another model: H100 for H200
PER_BF16_FLAG = 2.0  # per native-bf16 CPU flag (avx512_bf16, amx_bf16) one has, other lacks
OTHER_CPU_MODEL = 0.5
OTHER_MODEL = 0.25  # the curve was measured on another language model
SOURCE_PENALTY = {"vllm": 0.0, "torch-forward": 0.1, "roofline": 0.2}  # measured first


@dataclass(frozen=True)
class MachineKind:
    """What makes one engine step cost what it costs, as far as choosing a curve goes: the
    device kind, the GPU's or CPU's model name, and (CPU) the native-bf16 flags it has."""

    device: str  # "cpu" | "cuda"
    name: str = ""  # GPU name ("NVIDIA H200") or CPU model name ("AMD EPYC")
    bf16_flags: tuple[str, ...] = ()  # CPU: avx512_bf16 / amx_bf16 it has

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ValueError(f"machine device must be one of {DEVICES}, got {self.device!r}")
        object.__setattr__(self, "bf16_flags", tuple(sorted(self.bf16_flags)))

    def to_dict(self) -> dict:
        return {"device": self.device, "name": self.name, "bf16_flags": list(self.bf16_flags)}

    @classmethod
    def from_dict(cls, d: dict) -> MachineKind:
        return cls(device=d["device"], name=str(d.get("name", "")),
                   bf16_flags=tuple(d.get("bf16_flags", ())))

    def slug(self) -> str:
        """File-name part: cpu-avx512bf16, cpu-nobf16, h200, ..."""
        if self.device == "cpu":
            flags = "-".join(f.replace("_", "") for f in self.bf16_flags) or "nobf16"
            return f"cpu-{flags}"
        return _gpu_model(self.name).lower() or "cuda"

    def distance(self, other: MachineKind) -> float:
        """How unlike `other` this machine is for step cost (0: the same kind)."""
        if self.device != other.device:
            return OTHER_DEVICE
        if self.device == "cuda":
            a, b = _gpu_model(self.name), _gpu_model(other.name)
            if a == b:
                return 0.0
            return OTHER_GPU_MODEL if a[:1] == b[:1] and a[:1] else OTHER_GPU_GENERATION
        d = PER_BF16_FLAG * len(set(self.bf16_flags) ^ set(other.bf16_flags))
        return d + (0.0 if self.name.strip() == other.name.strip() else OTHER_CPU_MODEL)


def _gpu_model(name: str) -> str:
    """The model code in a GPU name: "NVIDIA H100 80GB HBM3" -> "H100"."""
    for word in name.upper().replace("NVIDIA", " ").replace("-", " ").split():
        if any(c.isdigit() for c in word) and word[:1].isalpha():
            return word
    return name.upper().strip()


def curve_distance(curve: StepCurve, machine: MachineKind, model: str | None = None) -> float:
    """Distance of a curve (its header's machine, model and source) from a machine running
    `model` (None: any model)."""
    d = MachineKind.from_dict(curve.header["machine"]).distance(machine)
    if model is not None and Path(str(curve.header.get("model", ""))).name != Path(model).name:
        d += OTHER_MODEL
    return d + SOURCE_PENALTY[curve.header["source"]]


def packaged_curves(directory: str | os.PathLike | None = None) -> list[tuple[Path, StepCurve]]:
    """Every curve file (*.json) in `directory` (default: the packaged CURVES_DIR) that
    names its machine, by file name."""
    out = []
    for path in sorted(Path(CURVES_DIR if directory is None else directory).glob("*.json")):
        curve = StepCurve.load(path)
        if "machine" in curve.header:
            out.append((path, curve))
    return out


def closest_curve(machine: MachineKind, model: str | None = None,
                  directory: str | os.PathLike | None = None) -> tuple[Path, StepCurve] | None:
    """The packaged curve closest to `machine` (ties: the first by file name); None when
    there is none."""
    curves = packaged_curves(directory)
    if not curves:
        return None
    return min(curves, key=lambda pc: curve_distance(pc[1], machine, model))


def step_cost_prior(machine: MachineKind, model: str | None = None,
                    directory: str | os.PathLike | None = None) -> tuple[StepCost, str]:
    """The budget policy's starting step cost on `machine`: the closest packaged curve's
    hinge, and the curve's file name; cost_model.CPU_PRIOR and "CPU_PRIOR" when no curve
    is packaged."""
    found = closest_curve(machine, model, directory)
    if found is None:
        return CPU_PRIOR, "CPU_PRIOR"
    path, curve = found
    return curve.to_step_cost(), path.name
