"""Continual learning on codes: Split-MNIST, 4 strategies × 2 scenarios × 3 seeds, per encoder,
under a plan committed before it runs (`benchmarks/plans/continual.json`).

Every run is `hybnn continual ... --json` (so every number comes from a command anyone can rerun),
with `--resume` so an interrupted study continues where it stopped, two runs at a time with one
thread each (a 2-core machine).

1. Tuning, sealed: every candidate of the plan (settings against the pull toward the newest
   classes: logit adjustment, fine-tuning, weight aligning, nearest-mean read-out, weight
   averaging, distillation, replay ratio, learning rate, bit flips, width) runs on the plan's
   tuning encoder with `HYBNN_SEAL_TEST=1`, so it cannot read the test split; its record holds
   validation only (checked). The plan's rule and tie-break choose per group (`sealed.choose`).
2. The study: for each encoder (`--codes name=path`), none / replay / generative / joint in the
   class and task scenarios, the plan's seeds, with the chosen settings. Only these runs read the
   test split, once each, in folders of their own (no tuning checkpoint is reused).
Writes `benchmarks/results/continual.json` (provenance header, the plan's SHA-256; each run with
the commit, machine load and times it ran at) after every run, and the figure
`benchmarks/results/continual.png`. A rerun adds only what is missing, and refuses a result file
made under another version of the plan.

Usage: python benchmarks/continual.py --codes mnist=runs/enc/codes-mnist.h5
       --codes fashion=runs/enc/codes-fashion-on-mnist.h5
       [--plan benchmarks/plans/continual.json] [--work runs/continual-study] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hybnn_cli.continual import HEADLINE
from hybnn_cli.continual.sequence import ContinualConfig
from hybnn_cli.sealed import assert_no_test, check_same_plan, choose, load_plan, sealed_env
from hybnn_cli.study.continual_runs import plot_curves
from hybnn_cli.study.provenance import git_state, now_utc, read_result, write_result

FORMAT = "hybnn-continual-benchmark"
VERSION = 3  # 3: tuning sealed under a committed plan (the plan's record in the file)

# quoted from van de Ven & Tolias 2019, "Three scenarios for continual learning" (arXiv:1904.07734),
# split MNIST, MLP on pixels: (accuracy %, checked). `checked`: the figure was compared with a
# verbatim excerpt of the paper's v1 results table (EWC, DGR and iCaRL rows); the other figures
# could not be checked against the paper here and are marked unverified wherever they are shown.
ANCHORS = {
    "class": {"none (fine-tuning)": (19.90, False), "EWC": (20.01, True), "LwF": (23.85, False),
              "DGR (deep generative replay)": (90.79, True),
              "iCaRL (2,000 images, 1.5 MB)": (94.57, True),
              "joint (offline upper bound)": (97.94, False)},
    "task": {"none (fine-tuning)": (87.19, False), "EWC": (98.64, True), "LwF": (99.57, False),
             "DGR": (99.50, True), "joint (offline upper bound)": (99.66, False)},
}
ANCHOR_SOURCE = ("van de Ven & Tolias 2019, arXiv:1904.07734, results table (split MNIST, MLP on "
                 "pixels; quoted, not measured here)")


def scenario_of(group: str) -> str:
    """The scenario of a tuning group: "task/replay" is the task scenario, "replay" the class."""
    return group.split("/")[0] if "/" in group else "class"


def hidden_of(cmd: list[str]) -> int:
    """The hidden width a command trains (the last --hidden given counts)."""
    widths = [int(cmd[i + 1]) for i, a in enumerate(cmd) if a == "--hidden"]
    return widths[-1] if widths else ContinualConfig.hidden


def with_seed(cmd: list[str], seed: str) -> list[str]:
    """The command with --seeds replaced by one seed."""
    i = cmd.index("--seeds")
    return [*cmd[:i + 1], seed, *cmd[i + 2:]]


def child_cpu_seconds() -> float:
    """User + system CPU seconds of the finished `hybnn` runs this script started."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime



