"""Write a seeded synthetic rollout trace (docs/traces.md) shaped like an RL run, to measure
the replay at scale (docs/replay.md, "Replay at scale").

    python tools/make_synthetic_trace.py --out /tmp/synthetic_50m.jsonl.gz

Shape: ``--steps`` training steps x ``--prompts`` prompts x ``--samples`` samples per prompt
(default 18 x 128 x 16, the paper's DAPO batch). Response lengths are long-tailed as in RL
rollouts: lognormal (median ``--median``, shape ``--sigma``) capped at ``--max-tokens``, so
many are short and a few hit the cap (finish_reason "length"; the others end with EOS,
"stop"). Content has the repetition a rollout cache exploits:

- every prompt has a latent "solution" stream of ``--max-tokens`` tokens (Zipf-distributed
  ids, with phrases from a bank of ``--phrases`` global phrases spliced in, shared across
  prompts); the latent drifts a little every step (``--drift`` of its tokens replaced), as
  the policy changes;
- a sample copies its prompt's latent in segments (mean ``--segment`` tokens); between
  segments it jumps a few tokens back or forward (``--jump``) or inserts a global phrase or
  a few fresh tokens (a branch), and ``--mutation`` of its tokens are replaced at random.

Everything is numpy-vectorised per prompt; the default 50M+ tokens take a few minutes
(mostly JSON and gzip), with a progress bar.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from openrlhf_srt.cache.keys import prompt_key

EOS = 151643  # Qwen2.5's <|endoftext|>: a realistic id, any id works


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--out", type=Path, required=True, help="output .jsonl or .jsonl.gz")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--prompts", type=int, default=128)
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=8192, help="response length cap")
    p.add_argument("--median", type=float, default=1000.0, help="median response length")
    p.add_argument("--sigma", type=float, default=1.0, help="lognormal shape of lengths")
    p.add_argument("--vocab", type=int, default=151643, help="token ids below this")
    p.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of token ids")
    p.add_argument("--phrases", type=int, default=2000, help="global phrase bank size")
    p.add_argument("--segment", type=float, default=40.0, help="mean copied segment length")
    p.add_argument("--jump", type=int, default=8, help="latent jump between segments, +-")
    p.add_argument("--branch", type=float, default=0.3,
                   help="chance a segment boundary inserts a phrase or fresh tokens")
    p.add_argument("--mutation", type=float, default=0.05, help="tokens replaced at random")
    p.add_argument("--drift", type=float, default=0.01, help="latent tokens replaced per step")
    a = p.parse_args(argv)
    positive = ("steps", "prompts", "samples", "max_tokens", "median", "sigma", "vocab",
                "phrases", "segment")
    for name in positive:
        if not getattr(a, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(a, name)}")
    for name in ("branch", "mutation", "drift"):
        if not 0.0 <= getattr(a, name) <= 1.0:
            p.error(f"--{name} must be in [0, 1], got {getattr(a, name)}")
    if a.zipf <= 1.0:
        p.error(f"--zipf must be > 1, got {a.zipf}")
    if a.jump < 0:
        p.error(f"--jump must be >= 0, got {a.jump}")
    if a.vocab > EOS:
        p.error(f"--vocab must be <= {EOS}: ids below it are content, {EOS} is the EOS")
    return a


class Generator:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.rng = np.random.default_rng(a.seed)
        rng = self.rng
        lens = rng.integers(4, 21, size=a.phrases)
        self.phrase_offsets = np.concatenate([[0], np.cumsum(lens)])
        self.phrase_tokens = self.tokens(int(lens.sum()))
        system = self.tokens(32)  # a shared chat-template head
        self.prompts = [np.concatenate([system, self.tokens(int(rng.integers(48, 480)))])
                        .astype(np.int32) for _ in range(a.prompts)]
        self.keys = [prompt_key(p) for p in self.prompts]
        self.latents = [self.latent() for _ in range(a.prompts)]

    def tokens(self, n: int) -> np.ndarray:
        return ((self.rng.zipf(self.a.zipf, size=n) - 1) % self.a.vocab).astype(np.int32)

    def phrase_stream(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` random phrases: their tokens concatenated and their lengths."""
        idx = self.rng.integers(0, self.a.phrases, size=count)
        lens = self.phrase_offsets[idx + 1] - self.phrase_offsets[idx]
        before = np.cumsum(lens) - lens
        flat = np.repeat(self.phrase_offsets[idx] - before, lens) + np.arange(int(lens.sum()))
        return self.phrase_tokens[flat], lens

    def latent(self) -> np.ndarray:
        """max_tokens tokens: fresh tokens and global phrases, alternating."""
        n = self.a.max_tokens
        parts, total = [], 0
        while total < n:
            k = max(1, n // 40)
            phrases, plens = self.phrase_stream(k)
            fresh_lens = self.rng.integers(5, 40, size=k)
            fresh = self.tokens(int(fresh_lens.sum()))
            # interleave: fresh run i, then phrase i
            seg_lens = np.stack([fresh_lens, plens], axis=1).ravel()
            src = np.concatenate([fresh, phrases])
            starts = np.stack([np.cumsum(fresh_lens) - fresh_lens,
                               fresh.size + np.cumsum(plens) - plens], axis=1).ravel()
            before = np.cumsum(seg_lens) - seg_lens
            flat = np.repeat(starts - before, seg_lens) + np.arange(int(seg_lens.sum()))
            parts.append(src[flat])
            total += int(seg_lens.sum())
        return np.concatenate(parts)[:n].astype(np.int32)

    def drift(self) -> None:
        for lat in self.latents:
            hit = self.rng.random(lat.size) < self.a.drift
            lat[hit] = self.tokens(int(hit.sum()))

    def lengths(self, n: int) -> np.ndarray:
        a = self.a
        raw = self.rng.lognormal(np.log(a.median), a.sigma, size=n)
        return np.clip(np.round(raw), 1, a.max_tokens).astype(np.int64)

    def response(self, latent: np.ndarray, length: int) -> np.ndarray:
        """A sample of ``length`` tokens copying ``latent`` in segments with jumps, branches
        and mutations (vectorised: one numpy pass per piece kind)."""
        a, rng = self.a, self.rng
        nseg = max(1, int(length / a.segment * 1.3) + 2)
        seg = rng.geometric(1.0 / a.segment, size=nseg)
        jumps = rng.integers(-a.jump, a.jump + 1, size=nseg)
        jumps[0] = 0
        # latent start of each segment: previous start + previous length + jump
        starts = np.cumsum(np.concatenate([[0], seg[:-1]]) + jumps)
        starts = np.clip(starts, 0, latent.size - 1)
        seg = np.minimum(seg, latent.size - starts)
        before = np.cumsum(seg) - seg
        copied = latent[np.repeat(starts - before, seg) + np.arange(int(seg.sum()))]
        # branches after some segments: a global phrase or 1-6 fresh tokens
        branch = rng.random(nseg) < a.branch
        nb = int(branch.sum())
        phrases, plens = self.phrase_stream(nb)
        use_fresh = rng.random(nb) < 0.5
        fresh_lens = rng.integers(1, 7, size=nb)
        ins_lens = np.where(use_fresh, fresh_lens, plens)
        fresh = self.tokens(int(fresh_lens[use_fresh].sum()))
        # insertion tokens, in branch order: phrase i or fresh run i
        p_before = np.cumsum(plens) - plens
        f_lens = np.where(use_fresh, fresh_lens, 0)
        f_before = np.cumsum(f_lens) - f_lens
        src = np.concatenate([phrases, fresh])
        src_starts = np.where(use_fresh, phrases.size + f_before, p_before)
        i_before = np.cumsum(ins_lens) - ins_lens
        inserts = src[np.repeat(src_starts - i_before, ins_lens) + np.arange(int(ins_lens.sum()))]
        # interleave copied segments and insertions: piece 2i = segment i, 2i+1 = insertion
        piece_lens = np.zeros(2 * nseg, dtype=np.int64)
        piece_lens[0::2] = seg
        piece_lens[1::2][branch] = ins_lens
        piece_src = np.zeros(2 * nseg, dtype=np.int64)
        piece_src[0::2] = before
        piece_src[1::2][branch] = copied.size + i_before
        both = np.concatenate([copied, inserts])
        p_start = np.cumsum(piece_lens) - piece_lens
        out = both[np.repeat(piece_src - p_start, piece_lens) + np.arange(int(piece_lens.sum()))]
        if out.size < length:  # ran past the latent's end: pad with fresh tokens
            out = np.concatenate([out, self.tokens(length - out.size)])
        out = out[:length].copy()
        hit = rng.random(length) < a.mutation
        out[hit] = self.tokens(int(hit.sum()))
        return out


def main(argv=None) -> int:
    a = parse_args(argv)
    gen = Generator(a)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    per_step = a.prompts * a.samples
    gz = a.out.name.lower().endswith(".gz")
    tokens = capped = 0
    bar = tqdm(total=a.steps * per_step, desc="synthetic trace", unit="resp", file=sys.stderr)
    with (gzip.open(a.out, "wt", encoding="utf-8", compresslevel=1) if gz
          else open(a.out, "w", encoding="utf-8")) as f:
        for step in range(a.steps):
            if step:
                gen.drift()
            lengths = gen.lengths(per_step).reshape(a.prompts, a.samples)
            for p in range(a.prompts):
                head = (f'{{"step":{step},"prompt_key":{gen.keys[p]},"prompt_token_ids":'
                        f'{json.dumps(gen.prompts[p].tolist(), separators=(",", ":"))},')
                lines = []
                for s in range(a.samples):
                    n = int(lengths[p, s])
                    hit_cap = n >= a.max_tokens
                    resp = gen.response(gen.latents[p], n if hit_cap else n - 1)
                    ids = resp.tolist() if hit_cap else [*resp.tolist(), EOS]
                    lines.append(f'{head}"sample_index":{s},"response_token_ids":'
                                 f'[{",".join(map(str, ids))}],"finish_reason":'
                                 f'"{"length" if hit_cap else "stop"}","policy_version":{step}}}\n')
                    tokens += n
                    capped += hit_cap
                f.write("".join(lines))
                bar.update(a.samples)
    bar.close()
    meta = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "responses": a.steps * per_step, "tokens": tokens, "capped": capped}
    Path(str(a.out) + ".meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{a.out}: {a.steps} steps x {a.prompts} prompts x {a.samples} samples, "
          f"{tokens} response tokens ({tokens / (a.steps * per_step):.0f} per response, "
          f"{capped} at the {a.max_tokens}-token cap)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
