"""The forget-proof study: the learners that cannot forget (`hybnn continual --strategy mixture |
prototype`, `continual.class_models`) on Split-MNIST codes, under a plan committed before it runs
(`benchmarks/plans/forgetproof.json`); its result file and its generated blocks.

Every run is `hybnn continual ... --json` (so every number comes from a command anyone can rerun),
with `--resume`, `jobs` runs at a time with one thread each (`threads.child_env(1)`).

1. Candidates, sealed: for each encoder and strategy, every K (mixture components per class) of
   the plan runs in the plan's tuning scenario on its tuning seeds with `HYBNN_SEAL_TEST=1`, so
   it cannot read the test split; its record holds validation only (checked). The plan's rule
   and tie-break choose K per encoder and strategy (`sealed.choose`, fewer parameters = smaller K).
2. The study: at the chosen K, each strategy in each scenario of the plan over its seeds, and the
   plan's shuffled task order (`--task-order`) in its scenario over the same seeds, to report
   order-invariance. Only these runs read the test split, in folders of their own.
3. The anchors: none, replay, generative replay and joint read from the continual study's result
   file (`benchmarks/results/continual.json`) as it is, with their memory, after checking that
   its runs were made on codes of the same encoder (SHA-256).

The result file (provenance header with the load when the study started; the plan's record; each
run with the commit, machine load and times it ran at) is written after every run; a rerun adds
only what is missing, and refuses a result file made under another version of the plan.
`benchmarks/forgetproof.py` runs it.
"""

from __future__ import annotations

import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hybnn_kernels.pipeline import file_sha256

from hybnn_cli.codes.store import read_attrs
from hybnn_cli.continual import HEADLINE
from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import Plan, assert_no_test, check_same_plan, choose, sealed_env
from hybnn_cli.study import continual_study  # the module: its names are looked up when used
from hybnn_cli.study.docgen import _plan_line, renderer, source, table
from hybnn_cli.study.provenance import (
    REPO_ROOT,
    end_run,
    read_result,
    start_run,
    write_result,
)
from hybnn_cli.threads import child_env

# (continual_study imports docgen, which imports this module, so when continual_study is imported
# first its names do not exist yet while this module is imported)
FORMAT = "hybnn-forgetproof"
VERSION = 1
FORGETPROOF = "forgetproof.json"
ANCHOR_METRICS = ("final_seen_acc", "average_acc", "forgetting")


def components_of(options: list[str]) -> int:
    """The K a candidate's options set (the last --components given counts)."""
    ks = [int(options[i + 1]) for i, a in enumerate(options) if a == "--components"]
    if not ks:
        raise HybnnError(f"a candidate of the plan sets no --components: {shlex.join(options)}")
    return ks[-1]


def per_task_final(res: dict) -> dict:
    """Each seed's accuracy on every task after the last one (tasks in the order learned), on
    each split the run reports."""
    out = {}
    for split in ("val", "test"):
        if split in res["runs"][0]["history"][-1]:
            out[split] = [r["history"][-1][split]["per_task"] for r in res["runs"]]
    return out


def learned_tasks(res: dict) -> list[list[int]]:
    """The tasks' classes in the order a run learned them (its --task-order, else 1, 2, …)."""
    order = res["config"].get("task_order")
    tasks = res["tasks"]
    return [tasks[int(t) - 1] for t in order.split(",")] if order else tasks


def record(res: dict, cmd: list[str], made: dict) -> dict:
    """What the study keeps of one `hybnn continual --json` answer: `continual_study.brief` and
    the final accuracy on every task per seed, with the tasks in the order learned."""
    return {**continual_study.brief(res, cmd, made), "tasks": learned_tasks(res),
            "per_task_final": per_task_final(res)}


