"""The pipeline's stages as functions of (config, paths): pretrain the VAE, extract codes, train
a task BNN. They join data, compute and files; the CLI, the demo and the reproduction call them.
Progress is reported through callbacks, so nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from hybnn_cli.codes.extract import encode_batches
from hybnn_cli.codes.shards import merge_codes, shard_path, shard_range
from hybnn_cli.codes.store import (
    check_data,
    check_encoder,
    codes_writer,
    data_record,
    read_codes,
)
from hybnn_cli.data.labelled import (
    RESIZE,
    LabelledSet,
    fit_images,
    image_shape,
    open_labelled,
)
from hybnn_cli.data.pretrain_sets import load_pretrain_images
from hybnn_cli.data.tasks import Task
from hybnn_cli.data.tensors import codes_to_tensor, images_to_tensor
from hybnn_cli.distributed import SINGLE, Group, barrier
from hybnn_cli.errors import HybnnError
from hybnn_cli.models import checkpoint as ck
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.vae import IMAGE_SIZES, BinaryVAE, check_shape
from hybnn_cli.train.bnn_loop import evaluate, train_bnn
from hybnn_cli.train.configs import BNNConfig, VAEConfig
from hybnn_cli.train.recon_grid import save_recon_grid
from hybnn_cli.train.task_samples import (
    class_counts,
    load_task_codes,
    load_task_images,
    split_parts,
)
from hybnn_cli.train.vae_loop import train_vae

SPLITS = ("train", "test")
StepFn = Callable[[int, int, int, float], None]
EpochFn = Callable[[int, dict], None]


def pretrain_vae(cfg: VAEConfig, out: Path, data_dir=None, resume: Path | None = None,
                 on_step: StepFn | None = None, on_epoch: EpochFn | None = None,
                 group: Group = SINGLE, on_file: Callable[[int], None] | None = None) -> dict:
    """Train (or resume) the VAE on cfg.device; save a checkpoint after every epoch and a PNG
    grid at the end. Under torchrun (`group`) every process trains, rank 0 alone writes and
    reports (see `distributed`). `on_file(n)`: image files read (data from files)."""
    train_x, test_x, data_rec = _pretrain_images(cfg, data_dir, on_file)
    if cfg.train_limit:
        train_x = train_x[:cfg.train_limit]
    torch.manual_seed(cfg.seed)
    model = BinaryVAE(cfg.latent_bits, cfg.channels or 1, cfg.image_size or 28).to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    if resume is not None:
        old = ck.load_checkpoint(resume, ck.VAE_FORMAT)
        require_same_config(old, cfg, ("dataset", "latent_bits", "batch_size", "lr",
                                       "kl_weight", "seed", "train_limit", "image_size",
                                       "channels"), resume)
        if old.get("data", {}).get("dataset_sha256") != data_rec.get("dataset_sha256"):
            raise HybnnError(f"{resume}: cannot resume: it was trained on other data (another "
                             f"dataset identity)")
        model.load_state_dict(old["state_dict"])
        optimizer.load_state_dict(old["optimizer"])
        history = list(old["metrics"]["history"])
        if len(history) >= cfg.epochs:
            raise HybnnError(f"{resume}: already trained for {len(history)} epochs; "
                             f"ask for more epochs")

    def save(epoch: int, metrics: dict) -> None:
        history.append(metrics)
        if not group.is_main:
            return
        ck.save_checkpoint(out, ck.VAE_FORMAT, model, cfg.to_dict(), cfg.seed,
                           encoder_sha256=ck.encoder_sha256(model), data=data_rec,
                           optimizer=optimizer.state_dict(),
                           metrics={"history": history, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)

    train_vae(model, cfg, train_x, test_x, optimizer, start_epoch=len(history),
              on_step=on_step if group.is_main else None, on_epoch=save, group=group)
    if group.is_main:
        model.eval()
        with torch.no_grad():
            x = images_to_tensor(test_x[:32])
            recon, _ = model(x.to(cfg.device))
        save_recon_grid(out.with_suffix(".png"), x.permute(0, 2, 3, 1).numpy(),
                        torch.sigmoid(recon).permute(0, 2, 3, 1).cpu().numpy())
    barrier(group)  # every process returns once rank 0's files are written
    return {"history": history, **history[-1]}


def _pretrain_images(cfg: VAEConfig, data_dir, on_file=None) -> tuple:
    """The training and test images of the VAE (`cfg.data`: files; else the named set or
    union `cfg.dataset`) and what the checkpoint records of them."""
    if cfg.data is None:
        train_x, test_x = (load_pretrain_images(cfg.dataset, s, data_dir) for s in SPLITS)
        record = {"dataset": cfg.dataset}
    else:
        data = open_labelled(data=cfg.data, test_fraction=cfg.test_fraction, on_file=on_file)
        (train_x, _), (test_x, _) = data.split("train"), data.split("test")
        record = data.record()
    where = cfg.data or cfg.dataset
    channels, h, w = image_shape(train_x)
    size = cfg.image_size or h
    if cfg.image_size is None and not IMAGE_SIZES[0] <= h <= IMAGE_SIZES[1]:
        raise HybnnError(f"{where}: the images are {w}×{h}; give --image-size from "
                         f"{IMAGE_SIZES[0]} to {IMAGE_SIZES[1]} to resize them")
    check_shape(channels, size)
    if (channels, size) != (1, 28) or cfg.image_size is not None:  # else: as before, unrecorded
        cfg.channels, cfg.image_size, cfg.resize = channels, size, RESIZE if h != size else None
    fit = (fit_images(x, where, channels, size) for x in (train_x, test_x))
    return *fit, record


def extract_codes(vae_path: Path, out: Path, dataset: str | LabelledSet, data_dir=None,
                  batch_size: int = 1000, limit: int | None = None,
                  on_batch: Callable[[int], None] | None = None, device: str = "cpu",
                  shard: tuple[int, int] | None = None) -> dict:
    """Encode the train and test splits of `dataset` (a name, or a `LabelledSet` such as files
    read by `data.files`) into a codes file on `device`; returns a summary. `shard` (k, n): only
    the k-th of n slices of each split (see `shards`)."""
    model, vae_ckpt = ck.load_vae(vae_path)
    model.to(device)
    data = dataset if isinstance(dataset, LabelledSet) else open_labelled(dataset,
                                                                          data_dir=data_dir)
    vcfg = vae_ckpt["config"]
    splits, ranges, resized = {}, {}, False
    for split in SPLITS:
        images, labels = data.split(split)
        images, labels = (images[:limit], labels[:limit]) if limit else (images, labels)
        resized = image_shape(images)[1] != (vcfg.get("image_size") or 28)
        images = fit_images(images, data.source.get("path", data.name),
                            vcfg.get("channels") or 1, vcfg.get("image_size") or 28)
        start, stop = shard_range(len(images), *shard) if shard else (0, len(images))
        splits[split] = (images[start:stop], labels[start:stop])
        ranges[split] = [start, stop, len(images)]
    n_bits = model.encoder.latent_bits
    config = {"vae": str(vae_path), "dataset": data.name, "batch_size": batch_size,
              "limit": limit, "vae_config": vae_ckpt["config"]}
    if data.sha256 is not None:
        config["data"] = data.source
    if resized:
        config["resize"] = {"to": vcfg.get("image_size") or 28, "method": RESIZE}
    if shard:
        config["shard"] = {"index": shard[0], "count": shard[1], "ranges": ranges}
    sha = vae_ckpt["encoder_sha256"]
    with codes_writer(out, n_bits, {s: len(v[0]) for s, v in splits.items()}, data.name, sha,
                      config, int(vae_ckpt["seed"]), data=data.record()) as write:
        for split, (images, labels) in splits.items():
            for start, codes in encode_batches(model.encoder, images, batch_size):
                write(split, start, codes, labels[start:start + len(codes)])
                if on_batch:
                    on_batch(len(codes))
    return {"out": str(out), "n_bits": n_bits, "encoder_sha256": sha,
            **{f"n_{s}": len(v[0]) for s, v in splits.items()}}


def train_task_bnn(codes_path: Path, task: Task, cfg: BNNConfig, out: Path | None,
                   resume: Path | None = None, on_epoch: EpochFn | None = None,
                   test: bool = True) -> dict:
    """Train a BNN for `task` on a codes file (the training split minus its validation slice),
    validating after every epoch; save its checkpoint to `out` (if given). The test split is
    read once, at the end, and only when `test` is true (tuning runs leave it unread)."""
    data = load_task_codes(codes_path, task, cfg.val_fraction)
    sha = data["attrs"]["encoder_sha256"]
    shape = BNNShape(n_bits=data["n_bits"], hidden=cfg.hidden, n_classes=task.n_classes)
    torch.manual_seed(cfg.seed)
    model = TaskBNN(shape).to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    if resume is not None:
        model, old = ck.load_bnn(resume)
        check_encoder(old.get("encoder_sha256"), sha, resume, codes_path)
        check_data(old.get("data"), data["attrs"], resume, codes_path)
        require_same_config(old, cfg, ("task", "batch_size", "lr", "schedule", "seed",
                                            "val_fraction"), resume)
        if old["shape"] != shape.to_dict():
            raise HybnnError(f"{resume}: cannot resume: the checkpoint's BNN is {old['shape']}, "
                             f"this run needs {shape.to_dict()}")
        optimizer, history = _resumed_optimizer(model, cfg, old)
    history, seconds = _fit(model, cfg, data, optimizer, history, on_epoch)
    metrics = {"task": task.name, "classes": list(task.classes), "train_seconds": seconds,
               **_final_metrics(model, data, history, test)}
    if out is not None:
        ck.save_checkpoint(out, ck.BNN_FORMAT, model, cfg.to_dict(), cfg.seed,
                           shape=shape.to_dict(), task=task.record(),
                           encoder_sha256=sha, codes=str(codes_path),
                           data=data_record(data["attrs"]),
                           optimizer=optimizer.state_dict(), metrics=metrics)
    return metrics


def _resumed_optimizer(model: torch.nn.Module, cfg, old_ckpt: dict):
    """A fresh Adam on the resumed model with the checkpoint's optimizer state, and the history."""
    if "optimizer" not in old_ckpt:
        raise HybnnError("cannot resume: the checkpoint holds no optimizer state")
    model.to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    optimizer.load_state_dict(old_ckpt["optimizer"])
    return optimizer, list(old_ckpt["metrics"]["history"])


