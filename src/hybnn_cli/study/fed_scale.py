"""The scale study (`benchmarks/fedscale.py`): FedHyBNN with many clients, a fraction sampled per
round, against centralized training; it runs, records and renders its own blocks.

On one codes file, for each task, number of clients N, partition and uplink, it runs `hybnn fed
--clients N --fraction F --json` once per seed and records the global test accuracy after every
round, the rounds needed to come within 1 point of centralized `train-bnn` on the same codes (same
learning rate, `rounds × local-epochs` epochs, the same seeds; the reference is its mean over
them), the bytes per round and in total, and the seconds per round; each grid row holds its
per-seed runs and the mean ± std over the seeds (`fed_records.over_seeds`). Then the timing runs,
one each with the first seed: every engine on one configuration, with and without SecAgg+, and
the peak memory of one in-process run against the number of clients. The file
(`fed_records.SCALE_FORMAT`, version 2) is written after every run; a rerun keeps the runs made by
the same code with the same command, and a grid row re-run with other `--fed-options` moves to
"earlier". The blocks `fedscale-*` of the docs render the file.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
from pathlib import Path

from hybnn_cli.study.docgen import (
    acc_cell,
    mean_of,
    partial_seeds,
    pct,
    renderer,
    seconds_cell,
    seeds_text,
    source,
    table,
)
from hybnn_cli.study.fed_cells import (
    SCALE,
    client_step,
    first_run,
    kb,
    seed_count,
    server_step,
    within_cell,
)
from hybnn_cli.study.fed_records import (
    SCALE_FORMAT,
    SCALE_VERSION,
    curve_over_seeds,
    over_seeds,
    read_scale,
    rounds_to_within_over_seeds,
)
from hybnn_cli.study.fed_runner import FEDAVG, Runs, run_env, save_accuracy_figure, study_choices
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result


# ── the study ─────────────────────────────────────────────────────────────────────────────────
def run_scale_study(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the scale study with the options of `benchmarks/fedscale.py` (`args`), recorded as the
    command `argv`; returns the file's body."""
    study = ScaleStudy(args, argv)
    tasks = args.tasks.split(",")
    study.centralized(tasks)
    if not args.skip_grid:
        study.grid(tasks)
    study.engines()
    study.secagg()
    study.memory(tasks[0])
    study.save()
    return study.body


def kept_runs(body: dict, key: str, fed_options: str) -> dict:
    """The per-seed runs of grid row `key` that a rerun may keep. A row run with other
    --fed-options keeps none: it moves to "earlier" (key + " " + its options), so a re-run with
    new settings keeps the old numbers."""
    prev = body["runs"].get(key)
    if prev is None:
        return {}
    if prev.get("fed_options", "") != fed_options:
        body["earlier"][f"{key} {prev.get('fed_options', '')}".strip()] = body["runs"].pop(key)
        return {}
    return prev["per_seed"]


def grid_row(per_seed: dict, central: float, fed_options: str) -> dict:
    """A grid row over its seeds: `over_seeds`, the runs, the options, and the rounds each seed
    took to come within 1 point of the centralized mean `central`."""
    curves = [per_seed[s]["accuracy_curve"] for s in sorted(per_seed, key=int)]
    return {**over_seeds(per_seed), "per_seed": per_seed, "fed_options": fed_options,
            "rounds_to_within_1pt": rounds_to_within_over_seeds(curves, central, 0.01)}


def central_entry(epochs: int, per_seed: dict) -> dict:
    """The centralized reference of a task: its runs and their test accuracy, mean ± std."""
    from hybnn_cli.study.continual_runs import mean_std

    seeds = sorted(per_seed, key=int)
    return {"epochs": epochs, "seeds": [int(s) for s in seeds],
            "test_acc": mean_std([per_seed[s]["test_acc"] for s in seeds]), "per_seed": per_seed}


def previous_scale(out: Path) -> dict:
    """The scale file at `out` to resume from: {} when there is none or it is of version 1 (one
    seed), which is started over."""
    old = read_scale(out) if out.is_file() else {}
    if old and old["format_version"] != SCALE_VERSION:
        print(f"{out} is of version {old['format_version']} (one seed): started over", flush=True)
        old = {}
    return old