def read_anchors(path: Path, encoders: dict[str, str], strategies: list[str]) -> dict:
    """The continual study's runs of `strategies` for each encoder it holds, with the file's
    provenance; HybnnError when its encoder is not the one of our codes of that name."""
    r = read_result(path, continual_study.FORMAT)
    shas = {e: str(read_attrs(c)["encoder_sha256"]) for e, c in encoders.items()}
    runs = {}
    for key, run in r["runs"].items():
        enc, scenario, strategy = key.split("/")
        if enc not in encoders or strategy not in strategies:
            continue
        if run["encoder_sha256"] != shas[enc]:
            raise HybnnError(f"{path}: its {enc!r} runs were made on codes of another encoder "
                             f"than {encoders[enc]}; the anchors must share the encoder")
        runs[key] = {"memory_bytes": run["memory_bytes"], "train_seconds": run["train_seconds"],
                     "encoder_sha256": run["encoder_sha256"], "command": run["command"],
                     **{s: {m: run[s][m] for m in ANCHOR_METRICS} for s in ("val", "test")}}
    inside = REPO_ROOT in path.resolve().parents
    return {"file": str(path.resolve().relative_to(REPO_ROOT)) if inside else str(path),
            "sha256": file_sha256(path), "commit": r["commit"],
            "dirty": r.get("dirty"), "date": r["date"], "command": r["command"],
            "notes": {e: v["note"] for e, v in r.get("encoders", {}).items()
                      if e in encoders and v.get("note")}, "runs": runs}


