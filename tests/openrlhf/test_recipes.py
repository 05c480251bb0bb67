"""Every recipe's command line, SRT run and baseline twin, through the real OpenRLHF 0.11.2
argument parser and checks (plus our --srt.* validation); the ReTool tool sandbox and agent.

The recipes print their argv with DRY_RUN=1. No stand-ins are needed: the parse path
(OpenRLHF's parser construction and its post-parse checks) imports neither flash_attn nor
deepspeed."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
NAMES = ["dapo", "grpo", "ppo", "retool"]


def node_cache_bytes(engines: int) -> int:
    """The recipes' default --srt.cache_bytes: a quarter of this node's RAM over its
    engines, clamped to [256 MiB, 8 GiB]."""
    kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    return min(max(kib * 1024 // 4 // engines, 256 << 20), 8 << 30)


def test_cache_size_and_checkpoint_folder_follow_the_node(tmp_path):
    argv = argv_of("grpo", 1)
    assert argv[argv.index("--srt.cache_bytes") + 1] == str(node_cache_bytes(8))
    ckpt = argv[argv.index("--ckpt.path") + 1]
    assert Path(ckpt).is_absolute() and ckpt.endswith("/ckpt/grpo_qwen2.5_1.5b/checkpoints")
    env = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "SRT_CACHE_BYTES": "1G", "CKPT_DIR": "rel"}
    out = subprocess.run(["bash", str(RECIPES / "grpo_qwen2.5_1.5b.sh")], check=True,
                         capture_output=True, env=env, cwd=tmp_path).stdout.decode().split("\0")
    assert out[out.index("--srt.cache_bytes") + 1] == "1G"
    assert out[out.index("--ckpt.path") + 1] == str(tmp_path / "rel/grpo_qwen2.5_1.5b/checkpoints")


def argv_of(name: str, srt: int) -> list[str]:
    out = subprocess.run(["bash", str(RECIPES / f"{name}_qwen2.5_1.5b.sh")], check=True,
                         capture_output=True, env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1",
                                                   "SRT": str(srt)}).stdout
    return out.decode().split("\0")[:-1]


@pytest.mark.parametrize("name", NAMES)
def test_srt_recipe_parses(name):
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    argv = argv_of(name, 1)
    assert argv[1:3] == ["-m", "openrlhf_srt.cli.train_ppo_ray"]
    args, cfg, _ = parse_args(argv[3:])
    assert cfg.enable and cfg.max_draft_tokens == 8 and cfg.cache_bytes == node_cache_bytes(8)
    assert args.logger.wandb.run_name == f"{name}_qwen2.5_1.5b_srt"
    assert args.rollout.temperature == 1.0 and args.vllm.num_engines == 8
    expected = {"dapo": (16, 128, 0.0), "grpo": (5, 128, 0.001), "ppo": (1, 512, 0.001),
                "retool": (1, 512, 0.001)}[name]
    assert (args.rollout.n_samples_per_prompt, args.rollout.batch_size,
            args.algo.kl.init_coef) == expected
    if name in ("dapo", "retool"):
        assert tuple(args.actor.eps_clip_low_high) == (0.2, 0.28)
    if name in ("ppo", "retool"):
        assert args.critic.model_name_or_path == "Qwen/Qwen2.5-1.5B"
    if name == "retool":
        assert args.train.agent_func_path.endswith("retool_agent.py")
        assert args.reward.remote_url == ["agent"]


@pytest.mark.parametrize("name", NAMES)
def test_baseline_twin_parses_with_openrlhf_alone(name):
    from openrlhf_srt.cli.train_ppo_ray import parse_args

    srt_argv, base_argv = argv_of(name, 1), argv_of(name, 0)
    assert base_argv[1:3] == ["-m", "openrlhf.cli.train_ppo_ray"]
    assert not any(a.startswith("--srt.") for a in base_argv)
    args, cfg, _ = parse_args(base_argv[3:], srt=False)  # OpenRLHF's parser, no --srt.*
    assert not cfg.enable
    assert args.logger.wandb.run_name == f"{name}_qwen2.5_1.5b_baseline"
    # the twins differ only in the module, the run name and the --srt.* flags
    strip = {"--logger.wandb.run_name"}

    def core(argv):
        out, skip = [], False
        for a in argv[3:]:
            if skip:
                skip = False
                continue
            if a in strip or a.startswith("--srt."):  # each of these takes one value
                skip = True
                continue
            out.append(a)
        return out

    assert core(srt_argv) == core(base_argv)


def load_recipe_module(name):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_math_reward_func():
    m = load_recipe_module("math_reward")
    out = m.reward_func(["Q: 1+1? The answer is \\boxed{2}."], ["Q: 1+1?"],
                        ["so $1+1=\\boxed{2}$"])
    assert out["rewards"] == 1.0 and out["scores"] == 1.0
    assert m.reward_func(["Q: 1+1? \\boxed{3}"], ["Q: 1+1?"], ["2"])["rewards"] == 0.0


def test_tool_sandbox_limits():
    agent = load_recipe_module("retool_agent")
    assert agent.run_python("print(6 * 7)").strip() == "42"
    assert "ZeroDivisionError" in agent.run_python("1 / 0")
    assert agent.run_python("while True: pass", timeout_s=1.0).startswith("Timeout")
    out = agent.run_python("x = bytearray(600 << 20); print('allocated')", memory_mb=256)
    # (a traceback quotes the source line, so whole output lines are compared)
    assert "MemoryError" in out and "allocated" not in out.splitlines()
    assert len(agent.run_python("print('a' * 10**6)")) <= agent.MAX_OUTPUT_CHARS
    # what the confinement must leave working: threads, numpy, a file in its own folder
    ok = ("import threading, numpy\n"
          "t = threading.Thread(target=print, args=('thread', int(numpy.arange(4).sum())))\n"
          "t.start(); t.join(); open('notes.txt', 'w').write('x'); print('wrote')")
    assert agent.run_python(ok, timeout_s=30.0).split() == ["thread", "6", "wrote"]


FORK_PROBE = """import os
try:
    pid = os.fork()