class ScaleStudy:
    """The scale study's state: its options, its file's body and how it runs commands."""

    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args, self.argv = args, argv
        self.this_run = start_run(args.out, argv)
        args.models.mkdir(parents=True, exist_ok=True)
        self.fed_options = (read_result(args.fed_options_from, "hybnn-fedtune")["chosen"]
                            ["options"] if args.fed_options_from else args.fed_options)
        self.seeds = [int(x) for x in args.seeds.split(",")]
        self.runs = Runs(run_env(args.threads), self.this_run)
        chosen, study_commit = study_choices(args.study)
        self.lrs = {task: c["lr"] for task, c in chosen.items()}
        self.hidden = {task: int(c.get("hidden", 128)) for task, c in chosen.items()}
        old = previous_scale(args.out)
        self.body = {
            "codes": str(args.codes), "fraction": args.fraction, "alpha": args.alpha,
            "rounds": args.rounds, "local_epochs": args.local_epochs, "seeds": self.seeds,
            "timing_seed": self.seeds[0], "threads": args.threads, "lr_per_task": self.lrs,
            "hidden_per_task": self.hidden, "study_commit": study_commit,
            "fed_options": self.fed_options,
            **{k: old.get(k, {}) for k in ("centralized", "runs", "engines", "secagg", "memory",
                                           "earlier")}}

    def save(self) -> None:
        write_result(self.args.out, SCALE_FORMAT, SCALE_VERSION, self.body, argv=self.argv,
                     run=end_run(self.this_run))
        plot(self.body, self.args.figure)

    def fed_cmd(self, task: str, clients: int, partition: str, uplink: str, rounds: int,
                seed: int, engine: str = "inprocess", secagg: bool = False,
                fraction: float | None = None, extra: str = "") -> list[str]:
        a = self.args
        fraction = a.fraction if fraction is None else fraction
        return ["fed", *FEDAVG, "--codes", str(a.codes), "--task", task,
                "--hidden", str(self.hidden[task]), "--clients", str(clients),
                "--fraction", repr(fraction), "--rounds", str(rounds),
                "--local-epochs", str(a.local_epochs), "--lr", repr(self.lrs[task]),
                "--partition", partition, "--alpha", repr(a.alpha), "--uplink", uplink,
                "--engine", engine, *(["--secagg"] if secagg else []), "--seed", str(seed),
                "--threads", str(a.threads), "--out", str(a.models / "last.pt"),
                *shlex.split(extra), "--json"]

    def centralized(self, tasks: list[str]) -> None:
        """The centralized reference on the same codes, per task and seed."""
        a, epochs = self.args, self.args.rounds * self.args.local_epochs
        for task in tasks:
            kept = self.body["centralized"].get(f"task{task}", {}).get("per_seed", {})
            per_seed = {}
            for seed in self.seeds:
                cmd = ["train-bnn", "--codes", str(a.codes), "--task", task,
                       "--hidden", str(self.hidden[task]), "--epochs", str(epochs),
                       "--lr", repr(self.lrs[task]), "--seed", str(seed),
                       "--threads", str(a.threads),
                       "--out", str(a.models / f"central-task{task}-seed{seed}.pt"), "--json"]
                res, ran = self.runs.run(cmd, kept.get(str(seed)))
                per_seed[str(seed)] = {k: res[k] for k in ("test_acc", "command",
                                                           "wall_seconds", "run")}
                self.body["centralized"][f"task{task}"] = central_entry(epochs, per_seed)
                if ran:
                    self.save()
                    print(f"centralized task{task} seed {seed}: {100 * res['test_acc']:.2f}% "
                          f"({res['wall_seconds']:.0f} s)", flush=True)

    def grid(self, tasks: list[str]) -> None:
        """Each grid row (task, clients, partition, uplink) once per seed."""
        a = self.args
        for task, n, part, uplink in [
                (t, int(n), part, up) for t in tasks for part in a.partitions.split(",")
                for up in a.uplinks.split(",") for n in a.clients.split(",")]:
            key = f"task{task}/{n}/{part}/{uplink}"
            central = self.body["centralized"][f"task{task}"]["test_acc"]["mean"]
            kept = kept_runs(self.body, key, self.fed_options)
            per_seed = {}
            for seed in self.seeds:
                cmd = self.fed_cmd(task, n, part, uplink, a.rounds, seed, extra=self.fed_options)
                per_seed[str(seed)], ran = self.runs.run(cmd, kept.get(str(seed)))
                self.body["runs"][key] = grid_row(per_seed, central, self.fed_options)
                if ran:
                    self.save()
                    r = per_seed[str(seed)]
                    print(f"{key} seed {seed}: {100 * r['test_acc']:.2f}%, "
                          f"{r['seconds_per_round']:.2f} s/round ({r['wall_seconds']:.0f} s)",
                          flush=True)
            row = self.body["runs"][key]
            acc, within = row["test_acc"], row["rounds_to_within_1pt"]
            print(f"{key}: {100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}% over seeds "
                  f"{a.seeds}, within 1 point in {within['reached']} of them", flush=True)

    def engines(self) -> None:
        """The seconds per round of every engine on one configuration: one run each."""
        task, n, part, uplink, rounds = self.args.engine_config.split("/")
        for engine in self.args.engines.split(","):
            key = f"{engine}/task{task}/{n}/{part}/{uplink}/{rounds}"
            cmd = self.fed_cmd(task, int(n), part, uplink, int(rounds), self.seeds[0],
                               engine=engine)
            self.body["engines"][key], ran = self.runs.run(cmd, self.body["engines"].get(key))
            if ran:
                self.save()
                r = self.body["engines"][key]
                print(f"{key}: {r['seconds_per_round']:.2f} s/round, "
                      f"{r['wall_seconds']:.0f} s in all", flush=True)

    def secagg(self) -> None:
        """One configuration with and without SecAgg+, with each uplink: one run each."""
        task, n, part, rounds = self.args.secagg_config.split("/")
        for uplink in self.args.uplinks.split(","):
            for secagg in (False, True):
                key = (f"task{task}/{n}/{part}/{uplink}/{rounds}/"
                       + ("secagg" if secagg else "plain"))
                cmd = self.fed_cmd(task, int(n), part, uplink, int(rounds), self.seeds[0],
                                   secagg=secagg)
                self.body["secagg"][key], ran = self.runs.run(cmd, self.body["secagg"].get(key))
                if ran:
                    self.save()
                    r = self.body["secagg"][key]
                    print(f"{key}: {100 * r['test_acc']:.2f}%, "
                          f"{r['uplink_per_round'] / 1e3:,.1f} kB up/round, "
                          f"{r['seconds_per_round']:.2f} s/round", flush=True)

    def memory(self, task: str) -> None:
        """The peak memory of one in-process run per number of clients, the sampled count
        fixed."""
        a = self.args
        for n in (int(c) for c in a.memory_clients.split(",") if c):
            key = f"task{task}/{n}/iid/float/{a.memory_sampled}/{a.memory_rounds}"
            cmd = self.fed_cmd(task, n, "iid", "float", a.memory_rounds, self.seeds[0],
                               fraction=a.memory_sampled / n)
            self.body["memory"][key], ran = self.runs.run(cmd, self.body["memory"].get(key),
                                                          peak={})
            if ran:
                self.save()
                r = self.body["memory"][key]
                print(f"memory {key}: peak RSS {r['peak_rss'] / 2**20:,.0f} MiB "
                      f"({r['wall_seconds']:.0f} s)", flush=True)


