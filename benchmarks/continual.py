"""Continual learning on codes: Split-MNIST, 4 strategies × 2 scenarios × 3 seeds, per encoder.

Every run is `hybnn continual ... --json` (so every number comes from a command anyone can rerun),
with `--resume` so an interrupted study continues where it stopped, two runs at a time with one
thread each (a 2-core machine).

1. Tuning, on the validation split only (the first encoder's codes): a few settings of
   `replay` and of `generative` in the class scenario against the pull toward the newest classes
   (logit adjustment, balanced fine-tuning of the whole network or of the output layer alone,
   weight aligning, nearest-mean read-out, weight averaging, distillation, replay ratio or
   balanced batches, learning rate, bit flips); the best validation accuracy on all ten digits
   (seed 0) wins. Replay in the task scenario is tuned apart (`task/replay`; the best
   validation accuracy averaged over the five tasks, mean of seeds 0, 1, 2, wins: its
   candidates differ by less than one seed's noise), the other strategies there take the class
   scenario's choice. The test split plays no part in the choice. `--tune-only` stops here.
2. The study: for each encoder (`--codes name=path`), none / replay / generative / joint in the
   class and task scenarios, seeds 0, 1, 2, with the chosen settings.
Writes `benchmarks/results/continual.json` (provenance header) after every run and the figure
`benchmarks/results/continual.png` (test accuracy on the classes seen so far after each task).

Usage: python benchmarks/continual.py --codes mnist=runs/codes-mnist.h5
       --codes fashion=runs/codes-fashion-on-mnist.h5 [--seeds 0,1,2] [--work runs/continual-study]
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
from hybnn_cli.continual.run import ContinualConfig
from hybnn_cli.continual.study import plot_curves
from hybnn_cli.results import read_result, write_result

FORMAT = "hybnn-continual-benchmark"
VERSION = 2  # 2: anchors carry whether they were checked against the paper
SCENARIOS = ("class", "task")
STRATEGIES = ("none", "replay", "generative", "joint")
COMMON = ["--memory", "2000", "--components", "48", "--threads", "1"]
# candidate settings against the bias toward the newest classes (chosen on validation); a
# group is a strategy (class scenario) or "task/<strategy>" (task scenario)
LA = ["--loss", "la", "--flip", "0.1"]
TASK = ["--loss", "plain", "--flip", "0.1"]
CANDIDATES = {
    "replay": {
        "flip0.1": ["--loss", "plain", "--flip", "0.1"],
        "flip0.1+la": LA,
        "flip0.1+la+ft5": [*LA, "--finetune-epochs", "5"],
        "flip0.1+wa": ["--loss", "plain", "--flip", "0.1", "--align"],
        "flip0.1+la+wa": [*LA, "--align"],
        "flip0.1+nme": ["--loss", "plain", "--flip", "0.1", "--readout", "nme"],
        "flip0.1+la+nme": [*LA, "--readout", "nme"],
        "flip0.1+la+ema": [*LA, "--ema", "0.999"],
        "flip0.1+la+distill1": [*LA, "--distill", "1"],
        "flip0.1+la+balanced": [*LA, "--balanced-batches"],
        "flip0.2+la": ["--loss", "la", "--flip", "0.2"],
        "flip0.1+la+lr0.005": [*LA, "--lr", "0.005"],
        "flip0.1+la+ratio2": [*LA, "--replay-ratio", "2"],
        "flip0.1+la+ratio3": [*LA, "--replay-ratio", "3"],
        "flip0.05+la+ratio2": ["--loss", "la", "--flip", "0.05", "--replay-ratio", "2"],
        "flip0.1+la+ratio2+lr0.02": [*LA, "--replay-ratio", "2", "--lr", "0.02"],
        "flip0.1+la+ratio2+h1024": [*LA, "--replay-ratio", "2", "--hidden", "1024"],
        "flip0.1+la+ratio2+h2048": [*LA, "--replay-ratio", "2", "--hidden", "2048"],
        "flip0.1+la+h2048": [*LA, "--hidden", "2048"],
    },
    "generative": {
        "ratio2+ft": ["--loss", "plain", "--replay-ratio", "2", "--finetune-epochs", "10"],
        "balanced+la": ["--loss", "la", "--balanced-batches"],
        "balanced+la+ft": ["--loss", "la", "--balanced-batches", "--finetune-epochs", "10"],
    },
    "task/replay": {
        # logit adjustment acts in the class scenario only: here this is flips alone
        "flip0.1+la": LA,
        "plain": ["--loss", "plain"],
        "flip0.1+balanced": [*TASK, "--balanced-batches"],
        "flip0.1+balanced+h2048": [*TASK, "--balanced-batches", "--hidden", "2048"],
        "flip0.1+ratio4": [*TASK, "--replay-ratio", "4"],
        # twice the epochs of the other runs (the last --epochs-per-task given counts)
        "flip0.1+balanced+ep40": [*TASK, "--balanced-batches", "--epochs-per-task", "40"],
        "flip0.1+balanced+lr0.005": [*TASK, "--balanced-batches", "--lr", "0.005"],
        "flip0.1+balanced+distill1": [*TASK, "--balanced-batches", "--distill", "1"],
        "flip0.1+balanced+ft5": [*TASK, "--balanced-batches", "--finetune-epochs", "5"],
    },
}
# seeds of a group's tuning runs (default "0"): task/replay's candidates differ by less than the
# spread between seeds (a tenth of a point is a handful of validation codes), so each is judged
# by its mean over three seeds
TUNING_SEEDS = {"task/replay": "0,1,2"}


def scenario_of(group: str) -> str:
    """The scenario of a tuning group: "task/replay" is the task scenario, "replay" the class."""
    return group.split("/")[0] if "/" in group else "class"


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


def with_seed(cmd: list[str], seed: str) -> list[str]:
    """The command with --seeds replaced by one seed."""
    i = cmd.index("--seeds")
    return [*cmd[:i + 1], seed, *cmd[i + 2:]]


def hidden_of(cmd: list[str]) -> int:
    return int(cmd[cmd.index("--hidden") + 1]) if "--hidden" in cmd else ContinualConfig.hidden


def child_cpu_seconds() -> float:
    """User + system CPU seconds of the finished `hybnn` runs this script started."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def hybnn(args: list[str], env: dict) -> tuple[dict, float]:
    exe = str(Path(sys.executable).parent / "hybnn")
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): hybnn {shlex.join(args)}\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout), time.perf_counter() - t0