def _fit(model, cfg, data: dict, optimizer, history: list[dict],
         on_epoch: EpochFn | None) -> tuple[list[dict], float]:
    """Train from epoch len(history) to cfg.epochs on data["train"], validating on data["val"];
    returns the whole history and the seconds this call trained."""
    if len(history) >= cfg.epochs:
        raise HybnnError(f"already trained for {len(history)} epochs; ask for more epochs")
    x_tr, y_tr = data["train"]
    x_va, y_va = data["val"]
    t0 = time.perf_counter()
    history = history + train_bnn(model, cfg, x_tr, y_tr, x_va, y_va, optimizer,
                                  start_epoch=len(history), on_epoch=on_epoch)
    return history, time.perf_counter() - t0


def _final_metrics(model, data: dict, history: list[dict], test: bool) -> dict:
    """Sizes, the last epoch's train and validation accuracy, and (if `test`) the one reading
    of the test split."""
    out = {"n_train": len(data["train"][1]), "n_val": len(data["val"][1]),
           "n_test": len(data["test"][1]), "train_acc": history[-1]["train_acc"],
           "val_acc": history[-1].get("val_acc"), "history": history}
    if test:
        res = evaluate(model, *data["test"])
        out.update(test_acc=res["acc"], test_loss=res["loss"])
    return out


