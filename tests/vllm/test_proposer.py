"""SRTProposer against a stand-in model runner (what vLLM's runner exposes to it), and the
worker-extension RPCs on a running SRT engine."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from openrlhf_srt.cache.keys import prompt_key
from openrlhf_srt.vllm import proposer as prop
from openrlhf_srt.vllm.drafter_config import PROPOSER_CLASS, DrafterConfig

K, MAX_LEN = 3, 32


class RecordingSource:
    """Test-only draft source: records calls, drafts `budget` copies of token 7 whose path
    probabilities halve with every token (1/2, 1/4, ...)."""

    def __init__(self, cfg=None, max_draft_tokens=K):
        self.added, self.finished, self.steps = [], [], []

    def add_sequence(self, seq_id, key, prompt, *, step, tag="rollout"):
        self.added.append((seq_id, key, list(prompt), step, tag))

    def finish_sequence(self, seq_id):
        self.finished.append(seq_id)

    def step(self, seq_ids, new_tokens, counts, budgets, min_prob=None):
        self.steps.append((list(seq_ids), list(new_tokens), list(counts), list(budgets)))
        offsets = np.concatenate([[0], np.cumsum(budgets)]).astype(np.int64)
        depth = np.arange(offsets[-1]) - np.repeat(offsets[:-1], budgets) + 1
        return SimpleNamespace(offsets=offsets, tokens=np.full(offsets[-1], 7, np.int32),
                               probs=0.5 ** depth)

    def stats(self):
        return {"sequences": len(self.added)}

    def drop_steps_before(self, step):
        self.dropped_before = step
        return 2


class FakeRunner:
    """The parts of vLLM's model runner the proposer reads (input_batch, requests)."""

    def __init__(self):
        self.tokens = np.zeros((8, MAX_LEN), np.int32)
        self.n = np.zeros(8, np.int32)
        self.input_batch = SimpleNamespace(req_ids=[], num_prompt_tokens=np.zeros(8, np.int32))
        self.requests = {}

    def add(self, rid, prompt, runahead=False, key=None):
        row = len(self.input_batch.req_ids)
        self.input_batch.req_ids.append(rid)
        self.input_batch.num_prompt_tokens[row] = len(prompt)
        self.tokens[row, : len(prompt)] = prompt
        self.n[row] = len(prompt)
        extra = {prop.RUNAHEAD_ARG: True} if runahead else {}
        if key is not None:
            extra[prop.PROMPT_KEY_ARG] = key
        self.requests[rid] = SimpleNamespace(sampling_params=SimpleNamespace(extra_args=extra))

    def sample(self, per_row):
        """Append sampled tokens per row, as bookkeeping does before vLLM calls propose."""
        for row, toks in enumerate(per_row):
            self.tokens[row, self.n[row] : self.n[row] + len(toks)] = toks
            self.n[row] += len(toks)
        return per_row

    def remove(self, rid, finished=True):
        row = self.input_batch.req_ids.index(rid)
        last = len(self.input_batch.req_ids) - 1  # vLLM condenses: the last row moves in
        for a in (self.tokens, self.n, self.input_batch.num_prompt_tokens):
            a[row] = a[last]
        self.input_batch.req_ids[row] = self.input_batch.req_ids[last]
        self.input_batch.req_ids.pop()
        if finished:
            del self.requests[rid]


def vllm_config(settings: dict | None, k: int = K):
    """The parts of vLLM's VllmConfig the proposer reads."""
    extra = {} if settings is None else DrafterConfig.from_dict(settings).engine_args()[
        "additional_config"]
    return SimpleNamespace(speculative_config=SimpleNamespace(num_speculative_tokens=k),
                           model_config=SimpleNamespace(max_model_len=MAX_LEN),
                           additional_config=extra)


@pytest.fixture
def make(monkeypatch):
    monkeypatch.setattr("openrlhf_srt.vllm.cpu_kernels.install_cpu_kernel_fixes", lambda: False)

    def build(cfg=None):
        cfg = dict(cfg or {"source": f"{__name__}:RecordingSource", "budget": "fixed"})
        p = prop.SRTProposer(vllm_config({"max_draft_tokens": K, **cfg}))
        r = FakeRunner()
        return p, r

    return build