def plot(data: dict, path: Path) -> None:
    """Accuracy per round, mean over seeds, one panel per task and partition, at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(k.split("/")[0], k.split("/")[2]) for k in data["runs"]})
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, partition) in zip(axes[0], panels, strict=True):
        central = data["centralized"][task]["test_acc"]["mean"]
        ax.axhline(100 * central, color="k", lw=0.8, label="centralized")
        ax.axhline(100 * (central - 0.01), color="k", lw=0.8, ls=":", label="centralized − 1")
        for key, row in sorted(data["runs"].items()):
            t, n, part, uplink = key.split("/")
            if (t, part) != (task, partition):
                continue
            curve = [100 * a for a in curve_over_seeds(row)[0]]
            ax.plot(range(1, len(curve) + 1), curve, lw=1,
                    ls="-" if uplink == "float" else "--", label=f"{n} {uplink}")
        ax.set_title(f"{task}, {partition}, {data['fraction']:.0%} sampled, mean over seeds "
                     f"{', '.join(map(str, data['seeds']))}", fontsize=8)
        ax.set_xlabel("round")
        ax.set_ylim(max(50, 100 * central - 15), 100)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    save_accuracy_figure(fig, axes[0][0], path)


# ── its blocks ────────────────────────────────────────────────────────────────────────────────
def _scale_settings(r: dict) -> str:
    """The grid's settings, said once above its tables."""
    same = ("with the same learning rate" if "seeds" not in r
            else "with the same learning rate and seeds, the mean over them the reference")
    return (f"{r['fraction']:.0%} of the clients sampled per round, {r['rounds']} rounds × "
            f"{r['local_epochs']} local epochs, {seeds_text(r)} (Dirichlet: α = {r['alpha']}); "
            f"centralized: `train-bnn` for {r['rounds'] * r['local_epochs']} epochs on the same "
            f"codes {same}")