class ForgetproofStudy:
    """One run of the study: `run()` runs the candidates, chooses K, runs the study per encoder
    and saves the result file `out` (recorded as made by the command `argv`) after every run."""

    def __init__(self, plan: Plan, encoders: dict[str, str], work: Path, out: Path,
                 argv: list[str], jobs: int = 1, anchors: Path | None = None):
        pb = plan.body
        missing = [e for e in pb["encoders"] if e not in encoders]
        if missing or set(encoders) - set(pb["encoders"]):
            raise HybnnError(f"the plan's encoders are {', '.join(pb['encoders'])}: give "
                             f"--codes NAME=PATH for each of them, and no other")
        self.plan, self.pb, self.encoders = plan, pb, {e: encoders[e] for e in pb["encoders"]}
        self.work, self.out, self.argv, self.jobs = Path(work), Path(out), argv, jobs
        self.env = child_env(1)
        self.run_rec = start_run(self.out, argv)
        old = read_result(self.out, FORMAT) if self.out.is_file() else {}
        if old.get("format_version") != VERSION:
            old = {}
        check_same_plan(old, plan, str(self.out))
        anchor_rec = (read_anchors(Path(anchors), self.encoders, pb["anchors"]["strategies"])
                      if anchors is not None else None)
        self.body = {"plan": plan.record(), "seeds": pb["seeds"], "scenarios": pb["scenarios"],
                     "strategies": pb["strategies"], "common": pb["common"],
                     "candidates": {n: components_of(o) for n, o in pb["candidates"].items()},
                     "task_order": pb["order_invariance"]["task_order"],
                     "tuning_scenario": pb["tuning_scenario"],
                     "tuning_seeds": pb["tuning_seeds"],
                     "encoders": {e: {**old.get("encoders", {}).get(e, {}), "codes": c}
                                  for e, c in self.encoders.items()},
                     "anchors": anchor_rec, "tuning": old.get("tuning", {}),
                     "runs": old.get("runs", {}), "shuffled": old.get("shuffled", {})}
        self.chosen: dict[str, dict] = {}

    def save(self) -> None:
        write_result(self.out, FORMAT, VERSION, self.body, argv=self.argv,
                     run=end_run(self.run_rec))

    @staticmethod
    def done(key: str, cmd: list[str], store: dict) -> bool:
        """Done by an earlier, interrupted study with the same command (the continual study's
        rule)."""
        return continual_study.ContinualStudy.done(key, cmd, store)

    def run(self) -> dict:
        self.tune()
        self.choose_k()
        for enc in self.encoders:
            self.study_encoder(enc)
        self.body["order_invariance"] = order_invariance(self.body)
        self.save()
        return self.body

    def command(self, codes: str, scenario: str, strategy: str, extra: list[str], seeds: list,
                folder: Path) -> list[str]:
        return ["continual", "--codes", codes, "--scenario", scenario, "--strategy", strategy,
                *self.pb["common"], *extra, "--seeds", ",".join(map(str, seeds)),
                "--out", str(folder), "--resume", "--json"]

    # 1. the candidates, sealed
    def tuning_jobs(self) -> list[tuple[str, list[str]]]:
        pb = self.pb
        return [(f"{enc}/{strategy}/{name}",
                 self.command(codes, pb["tuning_scenario"], strategy, extra, pb["tuning_seeds"],
                              self.work / "tuning" / enc / f"{strategy}-{name}"))
                for enc, codes in self.encoders.items() for strategy in pb["strategies"]
                for name, extra in pb["candidates"].items()]

    def tune(self) -> None:
        jobs = self.tuning_jobs()
        keys = {j[0] for j in jobs}
        self.body["tuning"] = {k: v for k, v in self.body["tuning"].items() if k in keys}
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(lambda j: self.tune_one(*j), jobs))

    def tune_one(self, key: str, cmd: list[str]) -> None:
        if self.done(key, cmd, self.body["tuning"]):
            return
        res, made = continual_study.run_hybnn(cmd, sealed_env(self.env))
        assert_no_test(res, key)  # sealed: the command could not have read test
        rec = record(res, cmd, made)
        assert_no_test(rec, key)
        self.body["tuning"][key] = rec
        self.save()
        metric = HEADLINE[self.pb["tuning_scenario"]]
        print(f"candidate {key}: val {metric} {100 * res['val'][metric]['mean']:.2f}% "
              f"({made['wall_seconds']:.0f} s)", flush=True)

    def choose_k(self) -> None:
        """Per encoder and strategy, the K the plan's rule and tie-break choose, on validation."""
        metric = HEADLINE[self.pb["tuning_scenario"]]
        order = list(self.pb["candidates"])
        ks = self.body["candidates"]
        chosen = {}
        for enc in self.encoders:
            for strategy in self.pb["strategies"]:
                pick = choose({n: self.body["tuning"][f"{enc}/{strategy}/{n}"] for n in order},
                              order, lambda r: r["val"][metric]["mean"], ks.get)
                chosen[f"{enc}/{strategy}"] = {
                    "name": pick["name"], "components": ks[pick["name"]],
                    "options": self.pb["candidates"][pick["name"]], "val": pick["score"],
                    "tied": pick["tied"]}
        self.chosen = chosen
        self.body["chosen"] = {**chosen, "rule": self.pb["rule"],
                               "tie_break": self.pb["tie_break"]}
        self.save()

    # 2. the study at the chosen K: the only runs that read the test split
    def study_jobs(self, enc: str) -> list[tuple[str, str, list[str]]]:
        """(section, key, command): every strategy in every scenario ("runs"), then the shuffled
        order ("shuffled")."""
        codes, pb, oi = self.encoders[enc], self.pb, self.pb["order_invariance"]
        jobs = []
        for scenario in pb["scenarios"]:
            for strategy in pb["strategies"]:
                extra = self.chosen[f"{enc}/{strategy}"]["options"]
                jobs.append(("runs", f"{enc}/{scenario}/{strategy}", self.command(
                    codes, scenario, strategy, extra, pb["seeds"],
                    self.work / "study" / enc / f"{scenario}-{strategy}")))
        for strategy in pb["strategies"]:
            extra = [*self.chosen[f"{enc}/{strategy}"]["options"], "--task-order",
                     oi["task_order"]]
            jobs.append(("shuffled", f"{enc}/{oi['scenario']}/{strategy}", self.command(
                codes, oi["scenario"], strategy, extra, oi["seeds"],
                self.work / "shuffled" / enc / f"{oi['scenario']}-{strategy}")))
        return jobs

    def study_encoder(self, enc: str) -> None:
        t0, cpu0, load0 = time.perf_counter(), continual_study.child_cpu_seconds(), os.getloadavg()
        todo = [j for j in self.study_jobs(enc) if not self.done(j[1], j[2], self.body[j[0]])]
        # one seed per job; then each run's command with all its seeds finds every seed's
        # checkpoint finished (--resume) and only gathers them
        per_seed = [(section, key, continual_study.with_seed(cmd, str(s)))
                    for section, key, cmd in todo for s in _seeds_of(cmd)]
        made_by: dict[tuple[str, str], list[dict]] = {}
        with ThreadPoolExecutor(self.jobs) as pool:
            for section, key, made in pool.map(
                    lambda j: (j[0], j[1], continual_study.run_hybnn(j[2], self.env)[1]), per_seed):
                made_by.setdefault((section, key), []).append(made)
        for section, key, cmd in todo:
            self.gather(section, key, cmd, made_by.get((section, key), []))
        if todo:
            self.body["encoders"][enc].update({
                "study_wall_seconds": round(time.perf_counter() - t0, 1),
                "study_cpu_seconds": round(continual_study.child_cpu_seconds() - cpu0, 1),
                "load_average_start": [round(x, 2) for x in load0],
                "load_average_end": [round(x, 2) for x in os.getloadavg()],
                "jobs": self.jobs, "runs_timed": len(per_seed)})
            self.save()

    def gather(self, section: str, key: str, cmd: list[str], made: list[dict]) -> None:
        """The run's command with all its seeds: it finds them done and answers for them."""
        res, whole = continual_study.run_hybnn(cmd, self.env)
        self.body[section][key] = {**record(res, cmd, whole), "made_per_seed": made,
                                   "wall_seconds": round(sum(m["wall_seconds"] for m in made), 1)}
        self.save()
        print(f"{section} {key}: test {100 * res['test']['final_seen_acc']['mean']:.2f}% on all "
              f"seen classes", flush=True)


