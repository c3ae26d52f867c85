"""Generated text in the README and the docs: every number they quote comes from a result file.

A block of Markdown between `<!-- generated: NAME -->` and `<!-- /generated -->` is the output of
the renderer NAME (registered with `renderer`, here or in a study's module imported at the end)
on the result files in `benchmarks/results/`; each block ends with the file(s) it came from and
their commit. `hybnn report --docs` rewrites the blocks in place;
`tests/test_docs_sync.py` fails when a block differs from what its files give now. Prose outside
the blocks states no measured number.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.server_opt import is_identity
from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.fed_records import read_federated, read_priv, read_scale
from hybnn_cli.study.provenance import read_result

RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
DOCS = ("README.md", "docs/architecture.md", "docs/cli.md", "docs/continual.md", "docs/deploy.md",
        "docs/federated.md", "docs/formats.md", "docs/pretraining.md", "docs/reproduction.md",
        "docs/results.md", "benchmarks/README.md")
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)",
                   re.S)

Renderer = Callable[[Path], str]
RENDERERS: dict[str, Renderer] = {}


def renderer(name: str):
    def register(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn
    return register


def render_text(text: str, results_dir: Path = RESULTS_DIR) -> str:
    """`text` with every generated block rendered anew."""
    def sub(m: re.Match) -> str:
        name = m["name"]
        if name not in RENDERERS:
            raise HybnnError(f"unknown generated block '{name}' (known: "
                             f"{', '.join(sorted(RENDERERS))})")
        return m[1] + RENDERERS[name](Path(results_dir)).rstrip("\n") + "\n" + m[4]
    return BLOCK.sub(sub, text)


def block_names(text: str) -> list[str]:
    return [m["name"] for m in BLOCK.finditer(text)]


def update_docs(root: Path, results_dir: Path = RESULTS_DIR) -> list[Path]:
    """Rewrite the generated blocks of the docs under `root`; returns the files that changed."""
    changed = []
    for rel in DOCS:
        path = Path(root) / rel
        if not path.is_file():
            continue
        old = path.read_text()
        new = render_text(old, results_dir)
        if new != old:
            with atomic_path(path) as tmp:
                tmp.write_text(new)
            changed.append(path)
    return changed


# ── helpers ───────────────────────────────────────────────────────────────────────────────────
def _load(results_dir: Path, name: str, fmt: str) -> dict:
    return read_result(Path(results_dir) / name, fmt)


def source(name: str, rec: dict) -> str:
    dirty = ", uncommitted changes" if rec.get("dirty") else ""
    return (f"*From `benchmarks/results/{name}`: "
            f"`{rec['command']}`, commit `{str(rec['commit'])[:12]}`{dirty}, "
            f"{rec['date'][:10]}, {rec['machine']['cpu']}.*")


def pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def acc_cell(x: float | dict | None) -> str:
    """An accuracy in percent: one run's (a number, from a one-seed file) or the mean ± std over
    seeds ({"mean", "std"}, `continual.study.mean_std`)."""
    return _ms(x) if isinstance(x, dict) else pct(x)


def mean_of(x: float | dict) -> float:
    """A number, or the mean of a mean ± std."""
    return x["mean"] if isinstance(x, dict) else x


def seconds_cell(x: float | dict, std: float | None = None) -> str:
    """Seconds: a number (with its `std` when known) or a mean ± std."""
    if isinstance(x, dict):
        x, std = x["mean"], x["std"]
    return f"{x:.2f}" if std is None else f"{x:.2f} ± {std:.2f}"


def seeds_text(r: dict) -> str:
    """The seeds a file's accuracies come from: "seed 0" (a one-seed file) or "seeds 0, 1, 2
    (mean ± std over them)"."""
    if "seeds" not in r:
        return f"seed {r['seed']}"
    return f"seeds {', '.join(map(str, r['seeds']))} (mean ± std over them)"


def partial_seeds(row: dict, r: dict) -> str:
    """The note after a row over other seeds than its file's (a run not finished yet), such as
    " (seeds 0, 1)"; else ""."""
    if "seeds" not in row or row["seeds"] == r.get("seeds", row["seeds"]):
        return ""
    return f" (seeds {', '.join(map(str, row['seeds']))})"


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ── federated ─────────────────────────────────────────────────────────────────────────────────
FED = "federated.json"  # the format of `fed.results`


