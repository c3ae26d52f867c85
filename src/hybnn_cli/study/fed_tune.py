"""The federated tuning study (`benchmarks/fedtune.py`): federated settings chosen on validation
under a plan committed before it runs (`benchmarks/plans/fedtune.json`), then the target rows over
several seeds; it runs, records and renders its own blocks.

1. The screen, sealed: for the plan's one task at one scale, `hybnn fed --json` once per candidate
   (extra `hybnn fed` options) and screen seed with `HYBNN_SEAL_TEST=1`, so the runs cannot read
   the test split; the plan's rule and tie-break choose on validation (`sealed.choose`).
2. The target rows: each of the plan's rows at the chosen setting once per seed of the plan, and
   centralized `train-bnn` on the same codes per task and seed: the only runs that read test.
The file (format "hybnn-fedtune", version 2, with the plan's SHA-256) is written after every run;
a rerun adds only what is missing and refuses a file made under another version of the plan. The
blocks `fedtune-screen` and `fedtune-rows` of the docs render it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hybnn_cli.sealed import assert_no_test, check_same_plan, choose, load_plan, sealed_env
from hybnn_cli.study.docgen import _plan_line, acc_cell, pct, renderer, source, table
from hybnn_cli.study.fed_runner import FEDAVG, hybnn, run_env, study_choices
from hybnn_cli.study.provenance import git_state, now_utc, read_result, write_result

FORMAT, VERSION = "hybnn-fedtune", 2


# ── the study ─────────────────────────────────────────────────────────────────────────────────
def run_tune_study(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the tuning study with the options of `benchmarks/fedtune.py` (`args`), recorded as the
    command `argv`; returns the file's body."""
    study = TuneStudy(args, argv)
    study.screen()
    study.choose()
    study.target_rows()
    study.summarize_rows()
    study.save()
    body = study.body
    print(f"chosen {body['chosen']['name']}; rows: " + "; ".join(
        f"{k} {100 * r['test_acc']['mean']:.2f} ± {100 * r['test_acc']['std']:.2f}%"
        for k, r in body["rows"].items()), flush=True)
    return body