def hybnn(args: list[str], env: dict) -> tuple[dict, dict]:
    """Run `hybnn args` (ends in --json): its JSON answer and the run's own record (commit, dirty
    flag, load average and times when it ran)."""
    exe = str(Path(sys.executable).parent / "hybnn")
    made = {**git_state(), "started": now_utc(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): hybnn {shlex.join(args)}\n{proc.stderr[-2000:]}")
    made.update(ended=now_utc(), wall_seconds=round(time.perf_counter() - t0, 1))
    return json.loads(proc.stdout), made


def brief(res: dict, cmd: list[str], made: dict) -> dict:
    """What the study keeps of one `hybnn continual --json` answer (test only where read)."""
    keep = [k for k in ("config", "encoder_sha256", "memory_bytes", "train_seconds", "val",
                        "test") if k in res]
    per_run = [k for k in ("seed", "val", "test", "train_seconds", "memory_bytes")
               if k in res["runs"][0]]
    return {**{k: res[k] for k in keep}, "command": "hybnn " + shlex.join(cmd), "made": made,
            "runs": [{k: r[k] for k in per_run} for r in res["runs"]]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", action="append", required=True,
                   help="name=path of a codes file of MNIST (repeat per encoder); the plan's "
                   "tuning_encoder names the one settings are tuned on")
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/continual.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft)")
    p.add_argument("--work", type=Path, default=Path("runs/continual-study"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/continual.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/continual.png"))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--note", action="append", default=[],
                   help="name=text: a note on an encoder, kept with its results")
    args = p.parse_args(argv)
    plan = load_plan(args.plan, draft=args.draft)
    pb = plan.body
    encoders = dict(c.split("=", 1) for c in args.codes)
    if pb["tuning_encoder"] not in encoders:
        sys.exit(f"the plan tunes on the {pb['tuning_encoder']!r} encoder: give --codes "
                 f"{pb['tuning_encoder']}=PATH")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    old = read_result(args.out, FORMAT) if args.out.is_file() else {}
    if old.get("format_version") != VERSION:
        old = {}
    check_same_plan(old, plan, str(args.out))
    common = list(pb["common"])
    seeds = ",".join(map(str, pb["seeds"]))
    body = {"plan": plan.record(), "seeds": pb["seeds"], "common": common,
            "epochs_per_task": int(common[common.index("--epochs-per-task") + 1]),
            "anchors": {sc: {name: {"accuracy": acc, "checked": ok}
                             for name, (acc, ok) in rows.items()}
                        for sc, rows in ANCHORS.items()},
            "anchor_source": ANCHOR_SOURCE,
            "encoders": {n: {"codes": c} for n, c in encoders.items()},
            "tuning": old.get("tuning", {}), "runs": old.get("runs", {})}
    for name, rec in old.get("encoders", {}).items():
        if name in encoders:
            body["encoders"][name] = {**rec, "codes": encoders[name]}
    for note in args.note:
        name, text = note.split("=", 1)
        body["encoders"][name]["note"] = text
    argv_rec = ["python", "benchmarks/continual.py", *(argv if argv is not None else sys.argv[1:])]

    def save() -> None:
        write_result(args.out, FORMAT, VERSION, body, argv=argv_rec)

    def done(key: str, cmd: list[str], store: dict) -> bool:
        """Done by an earlier, interrupted study with the same command."""
        return store.get(key, {}).get("command") == "hybnn " + shlex.join(cmd)

    # 1. tuning, sealed: the plan's candidates on the tuning encoder
    tune_enc = pb["tuning_encoder"]
    tune_seeds = ",".join(map(str, pb["tuning_seeds"]))
    jobs = [(f"{group}/{name}",
             ["continual", "--codes", encoders[tune_enc], "--scenario", scenario_of(group),
              "--strategy", group.split("/")[-1], *common, *extra, "--seeds", tune_seeds,
              "--out", str(args.work / "tuning" / f"{group.replace('/', '-')}-{name}"),
              "--resume", "--json"])
            for group, cands in pb["candidates"].items() for name, extra in cands.items()]
    body["tuning"] = {k: v for k, v in body["tuning"].items() if k in {j[0] for j in jobs}}

    def tune(key: str, cmd: list[str]) -> None:
        if done(key, cmd, body["tuning"]):
            return
        res, made = hybnn(cmd, sealed_env(env))
        assert_no_test(res, key)  # sealed: the command could not have read test
        body["tuning"][key] = brief(res, cmd, made)
        save()
        metric = HEADLINE[scenario_of(key.rsplit("/", 1)[0])]
        print(f"tuning {key}: val {metric} {100 * res['val'][metric]['mean']:.2f}% "
              f"({made['wall_seconds']:.0f} s)", flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: tune(*j), jobs))
    chosen = {}
    for group, cands in pb["candidates"].items():
        metric = HEADLINE[scenario_of(group)]
        order = list(cands)
        width = {n: hidden_of([*common, *cands[n]]) for n in order}
        pick = choose({n: body["tuning"][f"{group}/{n}"] for n in order}, order,
                      lambda r, m=metric: r["val"][m]["mean"], width.get)
        chosen[group] = {"name": pick["name"], "options": cands[pick["name"]],
                         "val": pick["score"], "tied": pick["tied"]}
    body["chosen"] = {**chosen, "rule": pb["rule"], "tie_break": pb["tie_break"]}
    save()

    # 2. the study, per encoder: the only runs that read the test split
    for enc, codes in encoders.items():
        t0, cpu0, load0 = time.perf_counter(), child_cpu_seconds(), os.getloadavg()
        jobs = []
        for scenario in pb["scenarios"]:
            for strategy in pb["strategies"]:
                group = next((g for g in (f"{scenario}/{strategy}", strategy) if g in chosen),
                             None)
                extra = chosen[group]["options"] if group else []
                jobs.append((f"{enc}/{scenario}/{strategy}",
                             ["continual", "--codes", codes, "--scenario", scenario,
                              "--strategy", strategy, *common, *extra, "--seeds", seeds,
                              "--out", str(args.work / "study" / enc / f"{scenario}-{strategy}"),
                              "--resume", "--json"]))
        todo = [(k, c) for k, c in jobs if not done(k, c, body["runs"])]
        # one seed per job, the widest first, so the workers finish together; then each run's
        # command with all its seeds finds every seed's checkpoint finished (--resume) and only
        # gathers them into its JSON
        order = {"joint": 0, "generative": 1, "replay": 2, "none": 3}
        per_seed = sorted(((key, with_seed(cmd, s)) for key, cmd in todo
                           for s in seeds.split(",")),
                          key=lambda j: (-hidden_of(j[1]), order[j[0].split("/")[-1]]))
        made_by: dict[str, list[dict]] = {}
        with ThreadPoolExecutor(args.jobs) as pool:
            for key, made in pool.map(lambda j: (j[0], hybnn(j[1], env)[1]), per_seed):
                made_by.setdefault(key, []).append(made)

        def gather(key: str, cmd: list[str], made_by=made_by) -> None:
            res, made = hybnn(cmd, env)
            body["runs"][key] = {**brief(res, cmd, made), "made_per_seed": made_by.get(key, []),
                                 "wall_seconds": round(sum(m["wall_seconds"]
                                                           for m in made_by.get(key, [])), 1)}
            save()
            print(f"{key}: test {100 * res['test']['final_seen_acc']['mean']:.2f}% on all seen "
                  f"classes", flush=True)

        for key, cmd in todo:
            gather(key, cmd)
        if todo:
            body["encoders"][enc].update({
                "study_wall_seconds": round(time.perf_counter() - t0, 1),
                # CPU time of the runs themselves: what the study needs of idle cores
                "study_cpu_seconds": round(child_cpu_seconds() - cpu0, 1),
                "load_average_start": [round(x, 2) for x in load0],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "jobs": args.jobs, "runs_timed": len(todo)})
            save()
    save()
    draw(body, args.figure, pb["scenarios"], pb["strategies"])


def draw(body: dict, path: Path, scenarios: list[str], strategies: list[str]) -> None:
    curves, panels = {}, []
    for enc in body["encoders"]:
        for scenario in scenarios:
            panel = f"{enc} encoder, {scenario}-incremental"
            for strategy in strategies:
                run = body["runs"].get(f"{enc}/{scenario}/{strategy}")
                if run:
                    curves[f"{panel}/{strategy}"] = run["test"]["seen_acc_curve"]
                    if panel not in panels:
                        panels.append(panel)
    if curves:
        plot_curves(curves, path, "Split-MNIST on codes: test accuracy on the classes seen so "
                    f"far (mean ± std over seeds {', '.join(map(str, body['seeds']))})", panels)


if __name__ == "__main__":
    main()