@renderer("fedscale-table")
def fedscale_table(results_dir: Path) -> str:
    """The scale grid: one run per row (version 1) or mean ± std over the seeds (version 2)."""
    r = read_scale(Path(results_dir) / SCALE)
    rows = []
    for key, run in sorted(r["runs"].items(),
                           key=lambda kv: (kv[0].split("/")[0], kv[0].split("/")[2],
                                           kv[0].split("/")[3], int(kv[0].split("/")[1]))):
        task, n, part, uplink = key.split("/")
        central = r["centralized"][task]["test_acc"]
        t = task.removeprefix("task")
        cfg = first_run(run).get("config", {})
        rows.append([t, r.get("hidden_per_task", {}).get(t, 128), n, run["sampled_per_round"],
                     part, uplink, server_step(cfg),
                     client_step(cfg, r["lr_per_task"][t]),
                     acc_cell(central), acc_cell(run["test_acc"]) + partial_seeds(run, r),
                     acc_cell(run["best_test_acc"]), within_cell(run),
                     kb(run["uplink_per_round"]), kb(run["downlink_per_round"]),
                     f"{(run['uplink_total'] + run['downlink_total']) / 1e6:,.1f}",
                     seconds_cell(run["seconds_per_round"])])
    header = ["task", "hidden", "clients", "sampled per round", "partition", "uplink",
              "server step", "client optimizer, lr, batch", "centralized (%)", "final (%)",
              "best round (%)", "rounds to within 1 point of centralized", "up kB/round",
              "down kB/round", "MB in all", "s/round (in-process)"]
    return (_scale_settings(r) + ":\n\n" + table(header, rows) + "\n\n" + source(SCALE, r))


@renderer("fedscale-targets")
def fedscale_targets(results_dir: Path, clients: int = 1000, by_round: int = 100) -> str:
    """The scale target, stated and then checked row by row, with `clients` IID clients: whether
    the global model came within 1 point of centralized in some round up to `by_round`, and
    whether the model after round `by_round` (the run's last) is within 1 point."""
    r = read_scale(Path(results_dir) / SCALE)
    rows = []
    for key, run in sorted(r["runs"].items()):
        task, n, part, uplink = key.split("/")
        if int(n) != clients or part != "iid" or task == "taskall":
            continue
        within = run["rounds_to_within_1pt"]
        central = mean_of(r["centralized"][task]["test_acc"])
        runs = [run["per_seed"][s] for s in sorted(run["per_seed"], key=int)] \
            if "per_seed" in run else [run]
        firsts = within["values"] if isinstance(within, dict) else [within]
        reached = [w is not None and w <= by_round for w in firsts]
        last = [len(x["accuracy_curve"]) == by_round and x["test_acc"] >= central - 0.01
                for x in runs]
        cfg = first_run(run).get("config", {})
        first = (within or "–") if not isinstance(within, dict) else \
            ", ".join("–" if w is None else str(w) for w in within["values"])
        rows.append([task.removeprefix("task"), uplink, server_step(cfg),
                     client_step(cfg, r["lr_per_task"][task.removeprefix("task")]),
                     acc_cell(r["centralized"][task]["test_acc"]),
                     acc_cell(run["test_acc"]) + partial_seeds(run, r), first,
                     seed_count(reached), seed_count(last)])
    over = ("" if "seeds" not in r else
            f" Over {seeds_text(r)}: the first round within 1 point per seed, and in how many "
            f"seeds each check held.")
    return (f"Target: with {clients:,} IID clients ({r['fraction']:.0%} sampled per round), the "
            f"global model within 1 point of centralized `train-bnn` by round {by_round}, on "
            f"each task below.{over}\n\n"
            + table(["task", "uplink", "server step", "client optimizer, lr, batch",
                     "centralized (%)", f"round {by_round} (%)",
                     "first round within 1 point", f"reached by round {by_round}",
                     f"round {by_round}'s model within 1 point"], rows)
            + "\n\n" + source(SCALE, r))


@renderer("fedscale-engines")
def fedscale_engines(results_dir: Path) -> str:
    r = read_scale(Path(results_dir) / SCALE)
    rows = []
    for key, run in sorted(r["engines"].items()):
        engine, task, n, part, uplink, rounds = key.split("/")
        rows.append([engine, task.removeprefix("task"), n, run["sampled_per_round"], part, uplink,
                     rounds, seconds_cell(run["seconds_per_round"],
                                          run.get("seconds_per_round_std")),
                     f"{run['wall_seconds']:.0f}", pct(run["test_acc"])])
    return (_timing_note(r) + table(["engine", "task", "clients", "sampled per round",
                                     "partition", "uplink", "rounds", "s/round",
                                     "wall s (whole command)", "final (%)"], rows)
            + "\n\n" + source(SCALE, r))


