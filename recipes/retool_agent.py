"""ReTool-style Python tool agent for OpenRLHF (`--train.agent_func_path <this file>`).

OpenRLHF's MultiTurnAgentExecutor drives `AgentInstance`: after each model turn, `step`
looks for a <code>...</code> block in the turn's text. If there is one (and turns remain),
the code runs in a fresh `python3 -I` subprocess with a wall-clock limit (RETOOL_TIMEOUT_S,
default 10 s), an address-space limit (RETOOL_MEMORY_MB, default 1024 MiB, RLIMIT_AS), a
CPU-time limit and a cap on output size; its stdout/stderr come back to the model as
"<interpreter>...</interpreter>" and generation continues. Otherwise (or after
RETOOL_MAX_TURNS turns) the episode ends and the reward is the final answer's correctness.

SRT and tool output: each turn is a separate vLLM request whose prompt is the whole
conversation so far, tool output included. The SRT drafter files every turn in the tree of
the episode's prompt, as the first prompt followed by that turn's response: tool output is
never indexed, so never drafted as model output (docs/openrlhf.md).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys

import torch
from openrlhf.utils.agent import AgentInstanceBase, MultiTurnAgentExecutor

from openrlhf_srt.data.reward import extract_final_answer, math_reward

CODE_RE = re.compile(r"<code>\s*(?:```(?:python)?\s*)?(.*?)(?:```\s*)?</code>", re.DOTALL)
MAX_OUTPUT_CHARS = 2000


def _limits(memory_mb: int, cpu_s: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    return apply


def run_python(code: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> str:
    """Run code in an isolated subprocess; return its output (or the reason it stopped)."""
    try:
        p = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True,
                           check=False, timeout=timeout_s, preexec_fn=_limits(memory_mb, int(timeout_s) + 1),
                           stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    except subprocess.TimeoutExpired:
        return f"Timeout: the code ran longer than {timeout_s:g} s"
    out = p.stdout + (p.stderr if p.returncode else "")
    if p.returncode < 0:
        out += f"\nKilled by signal {-p.returncode}"
    return out[-MAX_OUTPUT_CHARS:] if len(out) > MAX_OUTPUT_CHARS else out


class AgentInstance(AgentInstanceBase):
    def __init__(self, *args, **kwargs):
        self.turns = 0
        self.max_turns = int(os.environ.get("RETOOL_MAX_TURNS", "8"))
        self.timeout_s = float(os.environ.get("RETOOL_TIMEOUT_S", "10"))
        self.memory_mb = int(os.environ.get("RETOOL_MEMORY_MB", "1024"))

    async def reset(self, states: dict, **kwargs):
        return {"observation": states["observation"]}

    async def step(self, states: dict, **kwargs):
        import asyncio

        self.turns += 1
        action = states["action_text"]
        blocks = CODE_RE.findall(action)
        if blocks and self.turns < self.max_turns:
            output = await asyncio.to_thread(run_python, blocks[-1], self.timeout_s,
                                             self.memory_mb)
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
