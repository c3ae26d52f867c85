"""The bits-curve study: how many latent bits HyBNN needs. For each dataset of a plan committed
before it runs (`benchmarks/plans/bits.json`), each number of bits and each seed (a *point*), a
VAE is pretrained on that dataset with that many bits, the dataset's codes are extracted, and a
BNN is trained on them for every task of the plan (all classes, the five class pairs) and
exported as a deploy head. Nothing is chosen: every point is reported, and the test split is read
once per BNN, by `train-bnn`'s final evaluation. Its result file, its figure and its generated
block.

Every stage is a `hybnn` command with `--json` (`pretrain-vae --latent-bits B`, `extract`,
`train-bnn`, `export`), so every number comes from a command anyone can rerun; `jobs` points run
at a time, each command with one thread (`threads.child_env(1)`). The result file (provenance
header with the load when the study started; the plan's record; each stage with the commit,
machine load and times it ran at) is written after every stage. A rerun adds only what is
missing (a stage is done when the file holds it made by the same command, the continual study's
rule); an interrupted VAE resumes from its last saved epoch (`pretrain-vae --resume`), one whose
every epoch is saved but whose record is missing is trained again from the start; a result file
made under another version of the plan is refused. `benchmarks/bits.py` runs it; `--quick`
(`quick_plan`) runs a tiny draft of the plan that publishes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
import statistics
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import Plan, check_same_plan
from hybnn_cli.study import continual_study  # run_hybnn: one `hybnn ... --json` with its record
from hybnn_cli.study.docgen import _plan_line, renderer, source, table
from hybnn_cli.study.provenance import RESULTS_DIR, end_run, read_result, start_run, write_result
from hybnn_cli.threads import child_env

FORMAT = "hybnn-bits"
VERSION = 1
BITS = "bits.json"
PLAN = "benchmarks/plans/bits.json"
COMMAND = "python benchmarks/bits.py --jobs 2"  # the command the docs name until the study ran
HEAD_ARRAYS = ("fc1/weights", "fc1/thresholds", "fc2/weights", "fc2/score_table")
# --quick: the plan's commands at tiny sizes (the later value of an option counts)
QUICK = {"bits": [16, 40], "seeds": [0], "tasks": ["all", "1"],
         "pretrain_vae": ["--epochs", "1", "--train-limit", "300"],
         "extract": ["--limit", "300"], "train_bnn": ["--epochs", "1"]}


def quick_plan(plan: Plan, datasets: list[str] | None = None) -> Plan:
    """A draft of `plan` at tiny sizes (`QUICK`; only `datasets` when given), for smoke tests:
    it is recorded as a draft, with the SHA-256 of its own body."""
    body = dict(plan.body)
    for key in ("bits", "seeds", "tasks"):
        body[key] = QUICK[key]
    for key in ("pretrain_vae", "extract", "train_bnn"):
        body[key] = [*plan.body[key], *QUICK[key]]
    if datasets:
        body["datasets"] = datasets
    raw = json.dumps(body, sort_keys=True).encode()
    return Plan(plan.path, body, hashlib.sha256(raw).hexdigest(), None)


def code_bytes(bits: int) -> int:
    """A code packed to bytes: ceil(bits / 8)."""
    return math.ceil(bits / 8)


def code_word_bytes(bits: int) -> int:
    """A code as the codes file stores it, in uint64 words: ceil(bits / 64) · 8."""
    return 8 * math.ceil(bits / 64)


def option(cmd: list[str], name: str) -> str | None:
    """The value of the last `name` option of a command (None when absent)."""
    values = [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == name]
    return values[-1] if values else None


def head_bytes(path: Path) -> dict:
    """The bytes of an exported deploy head's arrays (`HEAD_ARRAYS`) and their sum."""
    import h5py

    with h5py.File(path, "r") as f:
        sizes = {name: int(f[name].nbytes) for name in HEAD_ARRAYS}
    return {"arrays": sizes, "total": sum(sizes.values())}


def vae_epochs_saved(path: Path) -> int:
    """Epochs a VAE checkpoint holds (0 when there is none)."""
    if not path.is_file():
        return 0
    from hybnn_cli.models import checkpoint as ck

    return len(ck.load_checkpoint(path, ck.VAE_FORMAT)["metrics"]["history"])