def _propose(p, r, sampled):
    return p.propose(r.sample(sampled), r.n, r.tokens)


def test_config_is_validated_and_travels_in_the_engine_config():
    assert DrafterConfig.from_dict({"min_prob": 0.3}).min_prob == 0.3
    with pytest.raises(ValueError, match="--srt.min_porb is not a drafter setting"):
        DrafterConfig.from_dict({"min_porb": 0.3})
    with pytest.raises(ValueError, match="--srt.min_prob must be a number in"):
        DrafterConfig(min_prob=2.0)
    with pytest.raises(ValueError, match="--srt.max_depth must be an integer"):
        DrafterConfig(max_depth="32")
    cfg = DrafterConfig(max_depth=16, cache_rule="prompt", max_draft_tokens=5)
    args = cfg.engine_args({"other": 1})
    assert args["speculative_config"] == {"method": "custom_class", "model": PROPOSER_CLASS,
                                          "num_speculative_tokens": 5}
    assert args["additional_config"]["other"] == 1  # a caller's own entries are kept
    json.dumps(args["additional_config"])  # vLLM hashes it as JSON
    assert DrafterConfig.from_vllm_config(SimpleNamespace(**args)) == cfg
    assert DrafterConfig.from_vllm_config(SimpleNamespace(additional_config={})) is None


def test_proposer_takes_its_settings_from_the_engine_config(monkeypatch, caplog):
    monkeypatch.setattr("openrlhf_srt.vllm.cpu_kernels.install_cpu_kernel_fixes", lambda: False)
    p = prop.SRTProposer(vllm_config({"max_depth": 12, "cache_bytes": 1 << 20,
                                      "min_prob": 0.4, "max_draft_tokens": K}))
    assert (p.config.max_depth, p.config.min_prob) == (12, 0.4)
    assert p.stats()["cache"]["byte_budget"] == 1 << 20
    assert p.stats()["settings"]["max_depth"] == 12
    with pytest.raises(ValueError, match="max_draft_tokens 8 differs from the engine's "
                                         "num_speculative_tokens 3"):
        prop.SRTProposer(vllm_config({"max_draft_tokens": 8}))
    # an engine started without our settings: defaults, said once in the log
    p = prop.SRTProposer(vllm_config(None, k=6))
    assert p.config == DrafterConfig(max_draft_tokens=6)
    assert "no SRT settings" in caplog.text


def test_withheld_drafts_are_computed_but_never_verified(make):
    """withhold_drafts (engines that cannot verify, the vLLM 0.29 lane on CPU): the cache,
    the budget and the counters run as usual; vLLM gets no draft, nothing is accepted."""
    p, r = make({"source": f"{__name__}:RecordingSource", "budget": "fixed",
                 "withhold_drafts": True})
    p.bind(r)
    r.add("a", [1, 2, 3])
    assert _propose(p, r, [[4]]) == [[]]
    assert _propose(p, r, [[5]]) == [[]]
    s = p.stats()
    assert s["draft_tokens"] == s["withheld_draft_tokens"] == 2 * K
    assert s["verified_draft_tokens"] == s["accepted_tokens"] == 0
    assert p.source.steps[1][1] == [5]  # the sampled token still reached the cache


def test_the_tree_cache_is_a_draft_source():
    """The proposer calls every DraftSource method on its source (drop_steps_before: the
    sliding window); the native cache has each."""
    from openrlhf_srt.cache import TreeCache

    methods = [n for n in vars(prop.DraftSource) if not n.startswith("_")]
    assert "drop_steps_before" in methods
    assert [n for n in methods if not callable(getattr(TreeCache, n, None))] == []


