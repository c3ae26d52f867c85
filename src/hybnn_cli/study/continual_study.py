"""The continual-learning study: Split-MNIST on codes, 4 strategies × 2 scenarios × the plan's
seeds, per encoder, under a plan committed before it runs (`benchmarks/plans/continual.json`);
its result file, its figure and its generated blocks.

Every run is `hybnn continual ... --json` (so every number comes from a command anyone can rerun),
with `--resume` so an interrupted study continues where it stopped, `jobs` runs at a time with one
thread each (`threads.child_env(1)`).

1. Tuning, sealed: every candidate of the plan runs on the plan's tuning encoder with
   `HYBNN_SEAL_TEST=1`, so it cannot read the test split; its record holds validation only
   (checked). The plan's rule and tie-break choose per group (`sealed.choose`).
2. The study: for each encoder, every strategy of the plan in each of its scenarios, the plan's
   seeds, with the chosen settings. Only these runs read the test split, once each, in folders of
   their own (no tuning checkpoint is reused).
The result file (provenance header, the plan's record; each run with the commit, machine load and
times it ran at) is written after every run; a rerun adds only what is missing, and refuses a
result file made under another version of the plan. `benchmarks/continual.py` runs it.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hybnn_cli.continual import HEADLINE
from hybnn_cli.continual.settings import BASE
from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import Plan, assert_no_test, check_same_plan, choose, sealed_env
from hybnn_cli.study.docgen import _plan_line, renderer, source, table
from hybnn_cli.study.provenance import git_state, now_utc, read_result, write_result
from hybnn_cli.threads import child_env

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
# the study's runs of one encoder, one seed per job: the widest first, then in this order, so
# that the workers finish together
_RUN_ORDER = {"joint": 0, "generative": 1, "replay": 2, "none": 3}


def scenario_of(group: str) -> str:
    """The scenario of a tuning group: "task/replay" is the task scenario, "replay" the class."""
    return group.split("/")[0] if "/" in group else "class"


# The settings the plan's candidates are written against: `hybnn continual`'s defaults when the
# plan was committed (`continual.settings.BASE`). Every command names them first, so a candidate's
# own options override them (the last value given counts) and the defaults the study's choices
# later became do not change what a plan runs.
PLAN_BASE = ["--loss", BASE["loss"], "--flip", str(BASE["flip"]),
             "--balanced-batches" if BASE["balanced_batches"] else "--no-balanced-batches",
             "--hidden", str(BASE["hidden"])]


def hidden_of(cmd: list[str]) -> int:
    """The hidden width a command trains (the last --hidden given counts)."""
    widths = [int(cmd[i + 1]) for i, a in enumerate(cmd) if a == "--hidden"]
    return widths[-1] if widths else BASE["hidden"]


def with_seed(cmd: list[str], seed: str) -> list[str]:
    """The command with --seeds replaced by one seed."""
    i = cmd.index("--seeds")
    return [*cmd[:i + 1], seed, *cmd[i + 2:]]


def child_cpu_seconds() -> float:
    """User + system CPU seconds of the finished `hybnn` runs this process started."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_hybnn(args: list[str], env: dict) -> tuple[dict, dict]:
    """Run `hybnn args` (ends in --json): its JSON answer and the run's own record (commit, dirty
    flag, load average and times when it ran)."""
    exe = str(Path(sys.executable).parent / "hybnn")
    made = {**git_state(), "started": now_utc(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    t0 = time.perf_counter()
    proc = subprocess.run([exe, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise HybnnError(f"failed ({proc.returncode}): hybnn {shlex.join(args)}\n"
                         f"{proc.stderr[-2000:]}")
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


def new_body(plan: Plan, encoders: dict[str, str], old: dict, notes: list[str]) -> dict:
    """The result file's body before any run: the plan, the anchors, the encoders (with what an
    earlier, interrupted study of the same plan recorded of them), its runs so far and the
    notes ("name=text") on the encoders."""
    pb = plan.body
    common = list(pb["common"])
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
    for note in notes:
        name, text = note.split("=", 1)
        body["encoders"][name]["note"] = text
    return body


class ContinualStudy:
    """One run of the study: `run()` tunes, chooses, runs the study per encoder and saves the
    result file `out` (recorded as made by the command `argv`) after every run."""

    def __init__(self, plan: Plan, encoders: dict[str, str], work: Path, out: Path,
                 argv: list[str], jobs: int = 2, notes: Iterable[str] = ()):
        pb = plan.body
        if pb["tuning_encoder"] not in encoders:
            raise HybnnError(f"the plan tunes on the {pb['tuning_encoder']!r} encoder: give "
                             f"--codes {pb['tuning_encoder']}=PATH")
        self.plan, self.pb, self.encoders = plan, pb, encoders
        self.work, self.out, self.argv, self.jobs = Path(work), Path(out), argv, jobs
        self.env = child_env(1)
        old = read_result(self.out, FORMAT) if self.out.is_file() else {}
        if old.get("format_version") != VERSION:
            old = {}
        check_same_plan(old, plan, str(self.out))
        self.body = new_body(plan, encoders, old, list(notes))
        self.common = self.body["common"]
        self.chosen: dict[str, dict] = {}  # group → its candidate (`choose_settings`)

    def save(self) -> None:
        write_result(self.out, FORMAT, VERSION, self.body, argv=self.argv)

    @staticmethod
    def done(key: str, cmd: list[str], store: dict) -> bool:
        """Done by an earlier, interrupted study with the same command."""
        return store.get(key, {}).get("command") == "hybnn " + shlex.join(cmd)

    def run(self) -> dict:
        self.tune()
        self.choose_settings()
        for enc, codes in self.encoders.items():
            self.study_encoder(enc, codes)
        self.save()
        return self.body

    # 1. tuning, sealed: the plan's candidates on the tuning encoder
    def tuning_jobs(self) -> list[tuple[str, list[str]]]:
        pb = self.pb
        codes = self.encoders[pb["tuning_encoder"]]
        seeds = ",".join(map(str, pb["tuning_seeds"]))
        return [(f"{group}/{name}",
                 ["continual", "--codes", codes, "--scenario", scenario_of(group),
                  "--strategy", group.split("/")[-1], *PLAN_BASE, *self.common, *extra,
                  "--seeds", seeds,
                  "--out", str(self.work / "tuning" / f"{group.replace('/', '-')}-{name}"),
                  "--resume", "--json"])
                for group, cands in pb["candidates"].items() for name, extra in cands.items()]

    def tune(self) -> None:
        jobs = self.tuning_jobs()
        keys = {j[0] for j in jobs}
        self.body["tuning"] = {k: v for k, v in self.body["tuning"].items() if k in keys}
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(lambda j: self.tune_one(*j), jobs))

    def tune_one(self, key: str, cmd: list[str]) -> None:
        if self.done(key, cmd, self.body["tuning"]):
            return
        res, made = run_hybnn(cmd, sealed_env(self.env))
        assert_no_test(res, key)  # sealed: the command could not have read test
        self.body["tuning"][key] = brief(res, cmd, made)
        self.save()
        metric = HEADLINE[scenario_of(key.rsplit("/", 1)[0])]
        print(f"tuning {key}: val {metric} {100 * res['val'][metric]['mean']:.2f}% "
              f"({made['wall_seconds']:.0f} s)", flush=True)

    def choose_settings(self) -> None:
        """Per group, the candidate the plan's rule and tie-break choose, on validation."""
        chosen = {}
        for group, cands in self.pb["candidates"].items():
            metric = HEADLINE[scenario_of(group)]
            order = list(cands)
            width = {n: hidden_of([*self.common, *cands[n]]) for n in order}
            pick = choose({n: self.body["tuning"][f"{group}/{n}"] for n in order}, order,
                          lambda r, m=metric: r["val"][m]["mean"], width.get)
            chosen[group] = {"name": pick["name"], "options": cands[pick["name"]],
                             "val": pick["score"], "tied": pick["tied"]}
        self.chosen = chosen
        self.body["chosen"] = {**chosen, "rule": self.pb["rule"],
                               "tie_break": self.pb["tie_break"]}
        self.save()

    # 2. the study, per encoder: the only runs that read the test split
    def study_jobs(self, enc: str, codes: str) -> list[tuple[str, list[str]]]:
        chosen, seeds = self.chosen, ",".join(map(str, self.pb["seeds"]))
        jobs = []
        for scenario in self.pb["scenarios"]:
            for strategy in self.pb["strategies"]:
                group = next((g for g in (f"{scenario}/{strategy}", strategy) if g in chosen),
                             None)
                extra = chosen[group]["options"] if group else []
                jobs.append((f"{enc}/{scenario}/{strategy}",
                             ["continual", "--codes", codes, "--scenario", scenario,
                              "--strategy", strategy, *PLAN_BASE, *self.common, *extra,
                              "--seeds", seeds,
                              "--out", str(self.work / "study" / enc / f"{scenario}-{strategy}"),
                              "--resume", "--json"]))
        return jobs

    def study_encoder(self, enc: str, codes: str) -> None:
        t0, cpu0, load0 = time.perf_counter(), child_cpu_seconds(), os.getloadavg()
        todo = [(k, c) for k, c in self.study_jobs(enc, codes)
                if not self.done(k, c, self.body["runs"])]
        # one seed per job, so the workers finish together; then each run's command with all
        # its seeds finds every seed's checkpoint finished (--resume) and only gathers them
        per_seed = sorted(((key, with_seed(cmd, str(s))) for key, cmd in todo
                           for s in self.pb["seeds"]),
                          key=lambda j: (-hidden_of(j[1]), _RUN_ORDER[j[0].split("/")[-1]]))
        made_by: dict[str, list[dict]] = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            for key, made in pool.map(lambda j: (j[0], run_hybnn(j[1], self.env)[1]),
                                      per_seed):
                made_by.setdefault(key, []).append(made)
        for key, cmd in todo:
            self.gather(key, cmd, made_by.get(key, []))
        if todo:
            self.body["encoders"][enc].update({
                "study_wall_seconds": round(time.perf_counter() - t0, 1),
                # CPU time of the runs themselves: what the study needs of idle cores
                "study_cpu_seconds": round(child_cpu_seconds() - cpu0, 1),
                "load_average_start": [round(x, 2) for x in load0],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "jobs": self.jobs, "runs_timed": len(todo)})
            self.save()

    def gather(self, key: str, cmd: list[str], made: list[dict]) -> None:
        """The run's command with all its seeds: it finds them done and answers for them."""
        res, whole = run_hybnn(cmd, self.env)
        self.body["runs"][key] = {**brief(res, cmd, whole), "made_per_seed": made,
                                  "wall_seconds": round(sum(m["wall_seconds"] for m in made), 1)}
        self.save()
        print(f"{key}: test {100 * res['test']['final_seen_acc']['mean']:.2f}% on all seen "
              f"classes", flush=True)


def draw(body: dict, path: Path, scenarios: list[str], strategies: list[str]) -> None:
    """The figure: test accuracy on the classes seen so far, one panel per encoder and scenario."""
    from hybnn_cli.study.continual_runs import plot_curves  # imports torch: only here

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


def run_continual_study(plan: Plan, encoders: dict[str, str], work: Path, out: Path,
                        figure: Path, argv: list[str], jobs: int = 2,
                        notes: Iterable[str] = ()) -> dict:
    """The whole study (`ContinualStudy`), then its figure; returns the result file's body."""
    body = ContinualStudy(plan, encoders, work, out, argv, jobs, notes).run()
    draw(body, figure, plan.body["scenarios"], plan.body["strategies"])
    return body


# ── the generated blocks ──────────────────────────────────────────────────────────────────────
CONTINUAL = "continual.json"


def _read(results_dir: Path) -> dict:
    return read_result(Path(results_dir) / CONTINUAL, FORMAT)


_STRATEGY_TEXT = {"none": "none (fine-tuning)", "replay": "replay, 2,000 codes",
                  "generative": "generative (Bernoulli mixtures)", "joint": "joint (upper bound)"}


def _cont_cell(run: dict | None, metric: str) -> str:
    if not run:
        return "not run"
    m = run["test"][metric]
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _kb(n: int) -> str:
    return f"{n / 1e3:,.1f} kB"


def _study_time(name: str, enc: dict) -> str:
    text = (f"{name}: {enc['study_wall_seconds'] / 60:.1f} min with {enc.get('jobs', 2)} runs "
            f"at a time")
    if "study_cpu_seconds" in enc:
        text += (f" (load average {enc['load_average_start'][0]:.1f} at the start, "
                 f"{enc['load_average_end'][0]:.1f} at the end; the runs' CPU time "
                 f"{enc['study_cpu_seconds'] / 60:.1f} min)")
    if "rerun" in enc:  # runs redone with new settings; the others reused from the study above
        r = enc["rerun"]
        text += (f", then {', '.join(k.split('/', 1)[1] for k in r['runs'])} rerun at the "
                 f"settings chosen since: {r['study_wall_seconds'] / 60:.1f} min with "
                 f"{r['jobs']} runs at a time (load average {r['load_average_start'][0]:.1f} "
                 f"at the start, {r['load_average_end'][0]:.1f} at the end; the runs' CPU time "
                 f"{r['study_cpu_seconds'] / 60:.1f} min)")
    return text


@renderer("continual-table")
def continual_table(results_dir: Path) -> str:
    r = _read(results_dir)
    encs = list(r["encoders"])
    runs = r["runs"]
    seeds = ", ".join(map(str, r["seeds"]))
    head = ["scenario", "method", "source", "memory"] + [f"{e} encoder (%)" for e in encs]
    rows = []
    for scenario in ("class", "task"):
        metric = "final_seen_acc" if scenario == "class" else "average_acc"
        for strategy in ("none", "replay", "generative", "joint"):
            any_run = next((runs[k] for e in encs if (k := f"{e}/{scenario}/{strategy}")
                            in runs), None)
            mem = _kb(any_run["memory_bytes"]) if any_run else "–"
            if strategy == "joint" and any_run:
                mem = f"all codes ({mem})"
            rows.append([scenario, _STRATEGY_TEXT[strategy], "measured", mem]
                        + [_cont_cell(runs.get(f"{e}/{scenario}/{strategy}"), metric)
                           for e in encs])
        for name, a in r["anchors"][scenario].items():
            if not isinstance(a, dict):  # format 1 recorded the figure alone, unchecked
                a = {"accuracy": a, "checked": False}
            mem = "1.5 MB (= 62,720 codes)" if "iCaRL" in name else "–"
            rows.append([scenario, name, "quoted" if a["checked"] else "quoted, unverified",
                         mem, f"{a['accuracy']:.2f} (pixels)"] + [""] * (len(encs) - 1))
    chosen = r.get("chosen", {})
    picks = "; ".join(f"{s.replace('task/', '')}{' (task scenario)' if '/' in s else ''}: "
                      f"`{' '.join(c['options']) or 'defaults'}`"
                      for s, c in chosen.items() if isinstance(c, dict))
    wall = "; ".join(_study_time(e, r["encoders"][e]) for e in encs
                     if "study_wall_seconds" in r["encoders"][e])
    notes = "".join(f" The `{e}` encoder: {r['encoders'][e]['note']}."
                    for e in encs if r["encoders"][e].get("note"))
    plan = (f" {_plan_line(r)} Every tuning candidate ran sealed (it could not read the "
            f"test split); only the runs below read it." if "plan" in r else
            " (Chosen before the sealed protocol: the candidates' runs read test too.)")
    return (f"Test accuracy after the fifth task, mean ± standard deviation over seeds {seeds}, "
            f"{r['epochs_per_task']} epochs per task: class scenario on all ten digits, task "
            f"scenario averaged over the five tasks. Quoted rows: {r['anchor_source']}; "
            f"\"unverified\" marks a quoted figure not checked against the paper's table here. "
            f"Settings chosen on validation ({picks}).{plan}{notes} Study time per encoder "
            f"(4 strategies × 2 scenarios × {len(r['seeds'])} seeds, one thread per run): "
            f"{wall or 'not recorded'}.\n\n"
            + table(head, rows) + "\n\n" + source(CONTINUAL, r))


@renderer("continual-anchors")
def continual_anchors(results_dir: Path) -> str:
    """Each measured row against the quoted anchors of its scenario: which it is above, below,
    or within one standard deviation of (the table's means)."""
    r = _read(results_dir)
    rows = []
    for key, run in r["runs"].items():
        enc, scenario, strategy = key.split("/")
        m = run["test"][HEADLINE[scenario]]
        where: dict[str, list[str]] = {"above": [], "within one std of": [], "below": []}
        for name, a in r["anchors"][scenario].items():
            diff = 100 * m["mean"] - (a["accuracy"] if isinstance(a, dict) else a)
            word = ("within one std of" if abs(diff) <= 100 * m["std"]
                    else "above" if diff > 0 else "below")
            where[word].append(f"{name.split(' (')[0]} ({diff:+.2f})")
        rows.append([enc, scenario, _STRATEGY_TEXT[strategy],
                     *(", ".join(v) or "–" for v in where.values())])
    order = ["none", "replay", "generative", "joint"]
    rows.sort(key=lambda x: (x[0], x[1], [_STRATEGY_TEXT[k] for k in order].index(x[2])))
    return ("Each measured row's mean against the quoted figures of its scenario, the "
            "difference in points in brackets (the quoted rows train an MLP on pixels: anchors, "
            "not a like-for-like comparison):\n\n"
            + table(["encoder", "scenario", "method", "above", "within one std of", "below"],
                    rows)
            + "\n\n" + source(CONTINUAL, r))


@renderer("continual-metrics")
def continual_metrics(results_dir: Path) -> str:
    r = _read(results_dir)
    rows = []
    for key, run in r["runs"].items():
        enc, scenario, strategy = key.split("/")
        rows.append([enc, scenario, strategy, _cont_cell(run, "final_seen_acc"),
                     _cont_cell(run, "average_acc"), _cont_cell(run, "forgetting"),
                     _cont_cell(run, "backward_transfer"), _kb(run["memory_bytes"]),
                     f"{run['train_seconds']['mean']:.0f}"])
    rows.sort(key=lambda x: (x[0], x[1], ["none", "replay", "generative", "joint"].index(x[2])))
    return (table(["encoder", "scenario", "strategy", "seen classes (%)", "average accuracy (%)",
                   "forgetting (points)", "backward transfer (points)", "memory",
                   "training s per seed"], rows) + "\n\n" + source(CONTINUAL, r))


@renderer("continual-tuning")
def continual_tuning(results_dir: Path) -> str:
    """The settings tried against the bias toward new classes, on validation only."""
    r = _read(results_dir)
    chosen = {s: c["name"] for s, c in r.get("chosen", {}).items() if isinstance(c, dict)}
    rows = []
    for key, run in sorted(r["tuning"].items()):
        group, name = key.rsplit("/", 1)  # group: a strategy (class) or "task/<strategy>"
        scenario = run["config"]["scenario"]
        m = re.search(r"--epochs-per-task \d+ (.*?) --seeds", run["command"])
        opts = m[1] if m else "–"
        val = run["val"][HEADLINE[scenario]]
        rows.append([scenario, run["config"]["strategy"], name, f"`{opts}`",
                     ", ".join(map(str, run["config"].get("seeds", [0]))),
                     f"{100 * val['mean']:.2f}"
                     + (f" ({', '.join(f'{100 * v:.2f}' for v in val['values'])})"
                        if len(val["values"]) > 1 else ""),
                     "chosen" if chosen.get(group) == name else ""])
    rows.sort(key=lambda x: (x[0], x[1], x[2]))
    return (f"`{next(iter(r['encoders']))}` encoder; validation accuracy after the fifth task "
            f"(class scenario: on all ten digits; task scenario: averaged over the five tasks), "
            f"mean over the seeds listed (each seed's in brackets); the test split plays no part "
            f"(rule: {r.get('chosen', {}).get('rule', 'not chosen yet')}):\n\n"
            + table(["scenario", "strategy", "candidate", "options", "seeds", "validation (%)",
                     ""], rows)
            + "\n\n" + source(CONTINUAL, r))
