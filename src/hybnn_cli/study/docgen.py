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


# ── the studies' blocks: importing a study's module registers its renderers (at the end: they
# import this module) ──────────────────────────────────────────────────────────────────────────
from hybnn_cli.study import (  # noqa: E402, I001
    bench_report, continual_study, ddp_scaling, e2e_study, exactness, gemm_peaks,  # noqa: F401
    headline, int8_encoders, reproduction_docs, union_encoder,  # noqa: F401
)