class TuneStudy:
    """The tuning study's state: its options, plan, file's body and environment."""

    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args, self.argv = args, argv
        self.plan = plan = load_plan(args.plan, draft=args.draft)
        self.pb, self.sc = pb, sc = plan.body, plan.body["screen"]
        args.models.mkdir(parents=True, exist_ok=True)
        self.env = run_env(int(sc["threads"]))
        self.chosen_lr, study_commit = study_choices(args.study)
        old = read_result(args.out, FORMAT) if args.out.is_file() else {}
        if old.get("format_version") != VERSION:
            old = {}
        check_same_plan(old, plan, str(args.out))
        screen_key = (f"task{sc['task']}/{sc['clients']}/{sc['partition']}/{sc['uplink']}/"
                      f"{sc['rounds']}rounds")
        self.body = {"plan": plan.record(), "plan_target": pb.get("target"),
                     "candidates": pb["candidates"], "codes": str(args.codes),
                     "fraction": sc["fraction"], "study_commit": study_commit,
                     "screen_key": screen_key, "screen": old.get("screen", {}),
                     "chosen": old.get("chosen"), "rows": old.get("rows", {})}
        self.lock = threading.Lock()

    def save(self) -> None:
        write_result(self.args.out, FORMAT, VERSION, self.body, argv=self.argv)

    def fed_cmd(self, task: str, clients: int, partition: str, uplink: str, seed: int,
                options: str, name: str) -> list[str]:
        sc, lr = self.sc, self.chosen_lr[task]
        return ["fed", *FEDAVG, "--codes", str(self.args.codes), "--task", task,
                "--hidden", str(int(lr.get("hidden", 128))), "--clients", str(clients),
                "--fraction", repr(sc["fraction"]), "--rounds", str(sc["rounds"]),
                "--local-epochs", str(sc["local_epochs"]), "--lr", repr(lr["lr"]),
                "--partition", partition, "--alpha", repr(self.pb["alpha"]), "--uplink", uplink,
                "--seed", str(seed), "--threads", str(sc["threads"]),
                "--out", str(self.args.models / f"{name}.pt"), *shlex.split(options), "--json"]

    def central_cmd(self, task: str, seed: int) -> list[str]:
        t, lr = task.removeprefix("task"), self.chosen_lr[task.removeprefix("task")]
        return ["train-bnn", "--codes", str(self.args.codes), "--task", t,
                "--hidden", str(int(lr.get("hidden", 128))),
                "--epochs", str(self.pb["centralized"]["epochs"]), "--lr", repr(lr["lr"]),
                "--seed", str(seed), "--threads", str(self.sc["threads"]),
                "--out", str(self.args.models / f"central-{task}-seed{seed}.pt"), "--json"]

    def run(self, key: str, cmd: list[str], store: dict, sealed: bool) -> dict | None:
        """Run `cmd` into `store[key]` (None when an earlier, interrupted run of this plan
        did); a sealed run cannot read test, and its record is checked for it."""
        if store.get(key, {}).get("command") == "hybnn " + shlex.join(cmd):
            return None  # done by an earlier, interrupted run of this plan
        made = {**git_state(), "started": now_utc(),
                "load_average_start": [round(x, 2) for x in os.getloadavg()]}
        res, secs = hybnn(cmd, sealed_env(self.env) if sealed else self.env)
        made.update(ended=now_utc(), wall_seconds=round(secs, 1))
        row = self._row(key, cmd, res, made, sealed)
        with self.lock:
            store[key] = row
            self.save()
        if cmd[0] == "train-bnn":
            print(f"centralized {cmd[cmd.index('--task') + 1]} seed {key}: test "
                  f"{100 * row['test_acc']:.2f}% ({secs:.0f} s)", flush=True)
        else:
            shown = f"test {100 * row['test_acc']:.2f}%, " if not sealed else ""
            print(f"{key}: {shown}val {100 * row['final_val_acc']:.2f}% "
                  f"({made['wall_seconds']:.0f} s)", flush=True)
        return row

    @staticmethod
    def _row(key: str, cmd: list[str], res: dict, made: dict, sealed: bool) -> dict:
        """What the file keeps of one run's JSON output `res`."""
        command = "hybnn " + shlex.join(cmd)
        if cmd[0] == "train-bnn":  # the centralized reference
            return {"test_acc": res["test_acc"], "command": command, "made": made}
        row = {"final_val_acc": res["final_val_acc"], "best_val_acc": res["best_val_acc"],
               "val_curve": res["val_curve"], "n_val": res["n_val"], "command": command,
               "made": made}
        if sealed:
            assert_no_test(res, key)  # the command could not have read test
        else:
            row.update(test_acc=res["final_test_acc"], best_test_acc=res["best_test_acc"],
                       accuracy_curve=res["accuracy_curve"], n_test=res["n_test"],
                       uplink_per_round=res["bytes"]["uplink_per_round"])
        return row

    def run_all(self, jobs: list[tuple[str, list[str], dict]], sealed: bool) -> None:
        """`run` every (key, command, store) of `jobs`, `--jobs` at once."""
        with ThreadPoolExecutor(max(1, self.args.jobs)) as pool:
            for f in [pool.submit(self.run, k, c, store, sealed) for k, c, store in jobs]:
                f.result()

    def screen(self) -> None:
        """1. The screen, sealed: every candidate once per screen seed."""
        sc, pb = self.sc, self.pb
        self.run_all([(f"{name}/seed{seed}",
                       self.fed_cmd(sc["task"], sc["clients"], sc["partition"], sc["uplink"],
                                    seed, opts, f"screen-{name}-seed{seed}"), self.body["screen"])
                      for name, opts in pb["candidates"].items() for seed in pb["screen_seeds"]],
                     sealed=True)

    def choose(self) -> None:
        """The plan's rule and tie-break on the screen's validation accuracies."""
        pb, order = self.pb, list(self.pb["candidates"])
        records = {n: {"runs": [self.body["screen"][f"{n}/seed{s}"] for s in pb["screen_seeds"]]}
                   for n in order}
        pick = choose(records, order,
                      lambda r: (statistics.fmean(x["final_val_acc"] for x in r["runs"]),
                                 statistics.fmean(x["best_val_acc"] for x in r["runs"])))
        self.body["chosen"] = {"name": pick["name"], "options": pb["candidates"][pick["name"]],
                               "final_val_acc": pick["score"][0],
                               "best_val_acc": pick["score"][1], "tied": pick["tied"],
                               "rule": pb["rule"], "tie_break": pb["tie_break"]}
        self.save()

    def target_rows(self) -> None:
        """2. The target rows at the chosen setting, and centralized train-bnn on the same
        codes: the only runs that read test."""
        pb, body = self.pb, self.body
        options = body["chosen"]["options"]
        body.setdefault("centralized", {})
        jobs = []
        for task in sorted({k.split("/")[0] for k in pb["rows"]}):
            central = body["centralized"].setdefault(
                task, {"epochs": pb["centralized"]["epochs"], "seeds": {}})
            jobs += [(str(seed), self.central_cmd(task, seed), central["seeds"])
                     for seed in pb["seeds"]]
        for row_key in pb["rows"]:
            task, clients, partition, uplink = row_key.split("/")
            row = body["rows"].setdefault(row_key, {"options": options, "seeds": {}})
            jobs += [(str(seed), self.fed_cmd(task.removeprefix("task"), int(clients), partition,
                                              uplink, seed, options,
                                              f"{row_key.replace('/', '-')}-seed{seed}"),
                      row["seeds"]) for seed in pb["seeds"]]
        self.run_all(jobs, sealed=False)

    def summarize_rows(self) -> None:
        """Mean ± std over the plan's seeds, the gap to centralized and the plan's target."""
        from hybnn_cli.study.continual_runs import mean_std

        seeds, body = self.pb["seeds"], self.body
        for central in body["centralized"].values():
            central["test_acc"] = mean_std([central["seeds"][str(s)]["test_acc"] for s in seeds])
        for key, row in body["rows"].items():
            runs = [row["seeds"][str(s)] for s in seeds]
            row["test_acc"] = mean_std([r["test_acc"] for r in runs])
            row["final_val_acc"] = mean_std([r["final_val_acc"] for r in runs])
            central = body["centralized"][key.split("/")[0]]["test_acc"]["mean"]
            row["gap_to_centralized"] = central - row["test_acc"]["mean"]
            # the plan's target: IID rows within 1 point of centralized (mean over the seeds)
            row["target_met"] = (row["gap_to_centralized"] <= 0.01
                                 if key.split("/")[2] == "iid" else None)