def _seeds_of(cmd: list[str]) -> list[str]:
    return cmd[cmd.index("--seeds") + 1].split(",")


def order_invariance(body: dict) -> dict:
    """Per shuffled run: each seed's final accuracy on all classes under the shuffled order and
    under the order 1..5 (same seeds), and the largest difference, per split."""
    out = {}
    for key, sh in body["shuffled"].items():
        run = body["runs"].get(key)
        if not run:
            continue
        by_seed = {r["seed"]: r for r in run["runs"]}
        row = {"task_order": sh["config"].get("task_order"), "seeds": [], "splits": {}}
        for split in ("val", "test"):
            pairs = [(by_seed[r["seed"]][split]["final_seen_acc"], r[split]["final_seen_acc"])
                     for r in sh["runs"] if r["seed"] in by_seed]
            row["splits"][split] = {"in_order": [a for a, _ in pairs],
                                    "shuffled": [b for _, b in pairs],
                                    "max_abs_difference": max(abs(a - b) for a, b in pairs)}
        row["seeds"] = [r["seed"] for r in sh["runs"] if r["seed"] in by_seed]
        out[key] = row
    return out


def run_forgetproof_study(plan: Plan, encoders: dict[str, str], work: Path, out: Path,
                          argv: list[str], jobs: int = 1, anchors: Path | None = None) -> dict:
    """The whole study (`ForgetproofStudy`); returns the result file's body."""
    return ForgetproofStudy(plan, encoders, work, out, argv, jobs, anchors).run()


# ── the generated blocks ──────────────────────────────────────────────────────────────────────
def _read(results_dir: Path) -> dict:
    return read_result(Path(results_dir) / FORGETPROOF, FORMAT)


def _ms(m: dict) -> str:
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _kb(n: float) -> str:
    return f"{n / 1e3:,.1f} kB"


_ANCHOR_TEXT = {"none": "none (fine-tuning)", "replay": "replay, 2,000 codes",
                "generative": "generative replay (Bernoulli mixtures)",
                "joint": "joint (upper bound)"}