class BitsStudy:
    """One run of the study: `run()` makes every missing stage of every point and saves the
    result file `out` (recorded as made by the command `argv`) after each."""

    def __init__(self, plan: Plan, work: Path, out: Path, argv: list[str], jobs: int = 1,
                 figure: Path | None = None):
        self.plan, self.pb = plan, plan.body
        self.work, self.out, self.argv, self.jobs = Path(work), Path(out), argv, jobs
        self.figure = figure
        self.env = child_env(1)
        self.lock = threading.Lock()
        self.run_rec = start_run(self.out, argv)
        old = read_result(self.out, FORMAT) if self.out.is_file() else {}
        if old.get("format_version") != VERSION:
            old = {}
        check_same_plan(old, plan, str(self.out))
        pb = self.pb
        self.body = {"plan": plan.record(), "datasets": pb["datasets"], "bits": pb["bits"],
                     "seeds": pb["seeds"], "tasks": pb["tasks"],
                     "commands": {k: pb[k] for k in ("pretrain_vae", "extract", "train_bnn",
                                                     "export")},
                     "points": old.get("points", {}), "curve": {}}

    def put(self, where: dict, key: str, value: dict) -> None:
        """Store a stage's record (under the lock: another point's thread may be saving) and
        save the result file."""
        with self.lock:
            where[key] = value
        self.save()

    def save(self) -> None:
        with self.lock:
            self.body["curve"] = curve(self.body)
            write_result(self.out, FORMAT, VERSION, self.body, argv=self.argv,
                         run=end_run(self.run_rec))

    def points(self) -> list[tuple[str, int, int]]:
        """Seed by seed (every dataset and bits of the first seed, then the next): a study
        stopped part way (it takes several CPU-hours) has the whole curve for its first seeds."""
        return [(d, b, s) for s in self.pb["seeds"] for d in self.pb["datasets"]
                for b in self.pb["bits"]]

    def run(self) -> dict:
        todo = self.points()
        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(lambda p: self.point(*p), todo))
        self.save()
        if self.figure is not None:
            draw_figure(self.body, self.figure)
        return self.body

    # the commands of a point
    def folder(self, dataset: str, bits: int, seed: int) -> Path:
        return self.work / dataset / f"bits{bits}" / f"seed{seed}"

    def vae_command(self, dataset: str, bits: int, seed: int) -> list[str]:
        return ["pretrain-vae", "--dataset", dataset, "--latent-bits", str(bits), "--seed",
                str(seed), *self.pb["pretrain_vae"],
                "--out", str(self.folder(dataset, bits, seed) / "vae.pt"), "--json"]

    def extract_command(self, dataset: str, bits: int, seed: int) -> list[str]:
        f = self.folder(dataset, bits, seed)
        return ["extract", "--vae", str(f / "vae.pt"), "--dataset", dataset,
                *self.pb["extract"], "--out", str(f / "codes.h5"), "--json"]

    def bnn_command(self, dataset: str, bits: int, seed: int, task: str) -> list[str]:
        f = self.folder(dataset, bits, seed)
        return ["train-bnn", "--codes", str(f / "codes.h5"), "--task", task, "--seed",
                str(seed), *self.pb["train_bnn"], "--out", str(f / f"bnn-{task}.pt"), "--json"]

    def export_command(self, dataset: str, bits: int, seed: int, task: str) -> list[str]:
        f = self.folder(dataset, bits, seed)
        return ["export", str(f / f"bnn-{task}.pt"), *self.pb["export"],
                "--out", str(f / f"head-{task}.h5"), "--json"]

    # the stages of a point
    def point(self, dataset: str, bits: int, seed: int) -> None:
        key = point_key(dataset, bits, seed)
        with self.lock:
            rec = self.body["points"].setdefault(key, {
                "dataset": dataset, "bits": bits, "seed": seed, "code_bytes": code_bytes(bits),
                "code_word_bytes": code_word_bytes(bits), "tasks": {}})
        if not self.missing_tasks(rec, dataset, bits, seed):
            return
        self.codes(rec, dataset, bits, seed)
        for task in self.missing_tasks(rec, dataset, bits, seed):  # all, after a new encoder
            self.task(rec, dataset, bits, seed, task)

    def missing_tasks(self, rec: dict, dataset: str, bits: int, seed: int) -> list[str]:
        return [t for t in self.pb["tasks"]
                if not _done(rec["tasks"].get(t), self.bnn_command(dataset, bits, seed, t))]

    def codes(self, rec: dict, dataset: str, bits: int, seed: int) -> None:
        """The point's codes file (and its VAE first when needed), unless done and present."""
        f = self.folder(dataset, bits, seed)
        cmd = self.extract_command(dataset, bits, seed)
        if _done(rec.get("codes"), cmd) and (f / "codes.h5").is_file():
            return
        vae_cmd = self.vae_command(dataset, bits, seed)
        if not (_done(rec.get("vae"), vae_cmd) and (f / "vae.pt").is_file()):
            self.vae(rec, vae_cmd, f / "vae.pt")
        res, made = continual_study.run_hybnn(cmd, self.env)
        if res["encoder_sha256"] != rec["vae"]["encoder_sha256"] or res["n_bits"] != bits:
            raise HybnnError(f"{f / 'codes.h5'}: made by another encoder than the point's VAE")
        self.put(rec, "codes", {"command": _text(cmd), "made": made,
                                **{k: res[k] for k in ("n_bits", "n_train", "n_test",
                                                       "encoder_sha256")}})
        print(f"codes {point_key(dataset, bits, seed)}: {res['n_train']} train, "
              f"{res['n_test']} test ({made['wall_seconds']:.0f} s)", flush=True)

    def vae(self, rec: dict, cmd: list[str], path: Path) -> None:
        """Pretrain the point's VAE: resumed from its last saved epoch when an earlier run was
        interrupted; trained again from the start when its record is missing."""
        saved = vae_epochs_saved(path)
        resume = 0 < saved < int(option(cmd, "--epochs"))
        res, made = continual_study.run_hybnn(cmd + (["--resume", str(path)] if resume else []),
                                              self.env)
        history, sha = res["history"], _sha_of(path)
        if rec.get("vae", {}).get("encoder_sha256", sha) != sha:
            with self.lock:  # the BNNs of the point's earlier encoder are of no use now
                rec["tasks"] = {}
        self.put(rec, "vae", {
            "command": _text(cmd), "made": {**made, "resumed_after_epochs": saved * resume},
            "encoder_sha256": sha, "epochs": len(history),
            "test_recon": history[-1]["test_recon"], "test_kl": history[-1]["test_kl"],
            "train_recon": history[-1].get("train_recon"),
            "epoch_seconds": [m["epoch_seconds"] for m in history]})
        print(f"VAE {rec['dataset']}/bits{rec['bits']}/seed{rec['seed']}: test recon "
              f"{rec['vae']['test_recon']:.1f} nats ({made['wall_seconds']:.0f} s)", flush=True)

    def task(self, rec: dict, dataset: str, bits: int, seed: int, task: str) -> None:
        """Train the task's BNN (its one reading of test is train-bnn's final evaluation) and
        export its deploy head."""
        cmd = self.bnn_command(dataset, bits, seed, task)
        res, made = continual_study.run_hybnn(cmd, self.env)
        exp = self.export_command(dataset, bits, seed, task)
        head, made_head = continual_study.run_hybnn(exp, self.env)
        if head["encoder_sha256"] != rec["codes"]["encoder_sha256"]:
            raise HybnnError(f"{exp[1]}: its head was trained on codes of another encoder")
        self.put(rec["tasks"], task, {
            "command": _text(cmd), "made": made,
            **{k: res[k] for k in ("classes", "n_train", "n_val", "n_test", "train_acc",
                                   "val_acc", "test_acc", "train_seconds")},
            "epochs": len(res["history"]), "encoder_sha256": head["encoder_sha256"],
            "head": {"command": _text(exp), "made": made_head,
                     "shape": [head["n_bits"], head["hidden"], head["n_classes"]],
                     "bytes": head_bytes(Path(head["out"]))}})
        print(f"BNN {point_key(dataset, bits, seed)} task {task}: val {res['val_acc']:.2%}, "
              f"test {res['test_acc']:.2%} ({made['wall_seconds']:.0f} s)", flush=True)