def require_same_config(old_ckpt: dict, cfg, keys, path) -> None:
    """Refuse to resume a checkpoint trained with other settings than this run's."""
    for key in keys:
        if old_ckpt["config"].get(key) != getattr(cfg, key):
            raise HybnnError(f"{path}: cannot resume: it was trained with {key}="
                             f"{old_ckpt['config'].get(key)!r}, this run asks for "
                             f"{getattr(cfg, key)!r}")


def evaluate_task_bnn(bnn_path: Path, codes_path: Path, split: str = "test") -> dict:
    """Accuracy of a saved BNN on one split of a codes file (same encoder required): "test",
    or "train" / "val", the parts of the training split the BNN was trained / validated on."""
    if split not in ("train", "val", "test"):
        raise HybnnError(f"unknown split '{split}': use train, val or test")
    model, ckpt = ck.load_bnn(bnn_path)
    stored = "test" if split == "test" else "train"  # val is a slice of the stored train split
    c = read_codes(codes_path, stored)
    check_encoder(ckpt.get("encoder_sha256"), c.attrs["encoder_sha256"], bnn_path, codes_path)
    check_data(ckpt.get("data"), c.attrs, bnn_path, codes_path)
    task = Task(ckpt["task"]["name"], tuple(ckpt["task"]["classes"]))
    keep = split_parts(c.labels, stored, ckpt["config"].get("val_fraction", 0.0))[split]
    idx, y = task.select(c.labels[keep])
    if len(idx) == 0:
        raise HybnnError(f"{codes_path}: task {task.name} has no samples in /{split}")
    res = evaluate(model, codes_to_tensor(c.codes[keep][idx], c.n_bits), torch.from_numpy(y))
    return {"task": task.name, "split": split, "n": int(len(idx)), "acc": res["acc"],
            "loss": res["loss"]}


