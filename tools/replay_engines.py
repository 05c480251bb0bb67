"""What adding, removing or restarting an engine costs the tree cache: a multi-engine replay.

With sticky routing (openrlhf_srt/openrlhf/routing.py) each engine's cache holds the history
of the prompts whose home it is. This replays a trace through E engines, each with its own
native cache, every prompt on its rendezvous home, and at step --change-at changes the group:

  steady            E engines throughout (the reference)
  add               an (E+1)-th engine joins, empty: the prompts it becomes home of start cold
  remove            the last engine leaves: its prompts move to their next engine, cold there
  restart           engine 0 restarts without its cache
  restart-snapshot  engine 0 restarts from a snapshot of its cache (export_state/from_state,
                    what --srt.cache_snapshot does across restarts)

Printed per scenario and step: tokens per verification step of the prompts the change moved
or reset ("moved") and of all prompts, with the share of prompts moved.

    python tools/replay_engines.py tests/reference_traces/smollm2_math_t0.6.jsonl.gz \
        --engines 4 --change-at 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from openrlhf_srt.cache import CacheConfig, TreeCache
from openrlhf_srt.openrlhf.routing import home_engine
from openrlhf_srt.replay.rounds import Round, accepted_lengths, run_batched_step
from openrlhf_srt.replay.stream import StepRecords, iter_steps

SCENARIOS = ("steady", "add", "remove", "restart", "restart-snapshot")


def engines_at(scenario: str, step: int, engines: int, change_at: int) -> int:
    if step < change_at or scenario not in ("add", "remove"):
        return engines
    return engines + 1 if scenario == "add" else engines - 1


def replay_scenario(steps: list[StepRecords], scenario: str, a: argparse.Namespace) -> dict:
    config = CacheConfig(rule=a.rule, max_depth=a.max_depth, min_prob=a.min_prob)
    caches = {e: TreeCache(config) for e in range(a.engines)}
    homes: dict[tuple[int, int], int] = {}  # (prompt key, engine count) -> home
    prompt_of: dict[int, np.ndarray] = {}
    moved_keys: set[int] = set()
    rows, next_id = [], 0
    for recs in steps:
        n_eng = engines_at(scenario, recs.step, a.engines, a.change_at)
        if recs.step == a.change_at:
            if scenario == "add":
                caches[a.engines] = TreeCache(config)
            elif scenario == "remove":
                del caches[a.engines - 1]
            elif scenario == "restart":
                caches[0] = TreeCache(config)
            elif scenario == "restart-snapshot":
                caches[0] = TreeCache.from_state(caches[0].export_state())
        keys = recs.prompt_keys.tolist()
        for i, k in enumerate(keys):
            prompt_of.setdefault(k, recs.prompt(i))

        def home(key: int, count: int) -> int:
            if (key, count) not in homes:
                homes[(key, count)] = home_engine(prompt_of[key].tolist(), count)
            return homes[(key, count)]

        engine = np.array([home(k, n_eng) for k in keys])
        if recs.step == a.change_at:
            before = np.array([home(k, a.engines) for k in keys])
            if scenario in ("add", "remove"):
                moved = engine != before
            elif scenario.startswith("restart"):
                moved = engine == 0
            else:
                moved = np.zeros(len(keys), dtype=bool)
            moved_keys = {k for k, m in zip(keys, moved.tolist()) if m}
        verify = np.zeros(len(recs), dtype=np.int64)
        produced_sum = np.zeros(len(recs), dtype=np.int64)
        for e in sorted(set(engine.tolist())):
            idx = np.flatnonzero(engine == e)
            sub = recs.select(idx)

            def decide(r: Round, sub=sub, idx=idx, verify=verify,
                       produced_sum=produced_sum) -> np.ndarray:
                acc = accepted_lengths(r.draft_tokens, r.draft_offsets, sub.responses, r.at,
                                       r.left)
                produced = np.minimum(acc + 1, r.left)
                np.add.at(verify, idx[r.running], 1)
                np.add.at(produced_sum, idx[r.running], produced)
                return produced

            run_batched_step(caches[e], sub, next_id, lambda p: np.full(p.size, a.budget),
                             a.min_prob, decide)
            next_id += len(sub)
        is_moved = np.array([k in moved_keys for k in keys])
        per_prompt = {}
        for k, v, t in zip(keys, verify.tolist(), produced_sum.tolist()):
            pv, pt = per_prompt.get(k, (0, 0))
            per_prompt[k] = (pv + v, pt + t)
        row = {"step": recs.step, "engines": n_eng, "per_prompt": per_prompt,
               "tokens_per_verify": float(produced_sum.sum() / max(verify.sum(), 1)),
               "moved_share": float(len({k for k in keys if k in moved_keys}) /
                                    max(len(set(keys)), 1))}
        if is_moved.any():
            row["moved_tokens_per_verify"] = float(produced_sum[is_moved].sum() /
                                                   max(verify[is_moved].sum(), 1))
        rows.append(row)
    return {"scenario": scenario, "steps": rows, "moved": sorted(moved_keys)}


def warm_figures(steady: dict, moved: list[int]) -> list[float | None]:
    """Tokens per verification step the moved prompts got in the steady run, per step."""
    out = []
    for r in steady["steps"]:
        v = sum(r["per_prompt"].get(k, (0, 0))[0] for k in moved)
        t = sum(r["per_prompt"].get(k, (0, 0))[1] for k in moved)
        out.append(t / v if v else None)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("trace", type=Path)
    p.add_argument("--engines", type=int, default=4)
    p.add_argument("--change-at", type=int, default=1, help="the step at which the group changes")
    p.add_argument("--scenarios", nargs="+", choices=SCENARIOS[1:], default=list(SCENARIOS[1:]))
    p.add_argument("--rule", default="merge", help="the cache's drafting rule (CacheConfig)")
    p.add_argument("--max-depth", type=int, default=24)
    p.add_argument("--budget", type=int, default=16, help="draft tokens per sequence and round")
    p.add_argument("--min-prob", type=float, default=0.1)
    p.add_argument("--prompts", type=int, default=0, help="first N prompts only (0: all)")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)
    if a.engines < 2:
        p.error("--engines must be >= 2 (remove leaves at least one)")
    if a.change_at < 1:
        p.error("--change-at must be >= 1 (the caches need a step of history first)")
    if not 1 <= a.budget <= 128:
        p.error("--budget must be in [1, 128]")
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    try:
        steps = list(iter_steps(a.trace, prompts=a.prompts))
        if a.change_at > steps[-1].step:
            raise ValueError(f"--change-at {a.change_at} is past the trace's last step "
                             f"{steps[-1].step}")
        steady = replay_scenario(steps, "steady", a)
        results = [steady if s == "steady" else replay_scenario(steps, s, a)
                   for s in a.scenarios if s != "steady"]
    except (OSError, ValueError) as e:
        print(f"replay_engines: error: {e}", file=sys.stderr)
        return 2
    print(f"{a.trace}: {a.engines} engines, the group changes at step {a.change_at}; rule "
          f"{a.rule}, depth {a.max_depth}, {a.budget} draft tokens, min prob {a.min_prob}")
    print("tokens per verification step of the prompts the change moved or reset: after the "
          "change / had they stayed warm (the steady run); then all prompts: change / steady")
    print(f"{'scenario':18} {'moved':>6}" + "".join(
        f"{'step ' + str(r['step']) + ' moved':>18}{'all':>12}" for r in steady["steps"]))
    out = []
    for res in results:
        warm = warm_figures(steady, res["moved"])
        cells = []
        for r, w, s in zip(res["steps"], warm, steady["steps"]):
            moved = r.get("moved_tokens_per_verify")
            cells.append(f"{'-' if moved is None else f'{moved:.2f} / {w:.2f}':>18}"
                         f"{r['tokens_per_verify']:>6.2f} / {s['tokens_per_verify']:.2f}")
        share = res["steps"][-1]["moved_share"] if res["moved"] else 0.0
        print(f"{res['scenario']:18} {share:6.0%}" + "".join(cells))
        out.append({"scenario": res["scenario"], "moved_prompts": len(res["moved"]),
                    "steps": [{k: v for k, v in r.items() if k != "per_prompt"} |
                              {"moved_if_warm": w} for r, w in zip(res["steps"], warm)]})
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