def point_key(dataset: str, bits: int, seed: int) -> str:
    return f"{dataset}/bits{bits}/seed{seed}"


def _text(cmd: list[str]) -> str:
    return "hybnn " + shlex.join(cmd)


def _done(rec: dict | None, cmd: list[str]) -> bool:
    """Done by an earlier run of the study with the same command."""
    return bool(rec) and rec.get("command") == _text(cmd)


def _sha_of(vae: Path) -> str:
    from hybnn_cli.models import checkpoint as ck

    return str(ck.load_checkpoint(vae, ck.VAE_FORMAT)["encoder_sha256"])


def run_bits_study(plan: Plan, work: Path, out: Path, argv: list[str], jobs: int = 1,
                   figure: Path | None = None) -> dict:
    """The whole study (`BitsStudy`); returns the result file's body."""
    return BitsStudy(plan, work, out, argv, jobs, figure).run()


def check_unpublished(plan: Plan, paths: list[Path]) -> None:
    """A draft plan publishes nothing: refuse a path under benchmarks/results/."""
    inside = [p for p in paths if p is not None and RESULTS_DIR in Path(p).resolve().parents]
    if plan.commit is None and inside:
        raise HybnnError(f"a draft or --quick study publishes nothing: {inside[0]} is under "
                         f"benchmarks/results/; give --out and --figure elsewhere")


