"""Run-ahead output is never a training sample: the local trainer on the embedded model with
run-ahead on (marked `engine`). The engine's requests are recorded as they are added and
stepped (the run-ahead ones by the tag the drafter files them under), and the trainer's
rollout batches as it returns them; no returned sample may be a run-ahead output."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.engine

RUNS = 3  # runs (seeds) tried until run-ahead produced output


class EngineRecorder:
    """Every request the engine is given: its prompt, whether it is tagged run-ahead
    (SamplingParams.extra_args[RUNAHEAD_ARG], what the drafter files it by) and the tokens it
    produced (DELTA outputs accumulated, cumulative ones replaced), in the order added."""

    def __init__(self, engine, monkeypatch):
        self.requests: dict[str, dict] = {}
        self._add, self._step = engine.add_request, engine.step
        monkeypatch.setattr(engine, "add_request", self.add_request)  # test-only recorder
        monkeypatch.setattr(engine, "step", self.step)

    def add_request(self, request_id, prompt, params, *args, **kwargs):
        from vllm.sampling_params import RequestOutputKind

        from openrlhf_srt.runahead import RUNAHEAD_ARG

        self.requests[request_id] = {
            "prompt": tuple(prompt["prompt_token_ids"]),
            "runahead": bool((params.extra_args or {}).get(RUNAHEAD_ARG)),
            "delta": params.output_kind == RequestOutputKind.DELTA, "tokens": ()}
        return self._add(request_id, prompt, params, *args, **kwargs)

    def step(self):
        outputs = self._step()
        for out in outputs:
            r = self.requests[out.request_id]
            tokens = tuple(out.outputs[0].token_ids)
            r["tokens"] = r["tokens"] + tokens if r["delta"] else tokens
        return outputs

    def outputs(self, runahead: bool) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """(prompt, response) of every request of one kind, in the order added."""
        return [(r["prompt"], r["tokens"]) for r in self.requests.values()
                if r["runahead"] == runahead]


def test_runahead_output_is_never_a_training_sample(tmp_path, srt_test_settings, monkeypatch,
                                                    replay_trace):
    """Also records the run's traces (--trace_dir): every rollout sample and run-ahead output,
    exactly as the engine produced them, which the reader accepts and the replay consumes."""
    from openrlhf_srt.local import trainer as trainer_module
    from openrlhf_srt.local.train_config import TrainConfig
    from openrlhf_srt.srt_config import SRTConfig

    batches = []
    generate_batch = trainer_module.generate_batch

    def recorded(*args, **kwargs):
        batch = generate_batch(*args, **kwargs)
        batches.append(batch)
        return batch

    monkeypatch.setattr(trainer_module, "generate_batch", recorded)  # test-only spy
    # run ahead as soon as one sample of a step has finished, whatever the CPU's step cost;
    # temperature 1: two samples of a prompt are as unlikely as can be to coincide. A step
    # whose samples all end in the same engine step has no bubble: another seed is tried
    # (at most RUNS) until run-ahead has produced output, without which no leak can show.
    # 64 new tokens, not 24: at T=1 this model's samples mostly hit a short cap in the
    # same engine step (no bubble: all three seeds did in a clean-clone vLLM 0.29 lane).
    srt = SRTConfig(**srt_test_settings, max_draft_tokens=4, runahead_threshold=1.0,
                    runahead_min_seconds=0.0, runahead_min_samples=1,
                    runahead_poll_seconds=0.01, runahead_prompts=2,
                    runahead_max_new_tokens=16, runahead_max_requests=4,
                    runahead_max_slowdown=float("inf"))
    for seed in range(RUNS):
        batches.clear()
        cfg = TrainConfig(run_dir=tmp_path / f"run{seed}", prompts="builtin:6", steps=3,
                          prompts_per_step=2, samples_per_prompt=2, max_new_tokens=64,
                          temperature=1.0, micro_batch_size=4, lr=1e-4, wandb=False,
                          tensorboard=False, srt=srt, seed=seed,
                          trace_dir=tmp_path / f"run{seed}" / "traces")
        trainer = trainer_module.LocalTrainer(cfg)
        try:
            engine = EngineRecorder(trainer.llm.llm_engine, monkeypatch)
            trainer.run()
        finally:
            trainer.close()
        if any(r for _, r in engine.outputs(runahead=True)):
            break
        print(f"seed {seed}: run-ahead never started (no bubble); next seed")

    runahead = {(p, r) for p, r in engine.outputs(runahead=True) if r}
    rollouts = engine.outputs(runahead=False)
    samples = [(tuple(p), tuple(r)) for b in batches for p, r in zip(b.prompt_ids,
                                                                      b.response_ids)]
    print(f"{len(runahead)} run-ahead outputs, {len(samples)} samples")
    assert len(batches) == 3 and len(samples) == 3 * 2 * 2
    assert runahead, "run-ahead produced no output: this run cannot show a leak"
    # run ahead for prompts the trainer then trained on (a leak would be possible there)
    assert {p for p, _ in runahead} & {p for p, _ in samples}
    assert [s for s in samples if s in runahead] == []  # no run-ahead output came back
    assert samples == rollouts  # each sample is its own rollout request's output, in order

    # the traces: one file per step; the rollouts in request order with their step, sample
    # index, policy version (weights pushed after each step), prompt key, label and reward
    from openrlhf_srt.cache.keys import prompt_key
    from openrlhf_srt.data.traces import read_traces, trace_files

    assert [f.name for f in trace_files(cfg.trace_dir)] == [
        f"step_{s:06d}.jsonl.gz" for s in range(3)]
    records = read_traces(cfg.trace_dir)
    traced = [r for r in records if r.tag == "rollout"]
    assert [(tuple(r.prompt_token_ids), tuple(r.response_token_ids)) for r in traced] == samples
    assert [(r.step, r.sample_index, r.policy_version) for r in traced] == [
        (s, i, s) for s in range(3) for _ in range(2) for i in range(2)]
    trained = [trainer.step_prompts[s][k] for s in range(3) for k in range(2) for _ in range(2)]
    assert [r.prompt_key for r in traced] == [prompt_key(trainer.prompt_ids(i)) for i in trained]
    assert [r.label for r in traced] == [str(trainer.pool[i]["label"]) for i in trained]
    assert [r.reward for r in traced] == [float(x) for b in batches for x in b.rewards.reshape(-1)]
    assert all(r.finish_reason in ("stop", "length") for r in traced)
    # every run-ahead request, with what it produced before it ended or was cut (abort)
    ahead = [r for r in records if r.tag == "runahead"]
    assert [(tuple(r.prompt_token_ids), tuple(r.response_token_ids)) for r in ahead] == \
        engine.outputs(runahead=True)
    assert {r.step for r in ahead} <= {0, 1, 2}
    assert all(r.policy_version == r.step for r in ahead)
    assert len({(r.step, r.prompt_key, r.sample_index) for r in records}) == len(records)
    figures = replay_trace(cfg.trace_dir)  # replays the rollouts (run-ahead: its choice)
    assert sum(len(r.response_token_ids) for r in traced) <= figures["total"]["tokens"] <= sum(
        len(r.response_token_ids) for r in records)
