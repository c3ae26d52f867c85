"""The reproduction study: the paper's comparison (HyBNN against the binary CNN baseline on the
five MNIST digit pairs), the 10-class result on codes, and the encoder-transfer study on
Fashion-MNIST, run stage by stage into a work folder.

Stages are cached in the work folder (`work_cache`: a codes file is keyed by its encoder's
weights, every stage by the version of the code that makes it: `STUDY_MODULES` and what they
import); a stage whose record is present and whose key matches is skipped; an interrupted VAE
resumes from its last saved epoch, and a VAE checkpoint put at the stage's path
(`Study.vae_path`, e.g. by `hybnn pretrain-vae --out`) is used once its config is checked. So a
rerun reuses everything already done and can be stopped at any time.

`run_study` returns the results as one dict (written to `reproduction.json` by the caller);
`report` turns that dict into the table and figures. Its header is the provenance of the study's
run, taken when it starts (`results.run_record`); every VAE, codes file and trained model in it
carries the record of the run that made its stage (`"run"`), which may be an earlier run of the
same code.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybnn_cli import __version__ as hybnn_version
from hybnn_cli.data.datasets import DATASETS
from hybnn_cli.data.splits import VAL_FRACTION
from hybnn_cli.data.tasks import Task, parse_task
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.models.binary_cnn import BINARIZE, BaselineConfig, BinaryCNN, distinct_inputs
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.summary import model_summary
from hybnn_cli.models.vae import Encoder
from hybnn_cli.study.provenance import (
    check_rerunnable,
    end_run,
    result_header,
    row_commits,
    run_record,
)
from hybnn_cli.study.work_cache import STAGE_MODULES, Reporter, StageCache, config_key
from hybnn_cli.train import stages
from hybnn_cli.train.configs import BNNConfig, VAEConfig
from hybnn_cli.train.task_samples import load_task_images

RESULTS_FORMAT = "hybnn-reproduction"  # reproduction.json; `reproduction_report` draws it
RESULTS_VERSION = 2
# the code that makes the study's stages: the stage functions and this module's wrappers of them
STUDY_MODULES = (*STAGE_MODULES, "hybnn_cli.study.reproduce")

# Fashion-MNIST pairs of the transfer study: two easy pairs whose shapes differ (T-shirt/top vs
# Trouser, Bag vs Ankle boot), one footwear pair (Sandal vs Sneaker), and two pairs of garments
# with nearly the same silhouette (Pullover vs Coat, T-shirt/top vs Shirt), the hardest in the set.
FASHION_PAIRS = ((0, 1), (8, 9), (5, 7), (2, 4), (0, 6))


@dataclass
class StudyConfig:
    """The study's settings. Learning rates (and the 10-class hidden width) are chosen, per task
    and model, on the validation accuracy of the first seed, from equally long candidate lists
    for HyBNN and the binary CNN; every seed then trains with the chosen setting, and the test
    split is read only for those runs. Seed s pretrains VAE s and trains every model with seed s."""
    vae_epochs: int = 20
    fashion_vae_epochs: int | None = None  # the Fashion-MNIST VAE's epochs; None: vae_epochs
    bnn_epochs: int = 100
    baseline_epochs: int = 5  # the paper: 15; fewer for the CPU budget of a 3-seed study
    tasks: list = field(default_factory=lambda: [1, 2, 3, 4, 5])
    binarizations: list = field(default_factory=lambda: list(BINARIZE))
    ten_class: bool = True
    fashion: bool = True
    fashion_pairs: list = field(default_factory=lambda: [list(p) for p in FASHION_PAIRS])
    limit: int | None = None  # use only the first N images of each split (quick runs)
    seeds: list = field(default_factory=lambda: [0, 1, 2])
    bnn_lrs: list = field(default_factory=lambda: [3e-3, 1e-2, 3e-2])  # task BNN candidates
    baseline_lrs: list = field(default_factory=lambda: [1e-3, 3e-3, 1e-2])  # binary CNN candidates
    ten_class_hidden: list = field(default_factory=lambda: [128, 512])  # 10-class candidates
    val_fraction: float = VAL_FRACTION
    threads: int | None = None  # threads every stage runs with (None: every core)

    @classmethod
    def quick(cls, **kw) -> StudyConfig:
        """A small configuration for tests and demos: 1000 images per split, 1–2 epochs, two
        seeds, two candidates per setting."""
        return cls(**{"vae_epochs": 1, "bnn_epochs": 2, "baseline_epochs": 1, "limit": 1000,
                      "seeds": [0, 1], "bnn_lrs": [1e-2, 3e-2], "baseline_lrs": [1e-3, 1e-2],
                      "ten_class_hidden": [128], **kw})

    def to_dict(self) -> dict:
        return asdict(self)


def time_to_fraction(history: list[dict], fraction: float = 0.99) -> dict:
    """The first epoch whose validation accuracy reaches `fraction` of the final one, and the
    training seconds (sum of epoch_seconds) spent up to and including it."""
    if not history or "val_acc" not in history[-1]:
        return {"epoch": None, "seconds": None}
    target = fraction * history[-1]["val_acc"]
    seconds = 0.0
    for m in history:
        seconds += m["epoch_seconds"]
        if m["val_acc"] >= target:
            return {"epoch": m["epoch"], "seconds": seconds}
    return {"epoch": history[-1]["epoch"], "seconds": seconds}  # unreachable: last one qualifies


def run_summary(metrics: dict, cpu_seconds: float | None = None) -> dict:
    """The part of a training run's metrics the study keeps, with the CPU time of the process
    during the run (loading the data included): on a shared machine, wall time measures the
    load as much as the work, CPU time measures the work."""
    history = metrics["history"]
    keep = ("val_acc", "train_acc", "n_train", "n_val", "n_test", "train_seconds")
    out = {k: metrics[k] for k in keep if k in metrics}
    out["cpu_seconds"] = cpu_seconds
    out["train_epoch_seconds"] = sum(m["epoch_seconds"] for m in history)
    out["time_to_99"] = time_to_fraction(history)
    out["history"] = [{k: m[k] for k in ("epoch", "train_loss", "train_acc", "val_loss",
                                         "val_acc", "epoch_seconds") if k in m} for m in history]
    return out


class Study:
    """The study's stages over one cache; each method returns the stage's result dict."""

    def __init__(self, cfg: StudyConfig, work: Path, data_dir=None,
                 reporter: Reporter | None = None, cached_only: bool = False):
        self.cfg = cfg
        self.data_dir = data_dir
        self.reporter = reporter or Reporter()
        self.cache = StageCache(work, self.reporter, cached_only, STUDY_MODULES)

    def vae_config(self, dataset: str, seed: int) -> tuple[VAEConfig, dict]:
        epochs = self.cfg.vae_epochs
        if dataset == "fashion-mnist" and self.cfg.fashion_vae_epochs:
            epochs = self.cfg.fashion_vae_epochs
        cfg = VAEConfig(dataset=dataset, epochs=epochs, seed=seed,
                        threads=self.cfg.threads, train_limit=self.cfg.limit)
        return cfg, {"stage": "vae", **config_key(cfg)}

    def vae_path(self, dataset: str, seed: int) -> Path:
        """Where the study keeps (and looks for) the VAE pretrained on `dataset` with `seed`."""
        return self.cache.path(f"vae-{dataset}", self.vae_config(dataset, seed)[1], ".pt")

    def vae(self, dataset: str, seed: int) -> dict:
        cfg, key = self.vae_config(dataset, seed)
        desc = f"VAE on {dataset} ({cfg.epochs} epochs, seed {seed})"

        def fn(art: Path) -> dict:
            resume = None
            if art.exists():
                old = ck.load_checkpoint(art, ck.VAE_FORMAT)
                same = ("dataset", "batch_size", "lr", "latent_bits", "kl_weight", "seed",
                        "train_limit")
                if any(old["config"].get(k) != getattr(cfg, k) for k in same):
                    raise HybnnError(f"{art} holds a VAE trained with another config "
                                     f"({old['config']}); move it away to retrain")
                if len(old["metrics"]["history"]) >= cfg.epochs:
                    return self._vae_result(art, old)
                resume = art
            self.reporter.stage(desc, cfg.epochs)
            stages.pretrain_vae(cfg, art, self.data_dir, resume,
                                on_epoch=lambda e, m: self.reporter.step(
                                    e + 1, f"recon {m['test_recon']:.1f}"))
            return self._vae_result(art, ck.load_checkpoint(art, ck.VAE_FORMAT))

        return self.cache.run(f"vae-{dataset}", key, ".pt", desc, fn,
                              lambda r: f"test recon {r['final']['test_recon']:.1f} nats, "
                                        f"{r['train_seconds']:.0f} s")

    @staticmethod
    def _vae_result(art: Path, ckpt: dict) -> dict:
        history = ckpt["metrics"]["history"]
        return {"path": art.name, "encoder_sha256": ckpt["encoder_sha256"],
                "epochs": len(history), "train_seconds": sum(m["epoch_seconds"] for m in history),
                "final": history[-1], "history": history}

    def codes(self, vae: dict | None, dataset: str) -> dict | None:
        if vae is None:  # its VAE is not done (cached_only)
            self.cache.missing.append(f"codes of {dataset}")
            return None
        key = {"stage": "codes", "encoder_sha256": vae["encoder_sha256"], "dataset": dataset,
               "limit": self.cfg.limit}
        desc = f"codes of {dataset} from encoder {vae['encoder_sha256'][:8]}"

        def fn(art: Path) -> dict:
            self.reporter.stage(desc, None)
            t0 = time.perf_counter()
            res = stages.extract_codes(self.cache.work / vae["path"], art, dataset,
                                       self.data_dir, limit=self.cfg.limit)
            return {"path": art.name, "seconds": time.perf_counter() - t0,
                    "n_train": res["n_train"], "n_test": res["n_test"],
                    "encoder_sha256": res["encoder_sha256"]}

        return self.cache.run(f"codes-{dataset}", key, ".h5", desc, fn,
                              lambda r: f"{r['n_train']}+{r['n_test']} codes, "
                                        f"{r['seconds']:.0f} s")

    def bnn(self, codes: dict | None, dataset: str, task: Task, seed: int, lr: float,
            hidden: int = 128) -> dict | None:
        """Train (or reuse) one task BNN; its result holds validation numbers only."""
        if codes is None:  # its codes are not done (cached_only)
            self.cache.missing.append(f"BNN {task.name} on {dataset} codes, seed {seed}")
            return None
        cfg = BNNConfig(task=task.name, epochs=self.cfg.bnn_epochs, hidden=hidden, lr=lr,
                        seed=seed, threads=self.cfg.threads, val_fraction=self.cfg.val_fraction)
        key = {"stage": "bnn", "encoder_sha256": codes["encoder_sha256"], "dataset": dataset,
               "limit": self.cfg.limit, "classes": list(task.classes), **config_key(cfg)}
        desc = f"BNN {task.name} on {dataset} codes (lr {lr:g}, hidden {hidden}, seed {seed})"

        def fn(art: Path) -> dict:
            self.reporter.stage(desc, cfg.epochs)
            cpu = time.process_time()
            m = stages.train_task_bnn(self.cache.work / codes["path"], task, cfg, art,
                                      on_epoch=self._on_epoch, test=False)
            return {"path": art.name, **run_summary(m, time.process_time() - cpu)}

        return self.cache.run(f"bnn-{dataset}-{task.name}", key, ".pt", desc, fn, _val_line)

    def baseline(self, dataset: str, task: Task, binarize: str, seed: int,
                 lr: float) -> dict | None:
        """Train (or reuse) one binary CNN; its result holds validation numbers only."""
        cfg = BaselineConfig(task=task.name, binarize=binarize, dataset=dataset, lr=lr,
                             epochs=self.cfg.baseline_epochs, seed=seed,
                             threads=self.cfg.threads, train_limit=self.cfg.limit,
                             val_fraction=self.cfg.val_fraction)
        key = {"stage": "baseline", "classes": list(task.classes), **config_key(cfg)}
        desc = f"binary CNN {task.name} on {dataset} images ({binarize}, lr {lr:g}, seed {seed})"

        def fn(art: Path) -> dict:
            self.reporter.stage(desc, cfg.epochs)
            cpu = time.process_time()
            m = stages.train_baseline(task, cfg, art, self.data_dir, on_epoch=self._on_epoch,
                                      test=False)
            return {"path": art.name, **run_summary(m, time.process_time() - cpu)}

        return self.cache.run(f"cnn-{dataset}-{task.name}-{binarize}", key, ".pt", desc, fn,
                              _val_line)

    def _on_epoch(self, epoch: int, m: dict) -> None:
        self.reporter.step(epoch + 1, f"train {m['train_acc']:.2%}  val {m['val_acc']:.2%}")

    # ── choosing on validation, then reading the test split ───────────────────────────────────
    def tuned(self, train: Callable[[int, object], dict | None], candidates: list,
              test: Callable[[dict], dict]) -> dict | None:
        """Train every candidate setting with the first seed, choose the one with the best
        final validation accuracy (the first listed on a tie), train the other seeds with it,
        and read the test split for those runs only. `train(seed, setting)` returns a run's
        result (None when not done); `test(run)` its test numbers."""
        first, *others = self.cfg.seeds
        tried = [(c, train(first, c)) for c in candidates]
        if any(r is None for _, r in tried):
            return None
        best = max(range(len(tried)), key=lambda i: (tried[i][1]["val_acc"], -i))
        chosen = tried[best][0]
        runs = [{"seed": first, **tried[best][1]}]
        for seed in others:
            r = train(seed, chosen)
            if r is None:
                return None
            runs.append({"seed": seed, **r})
        for r in runs:
            r.update(test(r))
        return summarize(runs, chosen, [{"setting": c, "val_acc": r["val_acc"]}
                                        for c, r in tried])

    def cnn_entry(self, dataset: str, task: Task, binarize: str) -> dict | None:
        """The binary CNN's entry for a task: learning rate chosen on validation, all seeds."""
        entry = self.tuned(lambda seed, lr: self.baseline(dataset, task, binarize, seed, lr),
                           self.cfg.baseline_lrs, self.test_baseline)
        if entry is not None:
            entry["chosen"] = {"lr": entry["chosen"]}
            for t in entry["tuning"]:
                t["lr"] = t.pop("setting")
        return entry

    def bnn_entry(self, codes_of: dict, dataset: str, task: Task) -> dict | None:
        """The task BNN's entry: learning rate (and, for more than two classes, hidden width)
        chosen on validation, all seeds; `codes_of` maps each seed to its codes."""
        widths = self.cfg.ten_class_hidden if task.n_classes > 2 else [128]
        candidates = [(lr, h) for h in widths for lr in self.cfg.bnn_lrs]

        def train(seed, setting):
            lr, hidden = setting
            return self.bnn(codes_of[seed], dataset, task, seed, lr, hidden)

        entry = self.tuned(train, candidates, lambda run: self.test_bnn(codes_of[run["seed"]], run))
        if entry is not None:
            entry["chosen"] = {"lr": entry["chosen"][0], "hidden": entry["chosen"][1]}
            for t in entry["tuning"]:
                t["lr"], t["hidden"] = t.pop("setting")
        return entry

    def test_bnn(self, codes: dict, run: dict) -> dict:
        res = stages.evaluate_task_bnn(self.cache.work / run["path"],
                                       self.cache.work / codes["path"], "test")
        return {"test_acc": res["acc"], "test_loss": res["loss"]}

    def test_baseline(self, run: dict) -> dict:
        return stages.test_baseline(self.cache.work / run["path"], self.data_dir)