def test_only_the_output_rank_owns_a_cache(make, monkeypatch):
    """Under tensor parallelism vLLM uses one rank's drafts: the others hold no cache (the
    byte budget is paid once) and their RPCs answer None."""
    from openrlhf_srt.vllm.engine_client import owner_result
    from openrlhf_srt.vllm.worker_extension import SRTWorkerExtension

    owner, o_runner = make()
    monkeypatch.setattr(prop, "is_cache_owner", lambda: False)
    other, r_runner = make()
    assert owner.owner and owner.source is not None
    assert not other.owner and other.source is None
    for p, r in ((owner, o_runner), (other, r_runner)):
        p.bind(r)
        r.add("a", [10, 11, 12, 13, 10, 11])
    assert _propose(owner, o_runner, [[12]]) == [[7, 7, 7]]  # RecordingSource drafts 7s
    assert _propose(other, r_runner, [[12]]) == [[]]

    def worker(p):
        w = SRTWorkerExtension()
        w.model_runner = SimpleNamespace(drafter=p)
        return w

    workers = [worker(owner), worker(other)]
    stats = [w.srt_stats() for w in workers]
    assert stats[1] is None and owner_result(stats)["settings"]["budget"] == "fixed"
    assert [w.srt_set_step(3) for w in workers] == [True, None]
    assert owner.train_step == 3
    # the sliding window: steps before 3 - 2 + 1 dropped on the owner; window 0 keeps all
    assert [w.srt_keep_window(3, 2) for w in workers] == [2, None]
    assert owner.source.dropped_before == 2
    assert [w.srt_keep_window(5, 0) for w in workers] == [0, None]
    assert owner.source.dropped_before == 2


