"""ReTool-style Python tool agent for OpenRLHF (`--train.agent_func_path <this file>`).

OpenRLHF's MultiTurnAgentExecutor drives `AgentInstance`: after each model turn, `step`
looks for a <code>...</code> block in the turn's text. If there is one (and turns remain),
the code runs in the tool sandbox (`tool_sandbox.py` beside this file: a confined child
process in a private folder, with a wall-clock limit RETOOL_TIMEOUT_S, default 10 s, an
address-space limit RETOOL_MEMORY_MB, default 1024 MiB, a file-size limit RETOOL_FILE_MB,
default 16 MiB, a CPU-time limit, no new processes, no writes outside its folder); its
stdout/stderr (or why it stopped) come back to the model as "<interpreter>...</interpreter>"
and generation continues. Otherwise (or after RETOOL_MAX_TURNS turns) the episode ends and
the reward is the final answer's correctness.

SRT and tool output: each turn is a separate vLLM request whose prompt is the whole
conversation so far, tool output included. The SRT drafter files every turn in the tree of
the episode's prompt, as the first prompt followed by that turn's response: tool output is
never indexed, so never drafted as model output (docs/openrlhf.md).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

from openrlhf_srt.data.reward import extract_final_answer, math_reward


def _load_sandbox():
    """tool_sandbox.py beside this file (OpenRLHF loads this file by path, not as a package
    module, so a plain import would not find it)."""
    spec = importlib.util.spec_from_file_location(
        "retool_tool_sandbox", Path(__file__).with_name("tool_sandbox.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_sandbox = _load_sandbox()
run_python = _sandbox.run_python
MAX_OUTPUT_CHARS = _sandbox.MAX_OUTPUT_CHARS
CODE_RE = re.compile(r"<code>\s*(?:```(?:python)?\s*)?(.*?)(?:```\s*)?</code>", re.DOTALL)


class AgentInstance(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.turns = 0
        self.max_turns = int(os.environ.get("RETOOL_MAX_TURNS", "8"))
        self.timeout_s = float(os.environ.get("RETOOL_TIMEOUT_S", "10"))
        self.memory_mb = int(os.environ.get("RETOOL_MEMORY_MB", "1024"))
        self.file_mb = int(os.environ.get("RETOOL_FILE_MB", "16"))

    async def reset(self, states: dict, **kwargs):
        return {"observation": states["observation"]}

    async def step(self, states: dict, **kwargs):
        import asyncio

        self.turns += 1
        action = states["action_text"]
        blocks = CODE_RE.findall(action)
        if blocks and self.turns < self.max_turns:
            output = await asyncio.to_thread(run_python, blocks[-1], self.timeout_s,
                                             self.memory_mb, self.file_mb)
            return {"rewards": torch.tensor(0.0), "scores": torch.tensor(0.0), "done": False,
                    "environment_feedback": f"\n<interpreter>\n{output.strip()}\n</interpreter>\n",
                    "extra_logs": {"tool_calls": float(self.turns)}}
        label = str(states["label"])
        if "\\boxed" in label:  # a worked solution: its final answer
            label = extract_final_answer(label) or label
        reward = torch.tensor(math_reward(action, label))  # the last turn holds the answer
        return {"rewards": reward, "scores": reward, "done": True, "environment_feedback": "",
                "extra_logs": {"tool_calls": float(self.turns - 1)}}


class AgentExecutor(MultiTurnAgentExecutor):
    def __init__(self):
        super().__init__(AgentInstance)