# ── the curve: mean ± std over seeds per dataset and bits ─────────────────────────────────────
def _ms(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values, "n": len(values)}


def curve(body: dict) -> dict:
    """Per dataset and bits, over the seeds done so far: the VAE's test reconstruction, each
    task's validation and test accuracy, the head bytes per task, the code bytes."""
    out: dict = {}
    for d in body["datasets"]:
        for b in body["bits"]:
            pts = [body["points"].get(point_key(d, b, s)) for s in body["seeds"]]
            pts = [p for p in pts if p]
            row = {"code_bytes": code_bytes(b), "code_word_bytes": code_word_bytes(b),
                   "seeds_vae": [p["seed"] for p in pts if "vae" in p], "tasks": {}}
            recon = [p["vae"]["test_recon"] for p in pts if "vae" in p]
            if recon:
                row["test_recon"] = _ms(recon)
            for t in body["tasks"]:
                runs = [p["tasks"][t] for p in pts if t in p["tasks"]]
                if runs:
                    row["tasks"][t] = {
                        "seeds": [p["seed"] for p in pts if t in p["tasks"]],
                        "val_acc": _ms([r["val_acc"] for r in runs]),
                        "test_acc": _ms([r["test_acc"] for r in runs]),
                        "head_bytes": runs[0]["head"]["bytes"]["total"]}
            out.setdefault(d, {})[str(b)] = row
    return out


# ── the figure ────────────────────────────────────────────────────────────────────────────────
def draw_figure(body: dict, path: Path) -> None:
    """Test accuracy (all classes, and the mean of the pairs) and test reconstruction against
    bits, log x axis, one line per dataset, error bars one std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybnn_cli.fileio import atomic_path

    fig, (acc_ax, rec_ax) = plt.subplots(1, 2, figsize=(10, 4))
    pairs = [t for t in body["tasks"] if t != "all"]
    for d, rows in body["curve"].items():
        bits = [int(b) for b in rows]
        for task, style in (("all", "-o"), ("pairs", "--s")):
            xs, ys, es = _acc_series(rows, bits, task, pairs)
            if xs:
                acc_ax.errorbar(xs, ys, es, fmt=style, capsize=3,
                                label=f"{d}, {'all classes' if task == 'all' else 'pairs'}")
        xs = [b for b in bits if "test_recon" in rows[str(b)]]
        if xs:
            rec_ax.errorbar(xs, [rows[str(b)]["test_recon"]["mean"] for b in xs],
                            [rows[str(b)]["test_recon"]["std"] for b in xs], fmt="-o",
                            capsize=3, label=d)
    for ax, label in ((acc_ax, "test accuracy (%)"), (rec_ax, "test reconstruction (nats)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(body["bits"], [str(b) for b in body["bits"]])
        ax.set_xlabel("latent bits")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    seeds = body["seeds"]
    fig.suptitle(f"HyBNN against latent bits (seed{'s' * (len(seeds) > 1)} "
                 f"{', '.join(map(str, seeds))})")
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _acc_series(rows: dict, bits: list[int], task: str, pairs: list[str]):
    """(bits, mean test accuracy %, std %) of the all-classes task, or of the pairs' mean (each
    seed's mean over the pairs, then mean ± std over seeds), where done."""
    xs, ys, es = [], [], []
    for b in bits:
        tasks = rows[str(b)]["tasks"]
        if task == "all":
            if "all" not in tasks:
                continue
            vals = tasks["all"]["test_acc"]["values"]
        else:
            if not pairs or any(t not in tasks for t in pairs):
                continue
            per_seed = zip(*(tasks[t]["test_acc"]["values"] for t in pairs), strict=False)
            vals = [statistics.fmean(v) for v in per_seed]
        xs.append(b)
        ys.append(100 * statistics.fmean(vals))
        es.append(100 * (statistics.stdev(vals) if len(vals) > 1 else 0.0))
    return xs, ys, es