# ── its blocks ────────────────────────────────────────────────────────────────────────────────
TUNE = "fedtune.json"  # benchmarks/fedtune.py: federated settings chosen on validation


@renderer("fedtune-screen")
def fedtune_screen(results_dir: Path) -> str:
    """The sealed screen of the federated settings: validation only, the chosen one in bold."""
    r = read_result(Path(results_dir) / TUNE, FORMAT)
    if r.get("format_version") != 2:
        return "The screen under the committed plan has not run yet.\n\n" + source(TUNE, r)
    chosen = (r.get("chosen") or {}).get("name")
    rows = []
    for key, run in r["screen"].items():
        name = key.rsplit("/", 1)[0]
        rows.append([("**" + name + "**") if name == chosen else name,
                     key.rsplit("/", 1)[1].removeprefix("seed"),
                     f"`{r['candidates'][name]}`" if r["candidates"][name] else "(plain FedAvg)",
                     pct(run["final_val_acc"]), pct(run["best_val_acc"]),
                     f"`{run['made']['commit'][:12]}`"])
    rows.sort(key=lambda x: x[3], reverse=True)
    task, n, part, uplink, rounds = r["screen_key"].split("/")
    n_val = next(iter(r["screen"].values()))["n_val"] if r["screen"] else 0
    return (f"Task {task.removeprefix('task')}, {n} clients ({part}, {uplink} uplink, "
            f"{r['fraction']:.0%} sampled per round), {rounds.removesuffix('rounds')} rounds; "
            f"every run sealed (it cannot read the test split); validation split of {n_val} codes; "
            f"chosen in bold; each candidate's options are given after plain FedAvg's (Adam "
            f"clients, the server averaging). {_plan_line(r)}\n\n"
            + table(["candidate", "seed", "hybnn fed options", "final validation (%)",
                     "best round (%)", "commit"], rows)
            + "\n\n" + source(TUNE, r))


@renderer("fedtune-rows")
def fedtune_rows(results_dir: Path) -> str:
    """The target rows at the chosen setting over the plan's seeds, against centralized."""
    r = read_result(Path(results_dir) / TUNE, FORMAT)
    if r.get("format_version") != 2 or not r.get("rows"):
        return "The target rows under the committed plan have not run yet.\n\n" + source(TUNE, r)
    rows = []
    for key, row in r["rows"].items():
        if "test_acc" not in row:
            continue
        task, n, part, uplink = key.split("/")
        central = r["centralized"][task]["test_acc"]
        met = row["target_met"]
        seeds = ", ".join(sorted(row["seeds"], key=int))  # stored as they finished
        rows.append([task.removeprefix("task"), n, part, uplink, seeds,
                     acc_cell(central), acc_cell(row["test_acc"]), acc_cell(row["final_val_acc"]),
                     f"{100 * row['gap_to_centralized']:.2f}",
                     "–" if met is None else ("**yes**" if met else "no")])
    opts = r["chosen"]["options"] or "defaults"
    return (f"At the chosen setting (`{r['chosen']['name']}`: `{opts}`), "
            f"mean ± std over the seeds listed; centralized: `train-bnn` on the same codes for "
            f"{next(iter(r['centralized'].values()))['epochs']} epochs, the same seeds. The "
            f"plan's target, written before the run: {r['plan_target']}\n\n"
            + table(["task", "clients", "partition", "uplink", "seeds", "centralized test (%)",
                     "final test (%)", "final validation (%)", "gap (points)", "target met"],
                    rows)
            + "\n\n" + source(TUNE, r))