def test_settings_survive_the_path_of_vllms_ray_executor(tmp_path):
    """vLLM's Ray executor hands workers the pickled VllmConfig and copies only some
    environment variables: the settings must arrive through the config alone. The config is
    built and pickled in one process (the driver; building it also edits the environment,
    e.g. LD_PRELOAD on CPU) and read in another that has only the variables vLLM copies."""
    import os
    import subprocess
    import sys

    cfg = DrafterConfig(max_depth=20, cache_bytes=3 << 20, min_prob=0.35, budget="fixed",
                        max_draft_tokens=6)
    pickled = tmp_path / "config.pkl"
    driver = ("import cloudpickle, json, sys; from vllm.config import VllmConfig;"
              "from vllm.ray.ray_env import get_env_vars_to_copy;"
              "c = VllmConfig(additional_config=json.loads(sys.argv[2]));"
              "open(sys.argv[1], 'wb').write(cloudpickle.dumps(c));"
              "print(json.dumps(sorted(get_env_vars_to_copy())))")
    out = subprocess.run([sys.executable, "-c", driver, str(pickled),
                          json.dumps(cfg.engine_args()["additional_config"])],
                         capture_output=True, text=True, timeout=300, check=True)
    copied = json.loads(out.stdout.strip().splitlines()[-1])
    env = {k: os.environ[k] for k in copied if k in os.environ}
    assert not any(k.startswith("OPENRLHF_SRT") for k in env)
    env.update(PATH=os.environ.get("PATH", ""), PYTHONPATH=os.pathsep.join(sys.path))
    worker = ("import pickle, sys, json; from openrlhf_srt.vllm.drafter_config import DrafterConfig;"
              "c = pickle.load(open(sys.argv[1], 'rb'));"
              "print(json.dumps(DrafterConfig.from_vllm_config(c).to_dict()))")
    out = subprocess.run([sys.executable, "-c", worker, str(pickled)], env=env,
                         capture_output=True, text=True, timeout=300, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == cfg.to_dict()


def test_unbound_proposer_drafts_nothing(make):
    p, r = make()
    r.add("a", [1, 2, 3])
    assert _propose(p, r, [[4]]) == [[]]


def test_tokens_flow_into_the_cache_and_drafts_come_back(make):
    p, r = make()
    p.bind(r)
    src = p.source
    r.add("a", [1, 2, 3])
    r.add("b", [1, 2, 3], runahead=True)
    r.add("c", [9, 9])
    assert _propose(p, r, [[4], [5], []]) == [[7] * K, [7] * K, []]  # c: prefill chunk
    keys = [a[1] for a in src.added]
    assert keys[0] == keys[1] == prompt_key([1, 2, 3]) and keys[2] == prompt_key([9, 9])
    assert [a[4] for a in src.added] == ["rollout", "runahead", "rollout"]
    _, toks, counts, budgets = src.steps[-1]
    assert toks == [4, 5] and counts == [1, 1, 0] and budgets == [K, K, 0]
    # a accepted 2 of its 3 drafts (+1 bonus), b none, c got its first token
    _propose(p, r, [[7, 7, 8], [6], [10]])
    _, toks, counts, _ = src.steps[-1]
    assert toks == [7, 7, 8, 6, 10] and counts == [3, 1, 1]
    s = p.stats()
    assert (s["verified_draft_tokens"], s["accepted_tokens"]) == (2 * K, 2)
    # the calibrator saw a's 2 accepted + 1 rejected token and b's 1 rejected token, all
    # with raw conditional probability 0.5 (path 1/2, 1/4, 1/8)
    assert p.calibrator.verified[5] == 4 and p.calibrator.accepted[5] == 2
    assert p.calibrator.verified.sum() == 4
    assert s["requests"] == 3 and s["runahead_requests"] == 1


def test_a_named_tree_key_files_later_turns_with_the_first_prompt(make):
    """A multi-turn episode's second turn (prompt = first prompt + answer + tool output)
    joins the first prompt's tree as a continuation of the first prompt: the tree never
    indexes the tool output; a later turn whose first turn this engine never saw keeps a
    tree of its own."""
    p, r = make()
    p.bind(r)
    first, turn2 = [1, 2, 3], [1, 2, 3, 4, 5, 6, 7]
    r.add("turn1", first, key=prompt_key(first))
    r.add("turn2", turn2, key=prompt_key(first))
    r.add("plain", [4, 5, 6, 7])
    r.add("orphan", [8, 9, 10], key=prompt_key([8]))
    _propose(p, r, [[8], [9], [10], [11]])
    added = [(a[1], list(a[2])) for a in p.source.added]
    assert added == [(prompt_key(first), first), (prompt_key(first), first),
                     (prompt_key([4, 5, 6, 7]), [4, 5, 6, 7]),
                     (prompt_key([8, 9, 10]), [8, 9, 10])]
    # the turn's own tokens after its (longer) prompt are what the cache receives
    _, toks, counts, _ = p.source.steps[-1]
    assert toks == [8, 9, 10, 11] and counts == [1, 1, 1, 1]


def test_finished_requests_are_finished_preempted_ones_kept(make):
    p, r = make()
    p.bind(r)
    for rid in "abc":
        r.add(rid, [1, 2])
    _propose(p, r, [[3], [3], [3]])
    seq = {rid: p._seq[rid] for rid in "abc"}
    r.remove("a")  # finished
    r.remove("b", finished=False)  # preempted: still known to the runner
    _propose(p, r, [[4]])
    assert p.source.finished == [seq["a"]]
    assert set(p._seq) == {"b", "c"}


def test_a_snapshot_records_no_gone_request_as_running_and_restores_none(make, tmp_path):
    """vLLM drops a finished request from the runner in the next engine step, which calls no
    propose when nothing else runs: a save in between finishes it first, so the snapshot
    holds only live requests as running (a preempted one is live). Restored, nothing runs:
    the window drops every sequence of earlier steps."""
    from openrlhf_srt.cache import snapshot

    tree_cache = {"budget": "fixed", "min_prob": 0.0}  # no source: the native TreeCache
    p, r = make(tree_cache)
    p.bind(r)
    for rid, prompt in (("a", [1, 2, 3]), ("b", [1, 2, 3]), ("c", [4, 5])):
        r.add(rid, prompt)
    _propose(p, r, [[4], [4], [6]])
    _propose(p, r, [[5], [6], [7]])
    seq = dict(p._seq)
    r.remove("a")  # finished: the runner no longer holds it
    r.remove("b", finished=False)  # preempted: still held
    path = tmp_path / "cache.snap"
    p.save(str(path))
    st = snapshot.read(path)
    assert dict(zip(st.seq_ids.tolist(), st.running.tolist())) == {
        seq["a"]: 0, seq["b"]: 1, seq["c"]: 1}
    assert set(p._seq) == {"b", "c"}  # the proposer's bookkeeping agrees
    q, _ = make(tree_cache)  # a restarted engine
    q.load(str(path))
    assert (q.source.stats()["running"], q.source.stats()["sequences"]) == (0, 3)
    assert q.drop_steps_before(1) == 3


def test_a_snapshot_is_restored_under_the_engines_current_settings(make, tmp_path):
    """A resume with other settings (a smaller --srt.cache_bytes to get out of an
    out-of-memory, another depth or rule) restores the snapshot's contents under the
    current ones, the least recently used prompts evicted to fit the budget."""
    from openrlhf_srt.cache import MIN_BYTE_BUDGET

    p, _ = make({"budget": "fixed", "max_depth": 16, "cache_bytes": 1 << 30})
    rng = np.random.default_rng(0)
    for i in range(40):
        p.source.add_sequence(i, 1000 + i, rng.integers(0, 500, 20), step=0)
        p.source.extend(i, rng.integers(0, 500, 300))
        p.source.finish_sequence(i)
    path = tmp_path / "cache.snap"
    p.save(str(path))
    q, _ = make({"budget": "fixed", "max_depth": 8, "cache_bytes": MIN_BYTE_BUDGET,
                 "cache_rule": "prompt", "min_prob": 0.3})
    q.load(str(path))
    assert q.source.config == q.config.cache_config()
    s = q.stats()["cache"]
    assert s["byte_budget"] == MIN_BYTE_BUDGET >= s["bytes"]
    assert 0 < s["prompts"] < 40 and s["evicted_prompts"] == 40 - s["prompts"]


def test_budget_stops_at_max_model_len_and_skipped_steps_catch_up(make):
    p, r = make()
    p.bind(r)
    r.add("a", list(range(1, MAX_LEN - 3)))  # 28 prompt tokens
    _propose(p, r, [[1]])  # 29 tokens: room for 32 - 1 - 29 = 2
    assert p.source.steps[-1][3] == [2]
    r.sample([[2, 3]])  # a step vLLM did not run the drafter for
    _propose(p, r, [[4]])
    assert p.source.steps[-1][1] == [2, 3, 4] and p.source.steps[-1][3] == [0]


def test_siblings_draft_from_each_other_with_the_tree_cache(make):
    pytest.importorskip("openrlhf_srt.cache.cache")
    p, r = make({"min_prob": 0.0})
    p.bind(r)
    r.add("a", [1, 2, 3])
    _propose(p, r, [[10]])
    for t in (11, 12, 13, 14, 15):
        _propose(p, r, [[t]])
    r.add("b", [1, 2, 3])  # a sibling: after token 10 the cache knows what a did next
    drafts = _propose(p, r, [[16], [10]])
    assert drafts[1] == [11, 12, 13]
    assert p.stats()["cache"]["prompts"] == 1


# ------------------------------------------------------------------- engine RPCs
@pytest.mark.engine
def test_worker_rpcs(srt_float32_engine, embedded_model_path, tmp_path, srt_test_settings):
    from vllm import SamplingParams

    from openrlhf_srt.vllm.engine_client import SRTEngineHandle

    llm = srt_float32_engine
    srt = SRTEngineHandle(llm)
    prompt = {"prompt_token_ids": [1, 9690, 198, 2683, 359, 253, 5356, 198]}
    before = _accepted_metric(llm)
    srt.stats(reset=True)
    llm.generate([prompt] * 4, SamplingParams(temperature=0.0, max_tokens=16), use_tqdm=False)
    run = SamplingParams(temperature=1.0, max_tokens=8, extra_args={prop.RUNAHEAD_ARG: True})
    llm.generate([prompt] * 2, run, use_tqdm=False)
    s = srt.stats()
    # the worker-side proposer holds the non-default settings the engine was started with
    # (conftest's srt_float32_engine: min_prob 0.2, budget fixed, 4 draft tokens)
    assert s["settings"] == DrafterConfig(min_prob=0.2, budget="fixed", max_draft_tokens=4,
                                          **srt_test_settings).to_dict()
    assert s["bound"] and s["requests"] == 6 and s["runahead_requests"] == 2
    assert s["accepted_tokens"] == _accepted_metric(llm) - before  # agrees with vLLM
    nodes = s["cache"]["nodes"]
    assert nodes > 0
    llm.collective_rpc("reload_weights", kwargs={"weights_path": embedded_model_path})
    assert srt.stats()["cache"]["nodes"] == nodes  # weight updates keep the cache
    path = tmp_path / "cache.snap"
    srt.save_snapshot(path)
    srt.clear()
    assert srt.stats()["cache"]["nodes"] < nodes
    srt.load_snapshot(path)
    assert srt.stats()["cache"]["nodes"] == nodes
    srt.resize(1 << 28)
    assert srt.stats()["cache"]["byte_budget"] == 1 << 28
    srt.set_step(0)  # the step every sequence so far was recorded with
    assert srt.keep_window(1, 0) == 0  # window 0 keeps every step
    before = srt.stats()["cache"]["sequences"]
    dropped = srt.keep_window(1, 1)  # the finished sequences of step 0 leave
    assert dropped > 0 and srt.stats()["cache"]["sequences"] == before - dropped
    srt.load_snapshot(path)
    llm.generate([prompt], SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)


def _accepted_metric(llm) -> int:
    return int(sum(m.value for m in llm.get_metrics()
                   if m.name == "vllm:spec_decode_num_accepted_tokens"))


def test_goodput_budget_follows_batch_size_and_cost_model(make):
    """Drafts are cut by the goodput rule: with the prior cost (40 ms + 3.6 ms per token) one
    running sequence keeps tokens whose path probability pays for their share of the step,
    a large batch keeps none of these uncertain drafts."""
    from openrlhf_srt.drafting.cost_model import StepCost

    p, r = make({"source": f"{__name__}:RecordingSource"})  # budget: goodput (default)
    assert p.budget.rule == "goodput"
    p.cost.current = StepCost(fixed=0.040, per_token=0.0036, knee=0)
    p.bind(r)
    r.add("a", [1, 2])
    one = _propose(p, r, [[3]])
    # throughput with k tokens: (1 + sum 0.5^i) / (0.040 + 0.0036 (1 + k)): best k = 3 of 3
    assert one == [[7, 7, 7]]
    for i in range(7):
        r.add(f"b{i}", [1, 2])
    many = _propose(p, r, [[4]] + [[3]] * 7)
    # 8 rows: a token of p=0.5 costs 3.6 ms against 8 tokens per 69 ms: 0.5 < 0.42? no, kept;
    # p=0.25 < 8 * 3.6 / 69 = 0.42: cut. Every row keeps exactly its first token.
    assert [len(d) for d in many] == [1] * 8
    assert p.stats()["budget_cut_tokens"] == 8 * (K - 1)


def test_step_cost_is_learned_from_propose_intervals(make, monkeypatch):
    p, r = make()
    p.bind(r)
    r.add("a", [1, 2])
    clock = iter(np.arange(0.0, 100.0, 0.05))  # every perf_counter call 50 ms later
    monkeypatch.setattr(prop.time, "perf_counter", lambda: float(next(clock)))
    for t in range(20):
        _propose(p, r, [[3 + t % 5]])
    s = p.stats()
    assert s["observed_steps"] == 19  # the first call has no previous step
    assert s["observed_step_seconds"] == pytest.approx(19 * 0.05)
    assert s["propose_seconds"] == pytest.approx(20 * 0.05)
    assert p.cost(1 + K) == pytest.approx(0.05)  # refitted: every step took 50 ms


def test_step_cost_prior_comes_from_the_closest_packaged_curve(make, monkeypatch, tmp_path,
                                                                caplog):
    """The budget policy starts from the hinge of the packaged curve closest to the engine's
    machine (and keeps fitting online); CPU_PRIOR only when no curve is packaged."""
    from openrlhf_srt.drafting.cost_model import CPU_PRIOR
    from openrlhf_srt.drafting.step_curve import MachineKind, closest_curve

    for machine in (prop.engine_machine(), MachineKind("cuda", "NVIDIA H200")):
        monkeypatch.setattr(prop, "engine_machine", lambda m=machine: m)
        with caplog.at_level("INFO", logger=prop.__name__):
            p, _ = make()
        path, curve = closest_curve(machine)
        assert p.prior_curve == path.name
        assert p.cost.prior == p.cost.current == curve.to_step_cost()
        assert path.name in caplog.text
        assert p.stats()["step_cost_prior"] == path.name
    assert MachineKind.from_dict(curve.header["machine"]).device == "cuda"
    monkeypatch.setattr("openrlhf_srt.drafting.step_curve.CURVES_DIR", tmp_path)
    p, _ = make()
    assert (p.prior_curve, p.cost.prior) == ("CPU_PRIOR", CPU_PRIOR)