@renderer("federated-table")
def federated_table(results_dir: Path) -> str:
    r = read_federated(Path(results_dir) / FED)
    runs, seeds = r["runs"], r["seeds"]
    tasks = sorted({k.split("/")[1].removeprefix("task") for k in runs})
    variants = [v for v in ("iid", "dirichlet", "bits") if any(k.startswith(v + "/") for k in runs)]

    def accs(variant, task):
        return [runs[k]["test_acc"] for s in seeds
                if (k := f"{variant}/task{task}/seed{s}") in runs]

    def up_kb(variant, task):
        vals = [runs[k]["bytes"]["uplink_per_round"] for s in seeds
                if (k := f"{variant}/task{task}/seed{s}") in runs]
        return f"{statistics.fmean(vals) / 1e3:,.1f}" if vals else "–"

    rows = []
    for t in tasks:
        central = list(r["centralized_test_acc"][t].values())
        rows.append([t, r["lr_per_task"][t], mean_sd(central)]
                    + [mean_sd(accs(v, t)) for v in variants]
                    + [up_kb(v, t) for v in variants if v in ("iid", "bits")])
    names = {"iid": f"federated IID, round {r['rounds']}", "dirichlet": "Dirichlet α = 0.5",
             "bits": "`--uplink bits`"}
    header = (["task", "lr (chosen on validation)", "centralized `train-bnn`"]
              + [names[v] for v in variants]
              + [f"uplink kB/round ({'float' if v == 'iid' else 'bits'})"
                 for v in variants if v in ("iid", "bits")])
    return (f"{r['clients']} clients, {r['rounds']} rounds × 5 local epochs; test accuracy in %, "
            f"mean ± standard deviation over seeds {', '.join(map(str, seeds))}:\n\n"
            + table(header, rows) + "\n\n" + source(FED, r))


@renderer("federated-band")
def federated_band(results_dir: Path) -> str:
    """How close the IID curves stay to centralized, round by round."""
    r = read_federated(Path(results_dir) / FED)
    rows = []
    for key, run in sorted(r["runs"].items()):
        variant, task, seed = key.split("/")
        if variant != "iid":
            continue
        t, s = task.removeprefix("task"), seed.removeprefix("seed")
        central = r["centralized_test_acc"][t][s]
        gaps = [a - central for a in run["accuracy_curve"]]
        first = next((i + 1 for i, g in enumerate(gaps) if all(x >= -0.005 for x in gaps[i:])),
                     None)
        curve = run["accuracy_curve"]
        steps = [abs(b - a) for a, b in zip(curve, curve[1:], strict=False)]
        rows.append([t, s, f"{100 * gaps[-1]:+.2f}", f"{100 * min(gaps):+.2f}",
                     first if first else "never",
                     f"{100 * max(steps):.2f}" if steps else "–"])
    return (table(["task", "seed", "final − centralized (points)", "worst round − centralized",
                   "first round after which it stays within −0.5 points",
                   "largest change between rounds"], rows) + "\n\n" + source(FED, r))


# ── the scale study ───────────────────────────────────────────────────────────────────────────
SCALE = "fedscale.json"  # the format of `fed.results` (SCALE_FORMAT)


def kb(x: float) -> str:
    return f"{x / 1e3:,.1f}"


def server_step(config: dict) -> str:
    """A run's server optimizer in words (runs from before the options: plain FedAvg, constant
    η)."""
    opt, lr = config.get("server_opt", "sgd"), config.get("server_lr", 1.0)
    momentum = config.get("server_momentum", 0.0)
    schedule = config.get("server_schedule", "constant")
    if is_identity(opt, lr, momentum, schedule):
        return "FedAvg"
    eta = f"η {lr:g}" + (" cosine" if schedule == "cosine" else "")
    if opt == "sgd":
        return f"FedAvgM ({eta}, β {momentum:g})"
    return f"Fed{opt.capitalize()} ({eta}, β1 {momentum:g})"


