"""Step-cost curve of a GPU from published figures (a roofline model, not a measurement).

    python tools/roofline_curve.py --gpu h200 --context 2048 --out openrlhf_srt/drafting/curves
    python tools/roofline_curve.py --gpu h100 --context 8192 --bandwidth-efficiency 0.6

Where no GPU is at hand, this stands in for tools/bench_step_cost.py: one engine step of a
decoder-only model (default: Qwen2.5-1.5B's shape) in bf16 with s running sequences, each
verifying k draft tokens at a context of C tokens, costs

    max(bytes / (bandwidth * bandwidth_efficiency), flops / (peak * matmul_efficiency))
        + step_overhead (+ spec_overhead on the speculative path)

bytes: every weight once; each sequence's KV cache (C tokens, all layers) once per step,
whatever its draft length (the k + 1 query tokens of a sequence share one pass over it);
the new tokens' KV written; each linear layer's input and output activations once; and the
fp32 logits of every sampled position written and read `logit_passes` times by the
sampler (the baseline samples one position per sequence, the speculative path k + 1:
vLLM's rejection sampler works on the target probabilities of every draft position and
the bonus token). flops: 2 per weight per token (the LM head included) plus attention's
4 * C * (heads * head_dim) per token and layer. Every assumption and figure, with its
source, goes into the curve's header; the defaults are labelled there as assumptions.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class GPU:
    name: str  # as torch.cuda.get_device_name() reports it (drafting.step_curve.MachineKind)
    hbm_bytes_per_s: float
    bf16_dense_flops: float
    source: str


# NVIDIA's datasheets: the dense (no sparsity) BF16 Tensor Core figure is half the
# "with sparsity" one they headline.
GPUS = {
    "h100": GPU("NVIDIA H100 80GB HBM3", 3.35e12, 989e12,
                "NVIDIA H100 Tensor Core GPU datasheet, H100 SXM: 3.35 TB/s HBM3, BF16 Tensor "
                "Core 1,979 TFLOPS with sparsity (989 dense)"),
    "h200": GPU("NVIDIA H200", 4.8e12, 989e12,
                "NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: 141 GB HBM3e at 4.8 TB/s, "
                "BF16 Tensor Core 1,979 TFLOPS with sparsity (989 dense, as H100 SXM)"),
}


@dataclass(frozen=True)
class ModelShape:
    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    bytes_per_param: int = 2  # bf16
    source: str = ""

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        kv = self.kv_heads * self.head_dim
        return self.layers * (2 * self.hidden * self.hidden + 2 * self.hidden * kv
                              + 3 * self.hidden * self.intermediate)

    @property
    def matmul_params(self) -> int:
        """Weights every token multiplies: the layers and the LM head (tied to the
        embedding in Qwen2.5-1.5B; the embedding lookup itself reads one row a token)."""
        return self.layer_params + self.vocab * self.hidden

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.kv_heads * self.head_dim * self.bytes_per_param

    @property
    def activation_bytes_per_token(self) -> int:
        """Each linear layer's input and output once: qkv in/out, o in/out, gate+up in/out,
        down in/out, in bf16."""
        kv = self.kv_heads * self.head_dim
        per_layer = (self.hidden + (self.hidden + 2 * kv) + 2 * self.hidden
                     + self.hidden + 2 * self.intermediate + self.intermediate + self.hidden)
        return self.layers * per_layer * self.bytes_per_param


QWEN25_15B = ModelShape("Qwen2.5-1.5B", hidden=1536, layers=28, heads=12, kv_heads=2,
                        intermediate=8960, vocab=151936,
                        source="Qwen/Qwen2.5-1.5B config.json: hidden_size 1536, "
                               "num_hidden_layers 28, num_attention_heads 12, "
                               "num_key_value_heads 2, intermediate_size 8960, vocab_size "
                               "151936, tie_word_embeddings true, torch_dtype bfloat16")


@dataclass(frozen=True)
class Assumptions:
    bandwidth_efficiency: float = 0.7  # share of datasheet HBM bandwidth a decode step gets
    matmul_efficiency: float = 0.6  # share of dense bf16 peak the matmuls and attention get
    step_overhead_s: float = 0.003  # scheduling, input preparation, launches, sampling setup
    spec_overhead_s: float = 0.001  # speculative path: spec metadata, rejection sampler, propose
    logit_passes: int = 3  # fp32 logits written once and read twice (softmax, sampling)


def step_seconds(gpu: GPU, m: ModelShape, a: Assumptions, seqs, draft_tokens: int,
                 context: int, speculative: bool):
    """Seconds of one engine step (numpy-vectorised over `seqs`)."""
    import numpy as np

    s = np.asarray(seqs, dtype=np.float64)
    tokens = s * (1 + draft_tokens)
    sampled = tokens if speculative else s
    nbytes = (m.matmul_params * m.bytes_per_param
              + s * context * m.kv_bytes_per_token
              + tokens * (m.kv_bytes_per_token + m.activation_bytes_per_token)
              + sampled * m.vocab * 4 * a.logit_passes)
    flops = tokens * (2 * m.matmul_params + m.layers * 4 * context * m.hidden)
    t = np.maximum(nbytes / (gpu.hbm_bytes_per_s * a.bandwidth_efficiency),
                   flops / (gpu.bf16_dense_flops * a.matmul_efficiency))
    return t + a.step_overhead_s + (a.spec_overhead_s if speculative else 0.0)


def build(gpu_key: str, context: int, seqs, ks, a: Assumptions, command: str,
          model: ModelShape = QWEN25_15B):
    import numpy as np

    from openrlhf_srt.drafting.step_curve import MachineKind, StepCurve

    gpu = GPUS[gpu_key]
    baseline = step_seconds(gpu, model, a, seqs, 0, context, speculative=False)
    spec = np.stack([step_seconds(gpu, model, a, seqs, k, context, speculative=True)
                     for k in ks], axis=1)
    header = {
        "source": "roofline",
        "machine": MachineKind("cuda", gpu.name).to_dict(),
        "hardware": {"gpu": gpu.name, "hbm_bytes_per_s": gpu.hbm_bytes_per_s,
                     "bf16_dense_flops": gpu.bf16_dense_flops, "figures_from": gpu.source},
        "model": model.name,
        "model_shape": asdict(model),
        "dtype": "bfloat16",
        "versions": {},
        "context_tokens": context,
        "assumptions": asdict(a),
        "formula": "max(bytes / (bandwidth * bandwidth_efficiency), flops / (peak * "
                   "matmul_efficiency)) + step_overhead_s (+ spec_overhead_s speculative); "
                   "bytes: weights once, KV cache of every sequence at context_tokens once, "
                   "new KV and linear-layer activations per token, fp32 logits of sampled "
                   "positions x logit_passes (baseline: 1 per sequence, speculative: k + 1); "
                   "flops: 2 x matmul params + 4 x context x hidden x layers per token",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "notes": "a model from published figures and labelled assumptions, not a measurement",
    }
    extra = {"weights_bytes": model.matmul_params * model.bytes_per_param,
             "kv_bytes_per_token": model.kv_bytes_per_token,
             "activation_bytes_per_token": model.activation_bytes_per_token}
    return StepCurve(header=header, seqs=list(seqs), draft_tokens=list(ks), baseline=baseline,
                     speculative=spec, extra=extra)


def parse_args(argv=None) -> argparse.Namespace:
    defaults = Assumptions()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--gpu", choices=sorted(GPUS), default="h200")
    p.add_argument("--context", type=int, default=2048, help="context tokens per sequence")
    p.add_argument("--seqs", nargs="+", type=int, default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    p.add_argument("--draft-tokens", nargs="+", type=int,
                   default=[0, 1, 2, 3, 4, 6, 8, 12, 15])
    for name in ("bandwidth_efficiency", "matmul_efficiency", "step_overhead_s",
                 "spec_overhead_s"):
        p.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    p.add_argument("--logit-passes", type=int, default=defaults.logit_passes)
    p.add_argument("--out", type=Path, default=Path("runs/roofline"))
    p.add_argument("--plot", action="store_true", help="also write a PNG beside the JSON")
    a = p.parse_args(argv)
    if not 1 <= a.context <= 1 << 20:
        p.error("--context must be in [1, 1048576]")
    for name in ("bandwidth_efficiency", "matmul_efficiency"):
        if not 0 < getattr(a, name) <= 1:
            p.error(f"--{name.replace('_', '-')} must be in (0, 1]")
    for name in ("step_overhead_s", "spec_overhead_s"):
        if not getattr(a, name) >= 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if a.logit_passes < 0:
        p.error("--logit-passes must be >= 0")
    if a.seqs != sorted(set(a.seqs)) or a.seqs[0] < 1:
        p.error("--seqs must be ascending, distinct and >= 1")
    if a.draft_tokens != sorted(set(a.draft_tokens)) or a.draft_tokens[0] != 0:
        p.error("--draft-tokens must be ascending, distinct and start at 0")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    assumptions = Assumptions(a.bandwidth_efficiency, a.matmul_efficiency, a.step_overhead_s,
                              a.spec_overhead_s, a.logit_passes)
    command = shlex.join(["python", "tools/roofline_curve.py",
                          *(argv if argv is not None else sys.argv[1:])])
    curve = build(a.gpu, a.context, a.seqs, a.draft_tokens, assumptions, command)
    a.out.mkdir(parents=True, exist_ok=True)
    ctx = f"{a.context // 1024}k" if a.context % 1024 == 0 else str(a.context)
    stem = f"{a.gpu}-qwen25-15b-ctx{ctx}-roofline"
    curve.save(a.out / f"{stem}.json")
    print(f"{a.gpu} {QWEN25_15B.name} context {a.context}: ms per step")
    from bench_step_cost import plot, print_table

    print_table(curve)
    if a.plot:
        plot(curve, a.out / f"{stem}.png")
    print(f"wrote {a.out / (stem + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