except OSError as e:
    print("fork refused:", e)
else:
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    print("FORKED")
"""
FORK_BOMB = "import os\nwhile True:\n    os.fork()\n"


def test_tool_sandbox_refuses_new_processes():
    """A fork bomb stops at its first fork. One fork is tried first, so that the bomb only
    runs where forking is refused and cannot take down a shared machine (RLIMIT_NPROC
    would not: it is not enforced for root, and counts all of the user's processes)."""
    sandbox = load_recipe_module("tool_sandbox")
    probe = sandbox.run_python(FORK_PROBE, timeout_s=5.0)
    assert probe.strip() == "fork refused: [Errno 1] Operation not permitted", probe
    out = sandbox.run_python(FORK_BOMB, timeout_s=5.0)
    assert "PermissionError: [Errno 1] Operation not permitted" in out, out
    out = sandbox.run_python("import subprocess; subprocess.run(['true'])", timeout_s=5.0)
    assert "PermissionError" in out, out


def test_tool_sandbox_folder_is_private_and_removed():
    sandbox = load_recipe_module("tool_sandbox")
    out = sandbox.run_python("import os, tempfile\n"
                             "print(os.getcwd(), os.environ['HOME'], tempfile.gettempdir())\n"
                             "open('left.txt', 'w').write('x')", timeout_s=5.0)
    cwd, home, tmp = out.split()
    assert cwd == home == tmp and Path(cwd).name.startswith("retool-")
    assert not Path(cwd).exists()  # removed with what the code left there


def test_tool_sandbox_caps_file_size():
    """A 1 GB write stops at the file-size limit with a clear error; the trainer (this
    process) carries on and the folder is gone."""
    sandbox = load_recipe_module("tool_sandbox")
    out = sandbox.run_python("import os\nprint(os.getcwd(), flush=True)\n"
                             "with open('big', 'wb') as f:\n"
                             "    for _ in range(1024):\n"
                             "        f.write(b'0' * (1 << 20))\n", timeout_s=10.0, file_mb=16)
    assert "OSError: [Errno 27] File too large" in out, out
    assert not Path(out.split()[0]).exists()


def test_tool_sandbox_cannot_signal_the_trainer_or_gain_root_powers():
    import os

    sandbox = load_recipe_module("tool_sandbox")
    # signal 0 only checks permission: were it allowed, this test process would live on
    out = sandbox.run_python(f"import os; os.kill({os.getpid()}, 0); print('may signal')",
                             timeout_s=5.0)
    assert "PermissionError: [Errno 1] Operation not permitted" in out
    assert "may signal" not in out.splitlines()
    out = sandbox.run_python("import os; os.kill(os.getpid(), 0); print('self ok')\n"
                             "print(open('/proc/self/status').read().split('CapEff:')[1]"
                             ".split()[0])", timeout_s=5.0)
    assert out.split() == ["self", "ok", "0000000000000000"], out  # no capability, even as root


def test_tool_sandbox_cannot_write_outside_its_folder(tmp_path):
    sandbox = load_recipe_module("tool_sandbox")
    if sandbox.landlock_abi() < 1:
        pytest.skip("this kernel has no Landlock: writes outside the folder are not blocked "
                    "here (docs/reliability.md)")
    target = tmp_path / "outside.txt"
    out = sandbox.run_python(f"open({str(target)!r}, 'w').write('x')", timeout_s=5.0)
    assert "PermissionError: [Errno 13] Permission denied" in out, out
    assert not target.exists()


def test_agent_turns():
    agent = load_recipe_module("retool_agent")
    inst = agent.AgentInstance()
    obs = "Q: what is 6*7?"
    step = asyncio.run(inst.step({"observation_text": obs, "label": "42",
                                  "action_text": "Let me compute. <code>print(6*7)</code>"}))
    assert not step["done"] and "<interpreter>\n42\n</interpreter>" in step["environment_feedback"]
    step = asyncio.run(inst.step({"observation_text": obs, "label": "42",
                                  "action_text": "So the answer is \\boxed{42}."}))
    assert step["done"] and step["rewards"].item() == 1.0
    inst.turns = inst.max_turns - 1  # out of turns: code is not run, the episode ends
    step = asyncio.run(inst.step({"observation_text": obs, "label": "42",
                                  "action_text": "<code>print(1)</code>"}))
    assert step["done"] and step["rewards"].item() == 0.0