# ── the generated block ───────────────────────────────────────────────────────────────────────
def _cell(m: dict | None, scale: float = 100, digits: int = 2) -> str:
    if not m:
        return "–"
    return f"{scale * m['mean']:.{digits}f} ± {scale * m['std']:.{digits}f}"


def bits_rows(r: dict, dataset: str) -> list[list]:
    """One row per bits of a dataset's curve."""
    rows = []
    pairs = [t for t in r["tasks"] if t != "all"]
    for b, row in r["curve"][dataset].items():
        t = row["tasks"]
        heads = " / ".join(str(t[k]["head_bytes"]) if k in t else "–"
                           for k in ("all", pairs[0] if pairs else "all"))
        seeds = sorted({s for x in t.values() for s in x["seeds"]} | set(row["seeds_vae"]))
        rows.append([b, row["code_bytes"], heads, _cell(row.get("test_recon"), 1, 1),
                     *(_cell(t[k]["test_acc"]) if k in t else "–" for k in r["tasks"]),
                     ", ".join(map(str, seeds)) or "–"])
    return rows


@renderer("bits-table")
def bits_table(results_dir: Path) -> str:
    """Per dataset: bits, code bytes, head bytes, test reconstruction and test accuracy per task
    (mean ± std over seeds); before the study has run, the command that runs it."""
    path = Path(results_dir) / BITS
    if not path.is_file():
        return (f"Not run yet: `{COMMAND}` runs the plan `{PLAN}` and writes "
                f"`benchmarks/results/{BITS}` and the figure `benchmarks/results/bits.png`; "
                f"then `hybnn report --docs` fills this block.")
    r = read_result(path, FORMAT)
    c = r["commands"]
    names = {"all": "all classes"} | {t: f"task {t}" for t in r["tasks"] if t != "all"}
    header = ["bits", "code bytes", "head bytes (all classes / a pair)",
              "test recon (nats)", *(f"{names[t]} (%)" for t in r["tasks"]), "seeds"]
    parts = [f"Test accuracy of the BNN (mean ± std over seeds) and the VAE's test "
             f"reconstruction (nats per image, after its last epoch), per dataset and number "
             f"of latent bits; each dataset has its own VAE, pretrained on it, and its own "
             f"codes; every VAE trained for {option(c['pretrain_vae'], '--epochs')} epochs, "
             f"every BNN for {option(c['train_bnn'], '--epochs')} epochs, the other "
             f"settings as the plan names them. Code bytes: a code packed to bytes. Head "
             f"bytes: the exported deploy head's packed weights, thresholds and score table. "
             f"Validation accuracies are in the file. {_plan_line_bits(r)}"]
    for d in r["datasets"]:
        parts.append(f"**{d}**\n\n" + table(header, bits_rows(r, d)))
    parts.append("![test accuracy and reconstruction against latent bits]"
                 "(../benchmarks/results/bits.png)")
    parts.append(source(BITS, r))
    return "\n\n".join(parts)


def _plan_line_bits(r: dict) -> str:
    plan = r["plan"]
    if plan["tie_break"]:
        return _plan_line(r)
    where = ("a draft plan, not committed" if plan["draft"]
             else f"`{plan['path']}`, committed in `{plan['committed_in'][:12]}`")
    return f"Plan: {where}; rule: {plan['rule']}."


def headline_row(results_dir: Path) -> tuple[str, str, str]:
    """The README headline's row (`study.headline`): per dataset, the BNN's test accuracy on all
    classes at every number of latent bits, with the code's bytes."""
    from hybnn_cli.study.headline import file_cell

    r = read_result(Path(results_dir) / BITS, FORMAT)
    parts = []
    for d, rows in r["curve"].items():
        cells = [f"{b} bits ({row['code_bytes']} B) {_cell(row['tasks']['all']['test_acc'])}"
                 for b, row in rows.items() if "all" in row["tasks"]]
        if cells:
            parts.append(f"`{d}`: " + ", ".join(cells))
    epochs = option(r["commands"]["pretrain_vae"], "--epochs")
    what = (f"How many latent bits the code needs: the BNN's test accuracy (%) on all classes "
            f"against the bits of the code, each point with its own VAE ({epochs} epochs, the "
            f"same for all), mean ± std over seeds {', '.join(map(str, r['seeds']))}")
    return what, "; ".join(parts) or "not run yet", file_cell(BITS, r)