# ── the binary CNN baseline on images ─────────────────────────────────────────────────────────
def train_baseline(task: Task, cfg, out: Path | None, data_dir=None, resume: Path | None = None,
                   on_epoch: EpochFn | None = None, test: bool = True) -> dict:
    """Train the binary CNN baseline (`baseline.BaselineConfig`) on images with the task BNN's
    loop; save its checkpoint to `out` (if given). The metrics also hold the test set's class
    counts and the counts of the predicted classes, which show a collapsed model at a glance."""
    from hybnn_cli.models.binary_cnn import BinaryCNN, predict

    data = load_task_images(cfg.dataset, task, data_dir, cfg.train_limit, cfg.val_fraction)
    torch.manual_seed(cfg.seed)
    model = BinaryCNN(task.n_classes, cfg.binarize).to(cfg.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    history: list[dict] = []
    if resume is not None:
        model, old = ck.load_baseline(resume)
        require_same_config(old, cfg, ("dataset", "binarize", "batch_size", "lr", "seed",
                                       "val_fraction", "train_limit"), resume)
        if tuple(old["task"]["classes"]) != task.classes:
            raise HybnnError(f"{resume}: cannot resume: it was trained on classes "
                             f"{old['task']['classes']}, this run asks for {list(task.classes)}")
        optimizer, history = _resumed_optimizer(model, cfg, old)
    history, seconds = _fit(model, cfg, data, optimizer, history, on_epoch)
    metrics = {"task": task.name, "classes": list(task.classes), "binarize": cfg.binarize,
               "dataset": cfg.dataset, "train_seconds": seconds,
               **_final_metrics(model, data, history, test)}
    if test:
        x_te, y_te = data["test"]
        metrics.update(test_class_counts=class_counts(y_te, task.n_classes),
                       predicted_class_counts=class_counts(predict(model, x_te), task.n_classes))
    if out is not None:
        ck.save_checkpoint(out, ck.BASELINE_FORMAT, model, cfg.to_dict(), cfg.seed,
                           shape=model.shape(), task={"name": task.name,
                                                      "classes": list(task.classes)},
                           optimizer=optimizer.state_dict(), metrics=metrics)
    return metrics


def test_baseline(cnn_path: Path, data_dir=None) -> dict:
    """Test accuracy of a saved binary CNN on its task's test images, with the test set's class
    counts and the counts of the predicted classes (a collapsed model shows at a glance)."""
    from hybnn_cli.models.binary_cnn import predict

    model, ckpt = ck.load_baseline(cnn_path)
    cfg = ckpt["config"]
    task = Task(ckpt["task"]["name"], tuple(ckpt["task"]["classes"]))
    x, y = load_task_images(cfg["dataset"], task, data_dir, cfg.get("train_limit"),
                            splits=("test",))["test"]
    res = evaluate(model, x, y)
    return {"test_acc": res["acc"], "test_loss": res["loss"],
            "test_class_counts": class_counts(y, task.n_classes),
            "predicted_class_counts": class_counts(predict(model, x), task.n_classes)}


def extract_parallel(group, vae: Path, out: Path, dataset: str, data_dir=None,
                     batch_size: int = 1000, limit: int | None = None, on_batch=None) -> dict:
    """Under torchrun: every process encodes its shard on its device; rank 0 merges them into
    `out` and removes the shards. Returns rank 0's merge summary (others: their shard's)."""
    mine = shard_path(out, group.rank, group.world_size)
    result = extract_codes(vae, mine, dataset, data_dir, batch_size, limit, on_batch,
                                  device=str(group.device),
                                  shard=(group.rank, group.world_size))
    barrier(group)
    if not group.is_main:
        return result
    paths = [shard_path(out, k, group.world_size) for k in range(group.world_size)]
    result = merge_codes(paths, out)
    for p in paths:
        p.unlink()
    return result
