"""SRT's train(): OpenRLHF's own train() code with the engine and trainer classes swapped
(openrlhf_srt/openrlhf/rebind.py, train.py)."""

from __future__ import annotations

import ast
import json
from types import SimpleNamespace
from typing import ClassVar

import pytest

# ---------------------------------------------------------------- rebind on small functions


def _uses_names(x):
    from json import dumps  # a function-local import, as OpenRLHF's train() has

    return dumps(x), ast.dump(ast.Constant(1))


def test_rebind_replaces_globals_and_local_imports_only_in_the_new_function():
    from openrlhf_srt.openrlhf.rebind import looked_up_names, rebind

    assert {"ast", "json:dumps"} <= looked_up_names(_uses_names)
    fake_ast = SimpleNamespace(dump=lambda node: "fake dump", Constant=ast.Constant)
    new = rebind(_uses_names, {"ast": fake_ast}, {"json": {"dumps": lambda x: f"fake {x}"}})
    assert new(3) == ("fake 3", "fake dump")
    # the original function, its module and the real modules are untouched
    assert _uses_names(3) == ("3", ast.dump(ast.Constant(1)))
    assert json.dumps(3) == "3" and globals()["ast"] is ast


def test_rebind_refuses_names_the_function_does_not_use():
    from openrlhf_srt.openrlhf.rebind import RebindError, rebind

    with pytest.raises(RebindError, match="no longer looks up RolloutRayActor"):
        rebind(_uses_names, {"RolloutRayActor": object()})
    with pytest.raises(RebindError, match="json:loads"):
        rebind(_uses_names, imports={"json": {"loads": object()}})


# ---------------------------------------------------------------- OpenRLHF's train() itself

openrlhf = pytest.importorskip("openrlhf", reason="openrlhf 0.11.2 is installed by `make setup`")


def openrlhf_train_function(namespace: dict):
    """OpenRLHF 0.11.2's `train` compiled from its installed source into `namespace`.
    Importing openrlhf.cli.train_ppo_ray needs deepspeed and peft (GPU extra); the names it
    imports at module level are given stand-ins here, and train() calls none of the real
    ones except through them."""
    from openrlhf_srt.openrlhf.args import source_path

    path = source_path()
    tree = ast.parse(path.read_text(), filename=str(path))
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace["train"]


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return SimpleNamespace(name=name, args=args, kwargs=kwargs)
        return record


class FakeActorGroup:
    """Stand-in for OpenRLHF's RayActorGroup (DeepSpeed actors on GPUs)."""

    made: ClassVar[list] = []

    def __init__(self, nodes, gpus, actor_cls, **kw):
        self.actor_cls = actor_cls
        self.calls = []
        FakeActorGroup.made.append(self)

    def async_init_model_from_pretrained(self, *a):
        self.calls.append(("init", a))
        return []

    def async_save_model(self):
        self.calls.append(("save",))
        return []


class FakeTrainer:
    """Stand-in for the SRTPPOTrainer Ray class: records the constructor arguments."""

    started: ClassVar[list] = []

    @classmethod
    def remote(cls, *args, **kwargs):
        handle = SimpleNamespace(args=args, kwargs=kwargs, fitted=[])
        handle.get_max_steps = SimpleNamespace(remote=lambda: 7)
        handle.fit = SimpleNamespace(remote=lambda: handle.fitted.append(True))
        cls.started.append(handle)
        return handle


def test_srt_train_runs_openrlhf_train_with_srt_engines_and_trainer(monkeypatch):
    from openrlhf_srt.cli.train_ppo_ray import parse_args
    from openrlhf_srt.openrlhf import engine_group
    from openrlhf_srt.openrlhf.train import srt_train

    args, srt, _ = parse_args(["--actor.model_name_or_path", "m", "--vllm.num_engines", "2",
                               "--reward.remote_url", "reward.py",
                               "--algo.advantage.estimator", "group_norm",
                               "--rollout.n_samples_per_prompt", "4",
                               "--rollout.max_new_tokens", "333", "--srt.max_draft_tokens", "6",
                               "--data.prompt_dataset", "prompts.jsonl"])
    rec = Recorder()
    # create_srt_engines would start vLLM actors; its own wiring is tested with real engines
    # in test_openrlhf_engines.py. Here: that train() reaches it with OpenRLHF's arguments.
    monkeypatch.setattr(engine_group, "create_srt_engines", rec("engines"))
    fake_ray = SimpleNamespace(is_initialized=lambda: True, get=lambda x: x)
    namespace = {"ray": fake_ray, "os": __import__("os"), "placement_group": rec("pg"),
                 "get_strategy": lambda a: SimpleNamespace(print=lambda *_: None),
                 "RayActorGroup": FakeActorGroup, "PolicyModelActor": "policy",
                 "CriticModelActor": "critic", "ReferenceModelActor": "ref",
                 "RewardModelActor": "reward", "create_vllm_engines": rec("openrlhf engines")}
    FakeActorGroup.made.clear()
    FakeTrainer.started.clear()
    train = srt_train(srt, openrlhf_train=openrlhf_train_function(namespace),
                      trainer_class=FakeTrainer)
    train(args)

    (name, eargs, ekw), = [c for c in rec.calls if "engines" in c[0]]
    assert name == "engines"  # ours, not OpenRLHF's create_vllm_engines
    assert eargs[:3] == (2, 1, "m") and ekw["srt"] is srt
    (trainer,) = FakeTrainer.started
    assert trainer.kwargs["srt_config"] == srt.as_dict()
    assert trainer.kwargs["srt_config"]["max_draft_tokens"] == 6
    assert trainer.kwargs["max_new_tokens"] == 333 and trainer.kwargs["do_sample"] is True
    assert trainer.args[6] is not None  # the engines went to the trainer
    assert trainer.fitted == [True]
    policy = next(g for g in FakeActorGroup.made if g.actor_cls == "policy")
    assert policy.calls[0][0] == "init" and policy.calls[-1] == ("save",)
    assert "create_vllm_engines" in namespace and namespace["train"] is not train


def test_openrlhf_train_still_looks_up_what_srt_replaces():
    """Drift guard against the installed OpenRLHF's source: train() must still call
    create_vllm_engines and import PPOTrainer from openrlhf.trainer.ppo_trainer."""
    from openrlhf_srt.openrlhf.rebind import check_names, looked_up_names
    from openrlhf_srt.openrlhf.train import TRAINER_MODULE

    train = openrlhf_train_function({})
    check_names(train, {"create_vllm_engines", f"{TRAINER_MODULE}:PPOTrainer"})
    create = __import__("openrlhf.trainer.ray.vllm_engine",
                        fromlist=["create_vllm_engines"]).create_vllm_engines
    assert "RolloutRayActor" in looked_up_names(create)