def _per_task(run: dict) -> str:
    """Mean final test accuracy on each task, by task number (tasks in learned order)."""
    finals = run["per_task_final"]["test"]
    by_task = {}
    for i, cs in enumerate(run["tasks"]):
        by_task[cs[0] // 2 + 1] = sum(f[i] for f in finals) / len(finals)
    return " / ".join(f"{100 * by_task[t]:.1f}" for t in sorted(by_task))


def _study_load(r: dict) -> str:
    parts = []
    for e, enc in r["encoders"].items():
        if "study_wall_seconds" in enc:
            jobs = "one run" if enc["jobs"] == 1 else f"{enc['jobs']} runs"
            parts.append(f"{e}: {enc['study_wall_seconds'] / 60:.1f} min with {jobs} "
                         f"at a time, load average {enc['load_average_start'][0]:.1f} at "
                         f"the start and {enc['load_average_end'][0]:.1f} at the end on "
                         f"{r['machine']['cores']} cores")
    return "; ".join(parts) or "not recorded"


def _measured_rows(r: dict, enc: str, scenario: str, joint: float | None) -> list[list]:
    metric = HEADLINE[scenario]
    rows = []
    for strategy in r["strategies"]:
        run = r["runs"].get(f"{enc}/{scenario}/{strategy}")
        if not run:
            continue
        m = run["test"][metric]
        gap = f"{100 * (joint - m['mean']):+.2f}" if joint is not None else "–"
        k = r["chosen"][f"{enc}/{strategy}"]["components"]
        rows.append([enc, scenario, f"{strategy}, K = {k}",
                     "measured here", _kb(run["memory_bytes"]), _ms(m), gap,
                     _ms(run["test"]["forgetting"]), _per_task(run),
                     f"{run['train_seconds']['mean']:.1f}"])
    return rows


def _anchor_rows(r: dict, enc: str, scenario: str, joint: float | None) -> list[list]:
    metric = HEADLINE[scenario]
    rows = []
    for strategy, text in _ANCHOR_TEXT.items():
        a = (r.get("anchors") or {}).get("runs", {}).get(f"{enc}/{scenario}/{strategy}")
        if not a:
            continue
        m = a["test"][metric]
        gap = f"{100 * (joint - m['mean']):+.2f}" if joint is not None else "–"
        rows.append([enc, scenario, text, "continual.json", _kb(a["memory_bytes"]), _ms(m), gap,
                     _ms(a["test"]["forgetting"]), "–", f"{a['train_seconds']['mean']:.1f}"])
    return rows


@renderer("forgetproof-table")
def forgetproof_table(results_dir: Path) -> str:
    """At the chosen K: test accuracy, its distance below joint, forgetting, accuracy per task,
    memory and fit time, beside the continual study's anchors."""
    r = _read(results_dir)
    rows = []
    for enc in r["encoders"]:
        for scenario in r["scenarios"]:
            j = ((r.get("anchors") or {}).get("runs", {}).get(f"{enc}/{scenario}/joint"))
            joint = j["test"][HEADLINE[scenario]]["mean"] if j else None
            rows += _measured_rows(r, enc, scenario, joint) + _anchor_rows(r, enc, scenario,
                                                                           joint)
    chosen = "; ".join(f"{k}: K = {c['components']}" for k, c in r.get("chosen", {}).items()
                       if isinstance(c, dict))
    anchors = r.get("anchors") or {}
    anchor_src = (f" Rows marked continual.json are read from `{anchors['file']}` (commit "
                  f"`{str(anchors['commit'])[:12]}`), made on codes of the same encoders."
                  if anchors else "")
    return (f"Test accuracy after the fifth task, mean ± standard deviation over seeds "
            f"{', '.join(map(str, r['seeds']))}: class scenario on all ten digits, task scenario "
            f"averaged over the five tasks. \"below joint\" is the joint row's mean minus the "
            f"row's, in points (negative: above joint); accuracy per task is each task's final "
            f"test accuracy (tasks 1 to 5, mean over the seeds). Forgetting is the metric of the "
            f"other rows (best minus final accuracy per earlier task): for a learner that cannot "
            f"forget, whose models never change, it is the accuracy an earlier task loses when "
            f"later classes join the competition for its codes, so it is zero in the task "
            f"scenario. The time is the fit (mixtures) or training (networks) time per seed, "
            f"one thread per run. K chosen on validation ({chosen}){_edge_note(r)}. "
            f"{_plan_line(r)}{anchor_src} The times were taken on a shared machine: "
            f"{_study_load(r)}; the continual.json rows' times come from that study's own run, "
            f"under its own load.\n\n"
            + table(["encoder", "scenario", "method", "source", "memory", "accuracy (%)",
                     "below joint (points)", "forgetting (points)", "accuracy per task (%)",
                     "fit s per seed"], rows)
            + "\n\n" + source(FORGETPROOF, r))


def _edge_note(r: dict) -> str:
    """A note when a chosen K is the largest the plan lists (the best K may lie beyond)."""
    top = max(r["candidates"].values())
    at_top = [k for k, c in r.get("chosen", {}).items()
              if isinstance(c, dict) and c["components"] == top]
    if not at_top:
        return ""
    which = "every choice" if len(at_top) == len(r["strategies"]) * len(r["encoders"]) else \
        ", ".join(at_top)
    return (f"; for {which} the chosen K is the largest the plan lists, so a larger K might "
            f"do better on validation: this plan does not try one")


def _joint_val(r: dict, enc: str, scenario: str) -> float | None:
    """The joint run's validation accuracy on the tuning seed (the first seed's value)."""
    j = (r.get("anchors") or {}).get("runs", {}).get(f"{enc}/{scenario}/joint")
    return j["val"][HEADLINE[scenario]]["values"][0] if j else None


@renderer("forgetproof-curve")
def forgetproof_curve(results_dir: Path) -> str:
    """Validation accuracy over K (memory) per encoder and strategy, against joint's
    validation accuracy on the same seed: how close at each memory size (validation only)."""
    r = _read(results_dir)
    scenario = r["tuning_scenario"]
    metric = HEADLINE[scenario]
    rows = []
    for enc in r["encoders"]:
        joint = _joint_val(r, enc, scenario)
        for strategy in r["strategies"]:
            picked = r.get("chosen", {}).get(f"{enc}/{strategy}", {}).get("name")
            for name, k in r["candidates"].items():
                run = r["tuning"].get(f"{enc}/{strategy}/{name}")
                if not run:
                    continue
                v = run["val"][metric]["mean"]
                rows.append([enc, strategy, k, _kb(run["memory_bytes"]), f"{100 * v:.2f}",
                             f"{100 * (joint - v):+.2f}" if joint is not None else "–",
                             f"{run['train_seconds']['mean']:.1f}",
                             "chosen" if picked == name else ""])
    return (f"Validation accuracy on all ten digits after the fifth task ({scenario} scenario, "
            f"seed {', '.join(map(str, r['tuning_seeds']))}; the test split plays no part) for "
            f"each K the plan lists, with the memory it takes; \"below joint\" is the joint "
            f"network's validation accuracy on the same seed (from continual.json) minus the "
            f"row's, in points. Rule: {r['plan']['rule']}; tie-break: "
            f"{'; '.join(r['plan']['tie_break'])}.\n\n"
            + table(["encoder", "strategy", "K", "memory", "validation (%)",
                     "below joint (points)", "fit s", ""], rows)
            + "\n\n" + source(FORGETPROOF, r))


@renderer("forgetproof-order")
def forgetproof_order(results_dir: Path) -> str:
    """The same final accuracy under a shuffled task order, per seed."""
    r = _read(results_dir)
    rows = []
    for key, row in r.get("order_invariance", {}).items():
        enc, scenario, strategy = key.split("/")
        t = row["splits"]["test"]
        rows.append([enc, scenario, strategy, f"`{row['task_order']}`",
                     ", ".join(map(str, row["seeds"])),
                     ", ".join(f"{100 * a:.2f}" for a in t["in_order"]),
                     ", ".join(f"{100 * b:.2f}" for b in t["shuffled"]),
                     f"{100 * t['max_abs_difference']:.2f}",
                     f"{100 * row['splits']['val']['max_abs_difference']:.2f}"])
    return ("Order-invariance at the chosen K: each seed's test accuracy on all ten digits after "
            "the last task, with the tasks learned in the order 1 to 5 and in the plan's "
            "shuffled order, and the largest difference over the seeds (test and validation, in "
            "points):\n\n"
            + table(["encoder", "scenario", "strategy", "shuffled order", "seeds",
                     "in order (%)", "shuffled (%)", "largest difference, test", "validation"],
                    rows)
            + "\n\n" + source(FORGETPROOF, r))


def headline_row(results_dir: Path) -> tuple[str, str, str]:
    """The README headline's row (`study.headline`): per encoder, each strategy at its chosen K
    with its memory, against joint, class scenario."""
    from hybnn_cli.study.headline import file_cell

    r = _read(results_dir)
    parts = []
    for enc in r["encoders"]:
        cells = []
        for strategy in r["strategies"]:
            run = r["runs"].get(f"{enc}/class/{strategy}")
            if run:
                k = r["chosen"][f"{enc}/{strategy}"]["components"]
                cells.append(f"{strategy} (K = {k}, {_kb(run['memory_bytes'])}) "
                             f"{_ms(run['test']['final_seen_acc'])}")
        j = (r.get("anchors") or {}).get("runs", {}).get(f"{enc}/class/joint")
        if j:
            cells.append(f"joint {_ms(j['test']['final_seen_acc'])} "
                         f"({_kb(j['memory_bytes'])})")
        if cells:
            parts.append(f"`{enc}` encoder: " + ", ".join(cells))
    what = ("Learners that cannot forget (one model per class, fitted on its own codes), K chosen "
            "on validation: test accuracy (%) on all ten digits after the fifth task, class "
            f"scenario, mean ± std over seeds {', '.join(map(str, r['seeds']))}, against the joint "
            "network of the continual study")
    return what, "; ".join(parts) or "not run yet", file_cell(FORGETPROOF, r)