def _timing_note(r: dict) -> str:
    """Above the timing tables of a file over seeds: one run each, the spread over rounds."""
    if "timing_seed" not in r:
        return ""
    return (f"Timings: one run each, seed {r['timing_seed']}; s/round: mean ± std over the run's "
            f"rounds; its accuracy one seed's.\n\n")


@renderer("fedscale-secagg")
def fedscale_secagg(results_dir: Path) -> str:
    r = read_scale(Path(results_dir) / SCALE)
    rows = []
    for key, run in sorted(r["secagg"].items()):
        task, n, part, uplink, rounds, mode = key.split("/")
        rows.append([task.removeprefix("task"), n, run["sampled_per_round"], part, uplink, rounds,
                     "SecAgg+" if mode == "secagg" else "plain", pct(run["test_acc"]),
                     kb(run["uplink_per_round"]), kb(run["downlink_per_round"]),
                     seconds_cell(run["seconds_per_round"], run.get("seconds_per_round_std"))])
    return (_timing_note(r)
            + table(["task", "clients", "sampled per round", "partition", "uplink", "rounds",
                   "aggregation", "final (%)", "up kB/round", "down kB/round", "s/round"], rows)
            + "\n\n" + source(SCALE, r))


@renderer("fedscale-memory")
def fedscale_memory(results_dir: Path) -> str:
    """Peak memory of one in-process run against the number of clients, the sampled count fixed."""
    r = read_scale(Path(results_dir) / SCALE)
    runs = r.get("memory", {})
    if not runs:
        return "No memory run in the file yet.\n\n" + source(SCALE, r)
    rows = []
    for key, run in sorted(runs.items(), key=lambda kv: int(kv[0].split("/")[1])):
        task, n, _, _, sampled, rounds = key.split("/")
        rows.append([task.removeprefix("task"), f"{int(n):,}", sampled, rounds,
                     f"{run['peak_rss'] / 2**20:,.0f}", f"{run['wall_seconds']:.0f}"])
    return (table(["task", "clients", "sampled per round", "rounds",
                   "peak memory of the process (MiB)", "wall s"], rows)
            + "\n\n" + source(SCALE, r))


@renderer("fedscale-million")
def fedscale_million(results_dir: Path, clients: int = 1_000_000) -> str:
    """Bytes per round and server memory at a million clients, from the measured bytes per
    sampled client of the largest runs (the server holds one round's replies and the model)."""
    r = read_scale(Path(results_dir) / SCALE)
    if not r["runs"]:
        return "No scale run in the file yet.\n\n" + source(SCALE, r)
    largest = max(int(k.split("/")[1]) for k in r["runs"])
    sampled = round(r["fraction"] * clients)
    rows = []
    hidden = r.get("hidden_per_task", {})
    widths = sorted({int(hidden.get(k.split("/")[0].removeprefix("task"), 128))
                     for k in r["runs"]})
    for width, uplink in ((w, u) for w in widths for u in ("float", "bits")):
        # bytes depend on the model's size: average only over runs of one hidden width
        runs = [run for k, run in r["runs"].items()
                if int(k.split("/")[1]) == largest and k.endswith("/" + uplink)
                and int(hidden.get(k.split("/")[0].removeprefix("task"), 128)) == width]
        if not runs:
            continue
        up = statistics.fmean(run["uplink_per_round"] / run["sampled_per_round"] for run in runs)
        down = statistics.fmean(run["downlink_per_round"] / run["sampled_per_round"]
                                for run in runs)
        rows.append([width, uplink, f"{up:,.0f}", f"{down:,.0f}", f"{sampled:,}",
                     f"{sampled * up / 1e9:,.2f}", f"{sampled * down / 1e9:,.2f}",
                     f"{sampled * up / 1e9:,.2f}"])
    return (f"Per sampled client, measured at {largest:,} clients; at {clients:,} clients with "
            f"{r['fraction']:.0%} sampled per round:\n\n"
            + table(["hidden", "uplink", "up bytes per client", "down bytes per client",
                     "clients per round", "up GB per round", "down GB per round",
                     "server memory for one round's replies (GB)"], rows)
            + "\n\n" + source(SCALE, r))