def client_step(config: dict, lr: float) -> str:
    """A run's client optimizer, learning rate and batch (runs from before the option: Adam)."""
    opt = {"adam": "Adam", "sgd": "SGD"}[config.get("client_opt", "adam")]
    return f"{opt} {config.get('lr', lr):g}, {config.get('batch_size', 128)}"


def _first_run(row: dict) -> dict:
    """A grid row's run (version 1) or its first seed's (version 2): what all its seeds share."""
    return row["per_seed"][min(row["per_seed"], key=int)] if "per_seed" in row else row


def _within_cell(row: dict) -> str:
    """The rounds a grid row took to come within 1 point of centralized: one run's (a round or
    None) or the mean ± std over the seeds that came within, with how many did when not all."""
    within, rounds = row["rounds_to_within_1pt"], len(_first_run(row)["accuracy_curve"])
    if not isinstance(within, dict):
        return within if within else f"not in {rounds}"
    n = len(within["values"])
    if not within["reached"]:
        return f"not in {rounds}" + (f" (any of {n} seeds)" if n > 1 else "")
    cell = f"{within['mean']:.1f} ± {within['std']:.1f}"
    return cell if within["reached"] == n else f"{cell} ({within['reached']} of {n} seeds)"


def _seed_count(hits: list[bool]) -> str:
    """Whether a check held: for one run "**yes**" or "no"; over seeds, in how many."""
    if all(hits):
        return "**yes**" if len(hits) == 1 else f"**yes** ({len(hits)} of {len(hits)} seeds)"
    return "no" if not any(hits) else f"{sum(hits)} of {len(hits)} seeds"


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
        cfg = _first_run(run).get("config", {})
        rows.append([t, r.get("hidden_per_task", {}).get(t, 128), n, run["sampled_per_round"],
                     part, uplink, server_step(cfg),
                     client_step(cfg, r["lr_per_task"][t]),
                     acc_cell(central), acc_cell(run["test_acc"]) + partial_seeds(run, r),
                     acc_cell(run["best_test_acc"]), _within_cell(run),
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
        cfg = _first_run(run).get("config", {})
        first = (within or "–") if not isinstance(within, dict) else \
            ", ".join("–" if w is None else str(w) for w in within["values"])
        rows.append([task.removeprefix("task"), uplink, server_step(cfg),
                     client_step(cfg, r["lr_per_task"][task.removeprefix("task")]),
                     acc_cell(r["centralized"][task]["test_acc"]),
                     acc_cell(run["test_acc"]) + partial_seeds(run, r), first,
                     _seed_count(reached), _seed_count(last)])
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


TUNE = "fedtune.json"  # benchmarks/fedtune.py: federated settings chosen on validation


def _ms(m: dict) -> str:
    """A mean ± std over seeds, in percent."""
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _plan_line(r: dict) -> str:
    plan = r["plan"]
    where = ("a draft plan, not committed" if plan["draft"]
             else f"`{plan['path']}`, committed in `{plan['committed_in'][:12]}`")
    return f"Plan: {where}; rule: {plan['rule']}; tie-break: {'; '.join(plan['tie_break'])}."


@renderer("fedtune-screen")
def fedtune_screen(results_dir: Path) -> str:
    """The sealed screen of the federated settings: validation only, the chosen one in bold."""
    r = _load(results_dir, TUNE, "hybnn-fedtune")
    if r.get("format_version") != 2:
        return "The screen under the committed plan has not run yet.\n\n" + source(TUNE, r)
    chosen = (r.get("chosen") or {}).get("name")
    rows = []
    for key, run in r["screen"].items():
        name = key.rsplit("/", 1)[0]
        rows.append([("**" + name + "**") if name == chosen else name,
                     key.rsplit("/", 1)[1].removeprefix("seed"),
                     f"`{r['candidates'][name]}`" if r["candidates"][name] else "(defaults)",
                     pct(run["final_val_acc"]), pct(run["best_val_acc"]),
                     f"`{run['made']['commit'][:12]}`"])
    rows.sort(key=lambda x: x[3], reverse=True)
    task, n, part, uplink, rounds = r["screen_key"].split("/")
    n_val = next(iter(r["screen"].values()))["n_val"] if r["screen"] else 0
    return (f"Task {task.removeprefix('task')}, {n} clients ({part}, {uplink} uplink, "
            f"{r['fraction']:.0%} sampled per round), {rounds.removesuffix('rounds')} rounds; "
            f"every run sealed (it cannot read the test split); validation split of {n_val} codes; "
            f"chosen in bold. {_plan_line(r)}\n\n"
            + table(["candidate", "seed", "hybnn fed options", "final validation (%)",
                     "best round (%)", "commit"], rows)
            + "\n\n" + source(TUNE, r))


@renderer("fedtune-rows")
def fedtune_rows(results_dir: Path) -> str:
    """The target rows at the chosen setting over the plan's seeds, against centralized."""
    r = _load(results_dir, TUNE, "hybnn-fedtune")
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
                     _ms(central), _ms(row["test_acc"]), _ms(row["final_val_acc"]),
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


# ── differential privacy and Byzantine clients (`benchmarks/fedpriv.py`) ────────────────────
def _priv_setting(r: dict) -> str:
    sampled = max(1, round(r["fraction"] * r["clients"]))
    return (f"task {r['task']}, {r['clients']} clients, {r['fraction']:.0%} sampled per round "
            f"({sampled}), {r['rounds']} rounds × {r['local_epochs']} local epochs, learning "
            f"rate {r['lr']:g} (chosen on validation by the reproduction study), "
            f"{seeds_text(r)}, {r['engine']} engine")


def _priv_row(run: dict, r: dict) -> list[str]:
    """A setting's final and best-round accuracy and seconds per round: one run's (version 1)
    or mean ± std over its seeds (version 2)."""
    return [acc_cell(run["test_acc"]) + partial_seeds(run, r), acc_cell(run["best_test_acc"]),
            seconds_cell(run["seconds_per_round"])]


@renderer("fedpriv-dp")
def fedpriv_dp(results_dir: Path) -> str:
    name = "feddp.json"
    r = read_priv(Path(results_dir) / name)
    sampled = max(1, round(r["fraction"] * r["clients"]))
    rows = []
    if "plain" in r["runs"]:
        rows.append(["no DP", "–", "–", *_priv_row(r["runs"]["plain"], r)])
    for key, run in sorted(((k, v) for k, v in r["runs"].items() if k.startswith("dp/")),
                           key=lambda kv: float(kv[0].removeprefix("dp/"))):
        sigma = float(key.removeprefix("dp/"))
        rows.append([f"{sigma:g}", f"{r['dp_clip']:g}", f"{sigma * r['dp_clip'] / sampled:.3g}",
                     *_priv_row(run, r)])
    return (_priv_setting(r) + "; DP with client-side fixed clipping at norm "
            f"{r['dp_clip']:g} (DP coordinates):\n\n"
            + table(["noise multiplier σ", "clip C", "noise std σ·C/m", "final (%)",
                     "best round (%)", "s/round"], rows) + "\n\n" + source(name, r))


@renderer("fedpriv-byzantine")
def fedpriv_byzantine(results_dir: Path) -> str:
    name = "fedbyzantine.json"
    r = read_priv(Path(results_dir) / name)
    rows = []
    if "plain" in r["runs"]:
        rows.append(["fedavg, no attackers", *_priv_row(r["runs"]["plain"], r)])
    for key, run in sorted((k, v) for k, v in r["runs"].items() if k.startswith("byzantine/")):
        rows.append([f"{key.removeprefix('byzantine/')}, {r['byzantine_share']:.0%} attackers",
                     *_priv_row(run, r)])
    return (_priv_setting(r) + f"; {r['byzantine_share']:.0%} of the clients send "
            "sign-flipped, amplified updates (global − 10·update):\n\n"
            + table(["aggregation", "final (%)", "best round (%)", "s/round"], rows)
            + "\n\n" + source(name, r))


# ── the runtime ───────────────────────────────────────────────────────────────────────────────
BENCH = "bench.json"


@renderer("bench-table")
def bench_table(results_dir: Path) -> str:
    """Every case of `hybnn bench`: the XNOR kernel's rate and its ratios. A run with int8
    contenders (bench format 3) leads with the ratio against the fastest dense contender of any
    precision, the float32 and int8 ratios beside it; an earlier run renders as it always did."""
    r = _load(results_dir, BENCH, "hybnn-bench")
    setup = r["setup"]
    int8 = any("speedup_vs_best_dense" in c for c in r["cases"])
    rows = []
    for c in r["cases"]:
        x = c["xnor"]
        head = "us_per_sample" in x
        fastest = c.get("fastest", {})
        rows.append([f"`{c['name']}`",
                     f"{x['us_per_sample']:.3f} µs/sample" if head
                     else f"{x['ops_per_second'] / 1e9:,.0f} Gop/s",
                     *([_ratio_cell(c, "best_dense", fastest.get("dense")),
                        _ratio_cell(c, "best_float", fastest.get("float32"))] if int8 else []),
                     f"{c['speedup_vs_numpy']:.1f}×", f"{c['speedup_vs_torch']:.1f}×",
                     *([_ratio_cell(c, "best_int8", fastest.get("int8"))] if int8 else []),
                     f"{c['speedup_vs_best_hidden_matmul']:.2f}×"
                     if "speedup_vs_best_hidden_matmul" in c else "",
                     *_peak_cells(c),
                     "passed" if c["check"]["passed"] else "FAILED"])
    load = r["load_average"]
    blas = " ".join(str(b.get(k)) for b in setup["numpy_blas"][:1]
                    for k in ("internal_api", "architecture"))
    what = ("each ratio is a contender's median time over the XNOR kernel's; the first is "
            "against the fastest dense contender of any precision (float32: numpy, torch, at "
            "batch 1 the compiled float head; int8: `torch._int_mm`, ONNX Runtime's "
            "`MatMulInteger`), named in brackets" if int8 else
            "each ratio is a float32 contender's median time over the XNOR kernel's")
    return (f"Kernel variant `{setup['kernel']['variant']}` on `{setup['llvm_cpu_name']}`, "
            f"{setup['threads']} threads; {what}, timed in the same process (numpy's BLAS: "
            f"{blas or '?'}); "
            f"load average {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end; "
            f"every case's outputs checked against the {'other' if int8 else 'float'} contenders "
            f"before timing ({'all passed' if r['checks_passed'] else 'SOME FAILED'}).\n\n"
            + _roofline_text(r)
            + table(["case", "XNOR",
                     *(["× fastest dense", "× best float32"] if int8 else []),
                     "× numpy float32", "× torch float32", *(["× best int8"] if int8 else []),
                     "× float 200→128 matmul alone", "XNOR of its peak",
                     "best float32 of FMA peak", "check"], rows)
            + "".join(f"\n\n`{c['name']}`: the XNOR column is the one-code head "
                      f"(`{c['xnor']['api']}`); through `{c['xnor_run']['api']}` the same head "
                      f"took {c['xnor_run']['us_per_sample']:.3f} µs/sample"
                      + (f"; the float32 head compiled (`{c['numba_f32']['api']}`) took "
                         f"{c['numba_f32']['us_per_sample']:.3f} µs/sample" if "numba_f32" in c
                         else "") + "."
                      for c in r["cases"] if "xnor_run" in c)
            + "\n\n" + source(BENCH, r))


def _ratio_cell(case: dict, key: str, name: str | None) -> str:
    """speedup_vs_<key> with the contender behind it, or "not measured" (a run without it)."""
    x = case.get(f"speedup_vs_{key}")
    if x is None:
        return "not measured"
    return f"{x:.1f}×" + (f" ({name.replace('_', ' ')})" if name else "")


@renderer("bench-targets")
def bench_targets(results_dir: Path) -> str:
    """The kernel targets (issue 12), case by case, on the run's own figures: the 4096³ GEMM at
    90% of the XNOR peak measured next to it, 256³ and 512³ at 8× the best float32 contender
    (with the ratio of the peaks, the most any kernel could gain here, and the fraction of its
    peak the XNOR kernel would need for 8× over the float contender as fast as it ran), the head
    at batch 1 in at most 1 µs per sample."""
    r = _load(results_dir, BENCH, "hybnn-bench")
    cases = {c["name"]: c for c in r["cases"]}
    rows = []
    big = cases.get("gemm 4096")
    if big and big.get("fraction_of_peak"):
        f = big["fraction_of_peak"]["xnor"]
        rows.append(["`gemm 4096`: the XNOR kernel at ≥ 90% of its peak", f"{100 * f:.0f}%",
                     "**met**" if f >= 0.9 else "not met"])
    for size in (256, 512):
        c = cases.get(f"gemm {size}")
        if c:
            x = c["speedup_vs_best_float"]
            text = f"{x:.1f}×"
            if "roofline" in c:
                roof = c["roofline"]
                best = max(c[k]["ops_per_second"] for k in ("numpy_f32", "torch_f32"))
                need = 8 * best / roof["xnor"]["ops_per_second"]
                text += (f" (peaks' ratio here {roof['ratio_bound']:.1f}×; 8× would need the "
                         f"XNOR kernel at {100 * need:.0f}% of its peak, it ran at "
                         f"{100 * c['fraction_of_peak']['xnor']:.0f}%)")
            rows.append([f"`gemm {size}`: ≥ 8× the best float32", text,
                         "**met**" if x >= 8 else "not met"])
    one = cases.get("head 200-128-2 b=1")
    if one:
        us = one["xnor"]["us_per_sample"]
        rows.append(["`head 200-128-2 b=1`: ≤ 1 µs per sample", f"{us:.3f} µs",
                     "**met**" if us <= 1 else "not met"])
    return table(["target", "this run", ""], rows) + "\n\n" + source(BENCH, r)


GEMM_EFFICIENCY = "gemm-efficiency.json"


@renderer("gemm-efficiency")
def gemm_efficiency(results_dir: Path) -> str:
    """Each GEMM's rate over the XNOR peak measured just before each of its timing blocks
    (`benchmarks/gemm_efficiency.py`): median and quartiles, the public call and the kernel it
    calls alone."""
    r = _load(results_dir, GEMM_EFFICIENCY, "hybnn-gemm-efficiency")

    def cell(x: dict) -> str:
        f = x["fraction_of_peak"]
        return f"{100 * f['median']:.0f}% ({100 * f['q1']:.0f}–{100 * f['q3']:.0f}%)"

    rows = [[f"`gemm {x['size']}`", cell(x["xnor_gemm"]), cell(x["kernel_alone"]),
             f"{x['peak_ops_per_second']['min'] / 1e9:,.0f}–"
             f"{x['peak_ops_per_second']['max'] / 1e9:,.0f} Gop/s"] for x in r["results"]]
    c = r["config"]
    return (f"Kernel variant `{r['kernel']['variant']}`, {c['threads']} threads, {c['pairs']} "
            f"pairs per contender and size (a peak measurement, then about "
            f"{1000 * c['block_seconds']:.0f} ms of calls); median (quartiles) of the blocks' "
            "rates over the peak just before them:\n\n"
            + table(["case", "`xnor_gemm` (prepacked weights, output given)",
                     "the kernel it calls, alone", "XNOR peaks measured"], rows)
            + "\n\n" + source(GEMM_EFFICIENCY, r))


def _peak_cells(case: dict) -> list[str]:
    """The XNOR kernel's rate over the XNOR peak and the best float32 contender's over the FMA
    peak ("–" for a run made before the benchmark measured its roofline)."""
    f = case.get("fraction_of_peak")
    if not f:
        return ["–", "–"]
    return [f"{100 * f['xnor']:.0f}%", f"{100 * max(f['numpy_f32'], f['torch_f32']):.0f}%"]


def _roofline_text(r: dict) -> str:
    roof = r.get("roofline")
    if not roof:
        return ("This run predates the benchmark's roofline: no peaks were measured with it.\n\n")
    return (f"Peaks measured in the same run (`hybnn_kernels.roofline`, highest of the run): "
            f"float32 FMA {roof['fma_f32']['ops_per_second'] / 1e9:,.0f} GFLOP/s, the XNOR "
            f"tile's arithmetic {roof['xnor']['ops_per_second'] / 1e9:,.0f} Gop/s; so the XNOR "
            f"kernel can be at most {roof['ratio_bound']:.1f}× a float32 GEMM running at its peak "
            f"here; each case's fractions of peak use the highest of the peaks measured at the "
            f"start of each of its timing rounds, the moments it ran.\n\n")


E2E = "e2e.json"


@renderer("e2e")
def e2e(results_dir: Path) -> str:
    """The deploy bundle against the torch pipeline: agreement, speed, start-up, size."""
    r = _load(results_dir, E2E, "hybnn-e2e")
    ag, sp = r["agreement"], r["speed"]
    rows = []
    for name, f in ag["float"]["heads"].items():
        q = ag["int8"]["heads"][name]
        rows.append([name, f["n_task"], f"{f['labels_differing']} / "
                     f"{f['labels_differing_on_task_images']}", pct(f["accuracy_torch"]),
                     pct(f["accuracy_bundle"]), f"{q['labels_differing']} / "
                     f"{q['labels_differing_on_task_images']}", pct(q["accuracy_bundle"]),
                     f"{q['accuracy_diff_points']:+.2f}"])
    agree = table(["head", "task images", "float: labels ≠ torch's (all / task images)",
                   "torch accuracy %", "float accuracy %",
                   "int8: labels ≠ torch's (all / task images)", "int8 accuracy %",
                   "int8 − torch (points)"], rows)
    b, one = sp["batch_4096"], sp["batch_1"]

    def split(c):
        s = c["time_share"]
        return " / ".join(f"{100 * v:.0f}%" for v in s.values())

    def iqr(c, n):
        return "–".join(f"{1e6 * t / n:.0f}" for t in c["iqr_seconds"])

    best = "torch_best" in b and "torch_best" in one  # runs before it timed eager torch only

    def label(k):
        if k != "torch_best":
            return k
        return (f"torch_best ({b['torch_best_choice']['chosen']} at 4096, "
                f"{one['torch_best_choice']['chosen']} at 1)")

    perf = table(["pipeline", "batch 4096: µs per image (quartiles)", "images/s",
                  "batch 1: µs, median (quartiles)",
                  "time split at 4096 (encoder / threshold+pack / head)", "time split at 1"],
                 [[label(k), f"{b[k]['us_per_image']:.1f} ({iqr(b[k], 4096)})",
                   f"{b[k]['images_per_second']:,.0f}",
                   f"{one[k]['us_per_image']:.1f} ({iqr(one[k], 1)})", split(b[k]),
                   split(one[k])]
                  for k in ("torch", *(["torch_best"] if best else []), "bundle_float",
                            "bundle_int8")])
    flags = set(r["machine"].get("cpu_flags", []))
    if not flags & {"avx512_vnni", "avx_vnni"}:
        perf += ("\n\nThis CPU has neither AVX-512 VNNI nor AVX-VNNI (the machine record's "
                 "`cpu_flags`), the int8 dot-product instructions ONNX Runtime's quantized "
                 "convolutions are built for; without them its int8 kernels run on AVX2 "
                 "multiply-adds, and the int8 speed-up above is what remains.")
    text = (f"On the {ag['float']['heads']['all']['n']:,} MNIST test images the float bundle's "
            f"codes differ from the torch encoder's in {ag['float']['flipped_bits']} of "
            f"{ag['float']['bits']:,} bits, the int8 encoder's in {ag['int8']['flipped_bits']:,} "
            f"({ag['int8']['flipped_fraction']:.2%}). Each head's labels are compared with the "
            f"torch pipeline's on all images and on the images of its classes, where its "
            f"accuracy is measured:\n\n{agree}\n\n"
            f"Speed, head `{r['head_timed']}`, {r['threads']} threads, one process, same images "
            f"(load average {r['load_average_before'][0]:.1f} before, "
            f"{r['load_average_after'][0]:.1f} after, on a shared machine): the float bundle is "
            f"{b['speedup_float_vs_torch']:.1f}× torch at batch 4096 and "
            f"{one['speedup_float_vs_torch']:.1f}× at batch 1; int8 is "
            f"{b['speedup_int8_vs_float']:.2f}× the float bundle at batch 4096."
            + (_torch_best_text(b, one) if best else "") + f"\n\n{perf}")
    pr = r.get("processes")
    if pr:
        c, m, mem = pr["cold_start"], pr["installed_mb"], pr["predict_peak_memory"]
        imports = ", ".join(f"`{k}` {v:.2f} s" for k, v in pr["import_seconds"].items()
                            if k != "python")
        numba = {True: " (numba started)", False: " (numba not started: the numpy head)"}.get(
            c["bundle"].get("numba_imported"), "")
        text += (f"\n\nCold start (new process: import, load, classify one image; median of 3): "
                 f"bundle {c['bundle']['seconds']:.2f} s{numba}, torch "
                 f"{c['torch']['seconds']:.2f} s (import alone: {imports}; the interpreter "
                 f"alone {pr['import_seconds']['python']:.2f} s). Installed (site-packages): "
                 f"{m['runtime_only']:,.0f} MB for the runtime alone, {m['with_torch']:,.0f} MB "
                 f"with torch. Peak memory of `hybnn predict --model BUNDLE`: "
                 f"{mem['test']['peak_rss_mb']:.0f} MB on {mem['test']['images']:,} images, "
                 f"{mem['train']['peak_rss_mb']:.0f} MB on {mem['train']['images']:,}.")
    return text + "\n\n" + source(E2E, r)


def _torch_best_text(b: dict, one: dict) -> str:
    """Torch at its best (`benchmarks/e2e.py`): what was chosen at each batch, the code bits that
    differ from eager's, and the float bundle against it."""
    def flips(c):
        f = c["torch_best_choice"]["codes_vs_eager"]
        return f"{f['flipped_bits']:,} of {f['bits']:,} code bits on {f['images']:,} images"

    return (f" Torch at its best (`torch_best`: batch norm folded into the convolutions, then the "
            f"fastest of that module eager, `torch.jit.freeze` + `optimize_for_inference` and "
            f"`torch.compile`, chosen in the run at each batch: "
            f"`{b['torch_best_choice']['chosen']}` at batch 4096, "
            f"`{one['torch_best_choice']['chosen']}` at batch 1) differs from eager torch in "
            f"{flips(b)} at batch 4096 and {flips(one)} at batch 1; the float bundle is "
            f"{b['speedup_float_vs_torch_best']:.1f}× it at batch 4096 and "
            f"{one['speedup_float_vs_torch_best']:.1f}× at batch 1.")


INT8 = "int8.json"


@renderer("int8")
def int8_variants(results_dir: Path) -> str:
    """The float encoder against the int8 quantizations ONNX Runtime offers, on this CPU."""
    r = _load(results_dir, INT8, "hybnn-int8")
    def kept(v):
        return ", ".join(v) if isinstance(v, list) else v

    rows = [[name, v["format"], v["activations"], kept(v["float_nodes"]),
             f"{v['us_per_image_4096']:.1f}", f"{v['speedup_4096']:.2f}×",
             f"{v['us_batch_1']:.1f}", f"{v['speedup_1']:.2f}×",
             f"{v['flipped_bit_fraction']:.2%}"]
            for name, v in r["variants"].items()]
    flags = ", ".join(r["machine"].get("cpu_flags", [])) or "none recorded"
    return (f"Encoder alone on ONNX Runtime, {r['threads']} threads, {r['test_images']:,} MNIST "
            f"test images (CPU flags: {flags}; load average "
            f"{r['machine']['load_average'][0]:.1f}):\n\n"
            + table(["encoder", "format", "activations", "kept in float32",
                     "µs/image at 4096", "× float32", "µs at batch 1", "× float32",
                     "code bits ≠ float32's"], rows)
            + "\n\n" + source(INT8, r))



# ── the studies' blocks: importing a study's module registers its renderers (at the end: they
# import this module) ──────────────────────────────────────────────────────────────────────────
from hybnn_cli.study import (  # noqa: E402, I001
    continual_study, ddp_scaling, exactness, headline, reproduction_docs, union_encoder,  # noqa: F401
)