def brief(res: dict, cmd: list[str], seconds: float) -> dict:
    """What the study keeps of one `hybnn continual --json` answer."""
    keep = ("config", "encoder_sha256", "memory_bytes", "train_seconds", "val", "test")
    return {**{k: res[k] for k in keep}, "command": "hybnn " + shlex.join(cmd),
            "wall_seconds": round(seconds, 1),
            "runs": [{k: r[k] for k in ("seed", "val", "test", "train_seconds", "memory_bytes")}
                     for r in res["runs"]]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", action="append", required=True,
                   help="name=path of a codes file of MNIST (repeat per encoder); the first is "
                   "the one settings are tuned on")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--work", type=Path, default=Path("runs/continual-study"))
    p.add_argument("--study-work", type=Path, help="folder of the study's runs (default: "
                   "--work; another folder reruns the study while the tuning runs are reused)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/continual.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/continual.png"))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--epochs-per-task", default="20")
    p.add_argument("--note", action="append", default=[],
                   help="name=text: a note on an encoder, kept with its results")
    p.add_argument("--tune-from", type=Path, help="take the tuning and the chosen settings "
                   "from this study file (waiting until it has them) instead of tuning here")
    p.add_argument("--tune-only", action="store_true",
                   help="stop after the tuning and the choice (the file then serves --tune-from)")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="copy the runs and encoder records of another study file")
    args = p.parse_args(argv)
    encoders = dict(c.split("=", 1) for c in args.codes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    old = read_result(args.out, FORMAT) if args.out.is_file() else {}
    if old.get("format_version") != VERSION:
        old = {}
    common = [*COMMON, "--epochs-per-task", args.epochs_per_task]
    body = {"seeds": [int(s) for s in args.seeds.split(",")], "common": common,
            "epochs_per_task": int(args.epochs_per_task),
            "anchors": {sc: {name: {"accuracy": acc, "checked": ok}
                             for name, (acc, ok) in rows.items()}
                        for sc, rows in ANCHORS.items()},
            "anchor_source": ANCHOR_SOURCE,
            "encoders": {n: {"codes": c} for n, c in encoders.items()},
            "tuning": old.get("tuning", {}), "runs": old.get("runs", {})}
    for name, rec in old.get("encoders", {}).items():
        if name in encoders:
            body["encoders"][name] = {**rec, "codes": encoders[name]}
    for other in args.merge:
        o = read_result(other, FORMAT)
        body["runs"] = {**o["runs"], **body["runs"]}
        for name, rec in o["encoders"].items():
            body["encoders"][name] = {**rec, **body["encoders"].get(name, {})}
    for note in args.note:
        name, text = note.split("=", 1)
        body["encoders"][name]["note"] = text

    def save() -> None:
        write_result(args.out, FORMAT, VERSION, body,
                     argv=["python", "benchmarks/continual.py", *(argv or sys.argv[1:])])

    ran = set()

    def done(key: str, cmd: list[str], store: dict) -> bool:
        """Done by an earlier, interrupted study with the same command."""
        return store.get(key, {}).get("command") == "hybnn " + shlex.join(cmd)

    def launch(key: str, cmd: list[str], store: dict, before: float = 0.0) -> None:
        if done(key, cmd, store):
            return
        ran.add(key)
        res, seconds = hybnn(cmd, env)
        seconds += before
        store[key] = brief(res, cmd, seconds)
        save()
        s = res["val"]["final_seen_acc"], res["test"]["final_seen_acc"]
        print(f"{key}: val {100 * s[0]['mean']:.2f}%  test {100 * s[1]['mean']:.2f}% "
              f"({seconds:.0f} s)", flush=True)

    # 1. tuning on validation: seed 0, the first encoder, class scenario
    if args.tune_from:
        while "chosen" not in (src := read_result(args.tune_from, FORMAT)):
            time.sleep(30)
        body["tuning"], body["chosen"] = src["tuning"], src["chosen"]
    tune_name, tune_codes = next(iter(encoders.items()))
    jobs = [] if args.tune_from else [
        (f"{group}/{name}",
         ["continual", "--codes", tune_codes, "--scenario", scenario_of(group), "--strategy",
          group.split("/")[-1], *common, *extra, "--seeds", TUNING_SEEDS.get(group, "0"),
          "--out", str(args.work / tune_name / f"{group.replace('/', '-')}-{name}"), "--resume",
          "--json"])
        for group, cands in CANDIDATES.items() for name, extra in cands.items()]
    if not args.tune_from:  # only the candidates listed above (an earlier list's may be stale)
        body["tuning"] = {k: v for k, v in body["tuning"].items() if k in {j[0] for j in jobs}}
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda j: launch(j[0], j[1], body["tuning"]), jobs))
    chosen = {}
    for group, cands in ([] if args.tune_from else CANDIDATES.items()):
        metric = HEADLINE[scenario_of(group)]
        best = max(cands, key=lambda n: body["tuning"][f"{group}/{n}"]["val"][metric]["mean"])
        chosen[group] = {"name": best, "options": cands[best]}
    if args.tune_from:
        chosen = {k: v for k, v in body["chosen"].items() if k != "rule"}
    else:
        body["chosen"] = {**chosen, "rule": "highest validation accuracy after the last task, "
                          "first encoder: on all ten digits, seed 0 (class scenario); averaged "
                          "over the five tasks, mean of seeds 0, 1, 2 (task/replay)"}

    if args.tune_only:
        save()
        return

    # 2. the study, per encoder
    study_work = args.study_work or args.work
    for enc, codes in encoders.items():
        t0, cpu0, load0 = time.perf_counter(), child_cpu_seconds(), os.getloadavg()
        jobs = []
        for scenario in SCENARIOS:
            for strategy in STRATEGIES:
                # a chosen candidate's folder: its tuning runs are reused (with --work as
                # --study-work), not repeated
                extra, folder = [], strategy
                group = next((g for g in (f"{scenario}/{strategy}", strategy) if g in chosen),
                             None)
                if group:
                    extra = chosen[group]["options"]
                    folder = f"{group.replace('/', '-')}-{chosen[group]['name']}"
                jobs.append((f"{enc}/{scenario}/{strategy}",
                             ["continual", "--codes", codes, "--scenario", scenario,
                              "--strategy", strategy, *common, *extra, "--seeds", args.seeds,
                              "--out", str(study_work / enc / folder), "--resume", "--json"]))
        # one seed per job, the longest first (the widest, then by strategy), so the workers
        # finish together; then each run's command with all its seeds finds every seed's
        # checkpoint finished (--resume) and only gathers them into its JSON
        order = {"joint": 0, "generative": 1, "replay": 2, "none": 3}
        per_seed = sorted(((key, with_seed(cmd, seed)) for key, cmd in jobs
                           if not done(key, cmd, body["runs"]) for seed in args.seeds.split(",")),
                          key=lambda j: (-hidden_of(j[1]), order[j[0].split("/")[-1]]))
        seconds: dict[str, float] = {}
        with ThreadPoolExecutor(args.jobs) as pool:
            for key, sec in pool.map(lambda j: (j[0], hybnn(j[1], env)[1]), per_seed):
                seconds[key] = seconds.get(key, 0.0) + sec
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda j, sec=seconds: launch(j[0], j[1], body["runs"],
                                                        sec.get(j[0], 0.0)), jobs))
        rerun = sorted(k for k in ran if k.startswith(enc + "/"))
        if rerun:
            rec = {"study_wall_seconds": round(time.perf_counter() - t0, 1),
                   # CPU time of the runs themselves: what the study needs of idle cores
                   "study_cpu_seconds": round(child_cpu_seconds() - cpu0, 1),
                   "load_average_start": [round(x, 2) for x in load0],
                   "load_average_end": [round(x, 2) for x in os.getloadavg()],
                   "jobs": args.jobs}
            if len(rerun) == len(jobs):
                body["encoders"][enc].update(rec)
                body["encoders"][enc].pop("rerun", None)
            else:  # the other runs were reused: the time is that of these runs only
                body["encoders"][enc]["rerun"] = {**rec, "runs": rerun}
            save()
    # saved once more at the end (a rerun with nothing left to do writes only here, so its
    # header sees the committed file and records a clean tree)
    save()
    draw(body, args.figure)


def draw(body: dict, path: Path) -> None:
    curves, panels = {}, []
    for enc in body["encoders"]:
        for scenario in SCENARIOS:
            panel = f"{enc} encoder, {scenario}-incremental"
            for strategy in STRATEGIES:
                run = body["runs"].get(f"{enc}/{scenario}/{strategy}")
                if run:
                    curves[f"{panel}/{strategy}"] = run["test"]["seen_acc_curve"]
                    if panel not in panels:
                        panels.append(panel)
    plot_curves(curves, path, "Split-MNIST on codes: test accuracy on the classes seen so far "
                f"(mean ± std over seeds {', '.join(map(str, body['seeds']))})", panels)


if __name__ == "__main__":
    main()