def summarize(runs: list[dict], chosen, tuning: list[dict]) -> dict:
    """One model's entry: the first seed's run (its history, costs and class counts) with the
    test accuracy as mean ± standard deviation over the seeds, each seed's run kept in `runs`."""
    accs = [r["test_acc"] for r in runs]
    vals = [r["val_acc"] for r in runs]
    brief = [{k: r[k] for k in ("seed", "path", "val_acc", "test_acc", "train_acc",
                                "train_seconds", "cpu_seconds", "run") if k in r} for r in runs]
    return {**runs[0], "chosen": chosen, "tuning": tuning, "seeds": [r["seed"] for r in runs],
            "runs": brief, "test_acc": statistics.fmean(accs),
            "test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "val_acc": statistics.fmean(vals)}


def _val_line(r: dict) -> str:
    return (f"validation accuracy {r['val_acc']:.2%} "
            f"({r['train_seconds']:.0f} s)")


def _shares(counts: list[int]) -> list[float]:
    n = sum(counts)
    return [c / n if n else 0.0 for c in counts]


def run_study(cfg: StudyConfig, work: Path, data_dir=None, reporter: Reporter | None = None,
              command: str = "", cached_only: bool = False) -> dict:
    """Run (or reuse) every stage and return the results dict. With `cached_only`, train
    nothing: gather the stages already done (e.g. by other processes) and list the others under
    "missing"; their entries are None. The header is this run's provenance, taken now."""
    run = run_record()
    for b in cfg.binarizations:
        if b not in BINARIZE:
            raise HybnnError(f"unknown binarization '{b}': use {', '.join(BINARIZE)}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise HybnnError(f"seeds must be distinct and at least one, got {cfg.seeds}")
    tasks = [parse_task(str(t)) for t in cfg.tasks]
    fashion_tasks = [_fashion_task(p) for p in cfg.fashion_pairs] if cfg.fashion else []
    study = Study(cfg, work, data_dir, reporter, cached_only)
    # the transfer study runs the first seed only
    study_f = Study(dataclasses.replace(cfg, seeds=cfg.seeds[:1]), work, data_dir, reporter,
                    cached_only)
    study_f.cache = study.cache
    t0 = time.perf_counter()

    # The CNNs on images first: they need no encoder, so VAEs pretrained alongside (e.g. with
    # `hybnn pretrain-vae --out <work>/vae-...pt`) are found complete when the study reaches them.
    bases_of = {t.name: {b: study.cnn_entry("mnist", t, b) for b in cfg.binarizations}
                for t in tasks}
    thresholds = {t.name: study_f.cnn_entry("fashion-mnist", t, "threshold")
                  for t in fashion_tasks}
    vaes = {s: study.vae("mnist", s) for s in cfg.seeds}
    codes = {s: study.codes(vaes[s], "mnist") for s in cfg.seeds}
    rows = []
    for task in tasks:
        hyb = study.bnn_entry(codes, "mnist", task)
        bases = bases_of[task.name]
        done = [r for r in bases.values() if r]
        counts = next((r["test_class_counts"] for r in done), None)
        rows.append({"task": task.name, "classes": list(task.classes),
                     "n_test": (hyb or done[0])["n_test"] if (hyb or done) else None,
                     "test_class_counts": counts,
                     "distinct_test_inputs": distinct_test_inputs(task, cfg, data_dir),
                     "test_class_shares": _shares(counts) if counts else None,
                     "hybnn": hyb, "baselines": bases})
    ten = None
    if cfg.ten_class:
        ten = study.bnn_entry(codes, "mnist", parse_task("all"))

    fashion = None
    if fashion_tasks:  # the transfer study: one seed (the first), the settings tuned per pair
        first = cfg.seeds[0]
        vae_f = study_f.vae("fashion-mnist", first)
        codes_mf = {first: study_f.codes(vaes[first], "fashion-mnist")}
        codes_ff = {first: study_f.codes(vae_f, "fashion-mnist")}
        names = DATASETS["fashion-mnist"].class_names
        pairs = []
        for task in fashion_tasks:
            thr = thresholds[task.name]
            pairs.append({"task": task.name, "classes": list(task.classes),
                          "class_names": [names[c] for c in task.classes],
                          "test_class_counts": thr["test_class_counts"] if thr else None,
                          "mnist_vae": study_f.bnn_entry(codes_mf, "fashion-mnist", task),
                          "fashion_vae": study_f.bnn_entry(codes_ff, "fashion-mnist", task),
                          "threshold": thr})
        fashion = {"vae": _vae_brief(vae_f) if vae_f else None,
                   "codes": {"mnist_vae": codes_mf[first], "fashion_vae": codes_ff[first]},
                   "pairs": pairs}

    body = dict(
        config=cfg.to_dict(), hybnn_version=hybnn_version, study_seconds=time.perf_counter() - t0,
        code_version=study.cache.code, vaes=[_vae_brief(v) if v else None for v in vaes.values()],
        codes=list(codes.values()), tasks=rows, ten_class=ten,
        fashion=fashion, model_sizes=model_sizes(), missing=study.cache.missing,
    )
    results = result_header(RESULTS_FORMAT, RESULTS_VERSION,
                            shlex.split(command) if command else None, run=end_run(run))
    commits = row_commits(body)
    if any(c != results["commit"] for c in commits):
        results["row_commits"] = commits
    return {**results, **body}


def distinct_test_inputs(task: Task, cfg: StudyConfig, data_dir=None) -> dict:
    """For each binarization, how many different inputs the task's test images become."""
    x, _ = load_task_images("mnist", task, data_dir, cfg.limit, splits=("test",))["test"]
    return {"images": len(x), **{b: distinct_inputs(x, b) for b in BINARIZE}}


def _vae_brief(vae: dict) -> dict:
    """The VAE's record with only the seconds of each epoch from its per-epoch history."""
    return {**{k: vae[k] for k in ("path", "epochs", "train_seconds", "encoder_sha256", "final",
                                   "run") if k in vae},
            "epoch_seconds": [m["epoch_seconds"] for m in vae["history"]]}


def _fashion_task(pair) -> Task:
    a, b = (int(c) for c in pair)
    if a == b or not (0 <= a < 10 and 0 <= b < 10):
        raise HybnnError(f"bad Fashion-MNIST pair {pair}: two different classes in 0..9")
    return Task(f"fashion-{a}-{b}", (a, b))


def model_sizes() -> dict:
    """Sizes of the models compared, counted from the modules themselves (see `summary`)."""
    return {
        "hybnn_task_bnn": model_summary(TaskBNN(BNNShape(200, 128, 2))),
        "hybnn_ten_class_bnn": model_summary(TaskBNN(BNNShape(200, 128, 10))),
        "vae_encoder": model_summary(Encoder(200)),
        "binary_cnn": model_summary(BinaryCNN(2)),
    }


def write_results(results: dict, path: Path) -> None:
    check_rerunnable(path, results["command"])
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(results, indent=1, default=str))
