"""The task sequence of Split-MNIST on codes: training, metrics and checkpoints (pure compute and
checkpoint I/O; no printing).

Tasks: the classes in consecutive pairs (task 1 = 0/1, …, task 5 = 8/9), each task's training codes
seen only during its turn. One BNN (`models.bnn.TaskBNN`, one output per class) for all tasks.
- `class` scenario: the outputs of the classes seen so far compete ("active outputs"); after the
  last task the model tells all ten classes apart without being told the task;
- `task` scenario: the task is known; a code's outputs are masked to its task's two classes
  (a multi-headed network with shared hidden layer).

Strategies: `none` (fine-tuning), `replay` (a `ReplayMemory` of codes mixed into every batch),
`generative` (pseudo-codes from per-class `CodeGenerator`s mixed into every batch), `joint` (all
codes of the tasks so far, the upper bound; its batches hold batch_size codes per task so far, so
each task takes the same number of steps as in the other strategies), and the learners that
cannot forget, `mixture` and `prototype` (`class_models`: no network; each class's model fitted
on its own codes when its task comes). `task_order` permutes the tasks. Against the pull toward the
newest classes in the class scenario (Wu et al. 2019, "Large scale incremental learning"; Castro
et al. 2018, "End-to-end incremental learning"; Caccia et al. 2022, "New insights on reducing
abrupt representation change"; Li and Hoiem 2016, "Learning without forgetting") these settings,
chosen on the validation split:
- `replay_ratio`: replayed codes per new code in each batch; `balanced_batches` sets it to
  (old classes / new classes) instead, so every seen class has the same share of each batch;
- `loss="ace"`: the new codes' cross-entropy counts only the current task's outputs, the replayed
  codes' all seen outputs (asymmetric cross-entropy), so learning a new pair does not push the old
  classes' scores down; `loss="la"`: logit adjustment (Menon et al. 2021, "Long-tail learning
  via logit adjustment"): the scores are shifted by the log of each class's share of the batches
  during training only, so the pull of the more frequent new classes is taken out of the loss;
- `finetune_epochs`: balanced fine-tuning at the end of each task on the class-balanced memory
  (or balanced pseudo-codes), at a small learning rate; with `finetune_head` only the output
  layer's per-class scale and offset (its BatchNorm's affine, all running statistics frozen) are
  fitted, a bias correction of the scores in the manner of BiC (Wu et al. 2019);
- `flip`: each bit of a replayed code flips with this probability (augmentation of the memory);
- `distill`: the old classes' scores of every code in the batch are pulled toward those of the
  model as it was after the previous task (KL divergence at temperature 2, as in LwF and iCaRL);
- `align`: weight aligning (WA; Zhao et al. 2020, "Maintaining discrimination and fairness in
  class incremental learning") at the end of each task: the new classes' scores are multiplied by
  the old classes' mean norm of the effective output weights over the new classes' (the output
  weights are ±1, all of one norm, so a class's effective norm is |γ| / σ of its BatchNorm);
- `readout="nme"`: nearest mean of exemplars (iCaRL; Rebuffi et al. 2017): a code goes to the
  seen class whose mean ±1 hidden vector over its codes in the memory is nearest in angle,
  instead of to the highest score (`replay` only; training is unchanged);
- `ema`: the weights end each task as an exponential moving average (this decay per step) of
  their values over the task's steps (latent weights and BatchNorm affine; the running
  statistics are then re-estimated on the task's codes and the memory).

Metrics after each task, on validation and on test: accuracy on every task seen so far and on all
seen classes. At the end: average accuracy over the tasks, average forgetting (best minus final
per earlier task), backward transfer (final minus just-learned per earlier task), memory bytes and
training seconds. All randomness is drawn from (seed, task, epoch), and a checkpoint is written
after each task, so a resumed run repeats an unbroken one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hybnn_kernels import n_words, unpack_signs

from hybnn_cli.codes.store import class_names, read_codes
from hybnn_cli.continual.class_models import LEARNERS
from hybnn_cli.continual.generative import CodeGenerator
from hybnn_cli.continual.memory import ReplayMemory
from hybnn_cli.continual.settings import (  # noqa: F401  (the settings, re-exported)
    CLASS_MODELS,
    LOSSES,
    READOUTS,
    SCENARIOS,
    STRATEGIES,
    ContinualConfig,
    task_sequence,
)
from hybnn_cli.data.splits import train_val_indices
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path, provenance
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.layers import clip_latent_weights
from hybnn_cli.sealed import sealed
from hybnn_cli.train.configs import cosine_lr

CKPT_FORMAT = "hybnn-continual-checkpoint"
CKPT_VERSION = 1
DISTILL_T = 2.0  # distillation temperature


@dataclass
class Split:
    codes: np.ndarray  # (N, words) uint64
    labels: np.ndarray  # (N,) int64
    x: torch.Tensor  # (N, n_bits) ±1 float32


@dataclass
class SequenceData:
    train: Split
    val: Split
    test: Split | None  # None in a sealed run (a study's candidate: `sealed`)
    n_bits: int
    n_classes: int
    tasks: list[tuple[int, ...]]
    encoder_sha256: str
    attrs: dict


def signs(codes: np.ndarray, n_bits: int) -> torch.Tensor:
    """Packed codes as the BNN's ±1 float32 input."""
    return torch.from_numpy(unpack_signs(codes, n_bits).astype(np.float32))


def _split(codes: np.ndarray, labels: np.ndarray, n_bits: int) -> Split:
    return Split(codes, labels.astype(np.int64), signs(codes, n_bits))


def load_data(path: str | os.PathLike, val_fraction: float = 0.1,
              tasks: str | None = None) -> SequenceData:
    """Train (minus the validation slice), validation and test codes of a codes file, and the
    classes of each task of the sequence (`settings.task_sequence`: --tasks, else consecutive
    pairs). In a sealed run (`sealed`) there is no test split."""
    tr = read_codes(path, "train")
    n_classes = int(tr.attrs.get("n_classes", int(tr.labels.max()) + 1))
    try:
        sequence = task_sequence(tasks, class_names(tr.attrs), n_classes)
    except HybnnError as e:
        raise HybnnError(f"{path}: {e}") from None
    te = None if sealed() else read_codes(path, "test")
    keep, val = train_val_indices(tr.labels, val_fraction)
    return SequenceData(
        train=_split(tr.codes[keep], tr.labels[keep], tr.n_bits),
        val=_split(tr.codes[val], tr.labels[val], tr.n_bits),
        test=_split(te.codes, te.labels, tr.n_bits) if te is not None else None,
        n_bits=tr.n_bits, n_classes=n_classes,
        tasks=sequence,
        encoder_sha256=str(tr.attrs["encoder_sha256"]), attrs=tr.attrs)


# ── masks and losses ──────────────────────────────────────────────────────────────────────────
def _allowed(labels: torch.Tensor, classes: list[int], n_classes: int, scenario: str,
             task_of: torch.Tensor, tasks) -> torch.Tensor:
    """(B, n_classes) bool: the outputs that compete for each code. Class scenario: `classes`;
    task scenario: the classes of the code's own task."""
    if scenario == "task":
        own = torch.zeros(len(tasks), n_classes, dtype=torch.bool)
        for t, cs in enumerate(tasks):
            own[t, list(cs)] = True
        return own[task_of[labels]]
    row = torch.zeros(n_classes, dtype=torch.bool)
    row[classes] = True
    return row.expand(len(labels), n_classes)


def _masked(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    return scores.masked_fill(~allowed, -1e9)


def replayed_per_batch(cfg: ContinualConfig, n_old: int, n_new: int) -> int:
    """Replayed (or generated) codes beside each batch of batch_size new codes: replay_ratio
    times as many, or with balanced_batches as many per old class as new codes per new class."""
    ratio = n_old / n_new if cfg.balanced_batches else cfg.replay_ratio
    return int(round(cfg.batch_size * ratio))


def logit_shift(n_classes: int, cur: list[int], old: list[int], n_new: int,
                n_rep: int) -> torch.Tensor:
    """Logit adjustment: the log of each seen class's expected share of a batch of n_new new
    codes (spread over the classes `cur`) and n_rep replayed ones (over `old`); 0 elsewhere."""
    share = torch.zeros(n_classes)
    share[cur] = n_new / len(cur)
    share[old] = n_rep / len(old)
    shift = torch.zeros(n_classes)
    seen = cur + old
    shift[seen] = torch.log(share[seen] / share.sum())
    return shift


def _adam(model: torch.nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with its fused CPU kernel (one call per step for all parameters; the same update)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


# ── the sequence ──────────────────────────────────────────────────────────────────────────────
class Sequence:
    """One run: a model, its memory or generators, and the metrics so far."""

    def __init__(self, cfg: ContinualConfig, data: SequenceData):
        cfg.check(data.n_classes)
        data = replace(data, tasks=[data.tasks[i] for i in cfg.tasks_in_order(len(data.tasks))])
        self.cfg, self.data = cfg, data
        torch.manual_seed(cfg.seed)
        # the learners that cannot forget (`class_models`) take the place of the network
        self.learner = (LEARNERS[cfg.strategy](data.n_bits, data.n_classes, cfg.components)
                        if cfg.strategy in CLASS_MODELS else None)
        if self.learner is not None:
            self.learner.check_counts(data.train.labels)
        self.model = (TaskBNN(BNNShape(data.n_bits, cfg.hidden, data.n_classes))
                      if self.learner is None else None)
        self.memory = ReplayMemory(cfg.memory, n_words(data.n_bits), cfg.memory_policy, cfg.seed)
        self.generator = CodeGenerator(data.n_bits, cfg.components)
        self.task_of = torch.zeros(data.n_classes, dtype=torch.long)
        for t, cs in enumerate(data.tasks):
            self.task_of[list(cs)] = t
        self.tasks_done = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0

    # one task
    def learn_task(self, t: int, on_epoch: Callable[[int, int, dict], None] | None = None):
        if self.learner is not None:
            return self._fit_class_models(t, on_epoch)
        cfg, d = self.cfg, self.data
        t0 = time.perf_counter()
        cur = list(d.tasks[t])
        seen = [c for cs in d.tasks[:t + 1] for c in cs]
        old = [c for cs in d.tasks[:t] for c in cs]
        pool = cur if cfg.strategy != "joint" else seen
        idx = np.flatnonzero(np.isin(d.train.labels, pool))
        x, y = d.train.x[idx], torch.from_numpy(d.train.labels[idx])
        replaying = cfg.strategy in ("replay", "generative") and t > 0 and cfg.replay_ratio > 0
        n_rep = replayed_per_batch(cfg, len(old), len(cur)) if replaying else 0
        # joint: a batch holds batch_size codes per task so far, so every task takes as many
        # steps as with one task's codes (the cost of each task stays the same)
        batch = cfg.batch_size * (t + 1 if cfg.strategy == "joint" else 1)
        # the new codes' competing outputs: ACE keeps them to the current task when replaying
        new_classes = cur if (replaying and cfg.loss == "ace") else seen
        shift = (logit_shift(d.n_classes, cur, old, batch, n_rep)
                 if cfg.loss == "la" and n_rep and cfg.scenario == "class" else None)
        opt = _adam(self.model, cfg.lr)
        ema = [p.detach().clone() for p in self.model.parameters()] if cfg.ema else None
        teacher = copy.deepcopy(self.model).eval() if cfg.distill > 0 and old else None
        for epoch in range(cfg.epochs_per_task):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(cfg.lr, epoch, cfg.epochs_per_task)
            rng = np.random.default_rng([cfg.seed, t, epoch])
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            perm = torch.randperm(len(x), generator=gen)
            n_batches = math.ceil(len(x) / batch)
            rx, ry = (self._replay(n_batches * n_rep, old, rng) if n_rep
                      else (x[:0], y[:0]))
            loss_sum, n_seen = 0.0, 0
            self.model.train()
            for b in range(n_batches):
                bi = perm[b * batch:(b + 1) * batch]
                if len(bi) < 2:
                    continue
                xb, yb = x[bi], y[bi]
                allowed = _allowed(yb, new_classes, d.n_classes, cfg.scenario, self.task_of,
                                   d.tasks)
                if n_rep:
                    xr, yr = rx[b * n_rep:(b + 1) * n_rep], ry[b * n_rep:(b + 1) * n_rep]
                    xb, yb = torch.cat([xb, xr]), torch.cat([yb, yr])
                    allowed = torch.cat([allowed, _allowed(yr, seen, d.n_classes, cfg.scenario,
                                                           self.task_of, d.tasks)])
                loss_sum += self._step(xb, yb, allowed, shift, teacher, old, opt, ema) * len(yb)
                n_seen += len(yb)
            if on_epoch:
                on_epoch(t, epoch, {"loss": loss_sum / max(n_seen, 1)})
        # keep what the strategy keeps of this task, then balance the output layer
        if cfg.strategy == "replay":
            self.memory.add_task(d.train.codes[idx], d.train.labels[idx], t)
        elif cfg.strategy == "generative":
            self.generator.fit(d.train.codes[idx], d.train.labels[idx], seed=cfg.seed * 100 + t)
        if ema is not None:
            self._load_average(ema, x)
        if cfg.finetune_epochs and t > 0 and cfg.strategy in ("replay", "generative"):
            self._finetune(t, seen)
        if cfg.align and t > 0 and cfg.scenario == "class":
            align_weights(self.model.bn2, cur, old)
        self._record(t, time.perf_counter() - t0)

    def _fit_class_models(self, t: int, on_epoch: Callable[[int, int, dict], None] | None):
        """Task t for a learner that cannot forget: each of its classes' models fitted on that
        class's training codes alone (seeded by the run's seed and the class, not by t)."""
        d = self.data
        t0 = time.perf_counter()
        idx = np.flatnonzero(np.isin(d.train.labels, list(d.tasks[t])))
        self.learner.fit(d.train.codes[idx], d.train.labels[idx], seed=self.cfg.seed)
        if on_epoch:
            on_epoch(t, 0, {})
        self._record(t, time.perf_counter() - t0)

    def _record(self, t: int, seconds: float) -> None:
        """Task t is learned (in `seconds`): evaluate and append to the history."""
        d = self.data
        cur = list(d.tasks[t])
        self.train_seconds += seconds
        self.tasks_done = t + 1
        scores = {"val": self.evaluate(d.val, t)}
        if d.test is not None:
            scores["test"] = self.evaluate(d.test, t)
        self.history.append({"task": t + 1, "classes": cur, **scores,
                             "train_seconds": round(self.train_seconds, 3)})

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, allowed: torch.Tensor,
              shift: torch.Tensor | None, teacher: torch.nn.Module | None, old: list[int],
              opt: torch.optim.Optimizer, ema: list[torch.Tensor] | None) -> float:
        """One optimizer step on a batch: cross-entropy over the `allowed` outputs (shifted by
        the logit adjustment `shift`), plus distillation from `teacher` on the `old` classes;
        then the latent weights clipped and the weight average `ema` moved. Returns the loss."""
        cfg = self.cfg
        scores = self.model(xb)
        loss = F.cross_entropy(_masked(scores if shift is None else scores + shift, allowed), yb)
        if teacher is not None:
            with torch.no_grad():
                target = F.softmax(teacher(xb)[:, old] / DISTILL_T, dim=1)
            loss = loss + cfg.distill * DISTILL_T ** 2 * F.kl_div(
                F.log_softmax(scores[:, old] / DISTILL_T, dim=1), target, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clip_latent_weights(self.model)
        if ema is not None:
            with torch.no_grad():
                for a, p in zip(ema, self.model.parameters(), strict=True):
                    a.lerp_(p, 1 - cfg.ema)
        return loss.item()

    def _replay(self, n: int, classes: list[int], rng: np.random.Generator):
        """n replayed codes as ±1 rows with labels: drawn from the memory, or generated
        (classes in equal numbers)."""
        if self.cfg.strategy == "replay":
            pick = rng.integers(len(self.memory), size=n)
            codes, labels = self.memory.codes[pick], self.memory.labels[pick]
        else:
            codes, labels = self.generator.sample(math.ceil(n / len(classes)), rng, classes)
            order = rng.permutation(len(labels))[:n]
            codes, labels = codes[order], labels[order]
        x = unpack_signs(codes, self.data.n_bits).astype(np.float32)
        if self.cfg.flip > 0:
            x[rng.random(x.shape) < self.cfg.flip] *= -1
        return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))

    @torch.no_grad()
    def _load_average(self, average: list[torch.Tensor], x: torch.Tensor) -> None:
        """Take the averaged weights, then re-estimate the BatchNorm running statistics for them
        on the task's codes and the memory (a cumulative average over batches)."""
        for p, a in zip(self.model.parameters(), average, strict=True):
            p.copy_(a)
        if self.cfg.strategy == "replay" and len(self.memory):
            x = torch.cat([x, signs(self.memory.codes, self.data.n_bits)])
        bns = [m for m in self.model.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        self.model.train()
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.cfg.seed))
        for i in range(0, len(x) - 1, 1024):
            self.model(x[perm[i:i + 1024]])
        for m in bns:
            m.momentum = 0.1

    def _finetune(self, t: int, seen: list[int]) -> None:
        cfg, d = self.cfg, self.data
        head = self.model.bn2
        opt = (torch.optim.Adam(head.parameters(), lr=cfg.finetune_lr, fused=True)
               if cfg.finetune_head else _adam(self.model, cfg.finetune_lr))
        for epoch in range(cfg.finetune_epochs):
            for g in opt.param_groups:
                g["lr"] = cosine_lr(cfg.finetune_lr, epoch, cfg.finetune_epochs)
            rng = np.random.default_rng([cfg.seed, t, 10_000 + epoch])
            if cfg.strategy == "replay":
                codes, labels = self.memory.codes, self.memory.labels
            else:
                codes, labels = self.generator.sample(cfg.finetune_per_class, rng, seen)
            x = signs(codes, d.n_bits)
            y = torch.from_numpy(labels.astype(np.int64))
            gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
            perm = torch.randperm(len(x), generator=gen)
            self.model.train(not cfg.finetune_head)  # the head alone: running statistics frozen
            for i in range(0, len(x), cfg.batch_size):
                bi = perm[i:i + cfg.batch_size]
                if len(bi) < 2:
                    continue
                allowed = _allowed(y[bi], seen, d.n_classes, cfg.scenario, self.task_of, d.tasks)
                loss = F.cross_entropy(_masked(self.model(x[bi]), allowed), y[bi])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                clip_latent_weights(self.model)

    @torch.no_grad()
    def evaluate(self, split: Split, t: int) -> dict:
        """Accuracy on each task 1..t+1 and on all their classes together."""
        d = self.data
        seen = [c for cs in d.tasks[:t + 1] for c in cs]
        idx = np.flatnonzero(np.isin(split.labels, seen))
        y = torch.from_numpy(split.labels[idx])
        allowed = _allowed(y, seen, d.n_classes, self.cfg.scenario, self.task_of, d.tasks)
        if self.learner is not None:
            pred = torch.from_numpy(self.learner.predict(split.codes[idx], allowed.numpy()))
            return self._accuracies(pred, y, t)
        self.model.eval()
        if self.cfg.readout == "nme":
            scores = self._nme_scores(split.x[idx])
        else:
            scores = torch.cat([self.model(split.x[idx[i:i + 8192]])
                                for i in range(0, len(idx), 8192)])
        return self._accuracies(_masked(scores, allowed).argmax(1), y, t)

    def _accuracies(self, pred: torch.Tensor, y: torch.Tensor, t: int) -> dict:
        right = (pred == y).numpy()
        tasks = self.task_of[y].numpy()
        return {"per_task": [float(right[tasks == j].mean()) for j in range(t + 1)],
                "seen": float(right.mean())}

    @torch.no_grad()
    def _nme_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Cosine of each code's ±1 hidden vector with each class's mean hidden vector over its
        codes in the memory (-1e9 for a class without codes there)."""
        h_mem = self.model.hidden(signs(self.memory.codes, self.data.n_bits))
        labels = torch.from_numpy(self.memory.labels)
        means = torch.zeros(self.data.n_classes, h_mem.shape[1])
        means.index_add_(0, labels, h_mem)
        means = F.normalize(means, dim=1)
        scores = torch.cat([self.model.hidden(x[i:i + 8192]) @ means.T
                            for i in range(0, len(x), 8192)])
        empty = torch.bincount(labels, minlength=self.data.n_classes) == 0
        return scores.masked_fill(empty, -1e9)

    # state
    def memory_bytes(self) -> int:
        s = self.cfg.strategy
        if self.learner is not None:
            return self.learner.nbytes()
        if s == "replay":
            return self.memory.nbytes(self.data.n_bits)
        if s == "generative":
            return self.generator.nbytes()
        if s == "joint":  # every training code of every task is kept
            return len(self.data.train.labels) * ((self.data.n_bits + 7) // 8 + 1)
        return 0

    def summary(self) -> dict:
        return summarize(self.history, self.memory_bytes(), self.train_seconds)

    def state(self) -> dict:
        mem = self.memory.state_dict()
        gen = self.generator.state_dict()
        learner = {} if self.learner is None else {"learner": {
            k: v if k == "classes" else [torch.from_numpy(a) for a in v]
            for k, v in self.learner.state_dict().items()}}
        return {**provenance(CKPT_FORMAT, CKPT_VERSION, self.cfg.to_dict(), self.cfg.seed),
                "encoder_sha256": self.data.encoder_sha256, "tasks_done": self.tasks_done,
                "history": json.dumps(self.history), "train_seconds": self.train_seconds,
                "model": self.model.state_dict() if self.model is not None else {}, **learner,
                "memory": {"codes": torch.from_numpy(mem["codes"]),
                           "labels": torch.from_numpy(mem["labels"]), "n_seen": mem["n_seen"]},
                "generator": {"classes": gen["classes"],
                              "weights": [torch.from_numpy(w) for w in gen["weights"]],
                              "probs": [torch.from_numpy(q) for q in gen["probs"]]}}

    def load_state(self, st: dict, path) -> None:
        if st.get("format") != CKPT_FORMAT or st.get("format_version") != CKPT_VERSION:
            raise HybnnError(f"{path}: not a continual-learning checkpoint of version "
                             f"{CKPT_VERSION}")
        if st["config"] != self.cfg.to_dict():
            diff = sorted(k for k in st["config"] if st["config"][k] != self.cfg.to_dict().get(k))
            raise HybnnError(f"{path}: checkpoint was made with other settings ({', '.join(diff)}"
                             f"); drop --resume or use another --out")
        if st["encoder_sha256"] != self.data.encoder_sha256:
            raise HybnnError(f"{path}: checkpoint was trained on codes of another encoder")
        if self.model is not None:
            self.model.load_state_dict(st["model"])
        if self.learner is not None:
            self.learner.load_state_dict({k: v if k == "classes" else [a.numpy() for a in v]
                                          for k, v in st["learner"].items()})
        self.memory.load_state_dict({"codes": st["memory"]["codes"].numpy(),
                                     "labels": st["memory"]["labels"].numpy(),
                                     "n_seen": st["memory"]["n_seen"]})
        g = st["generator"]
        self.generator.load_state_dict({"classes": g["classes"],
                                        "weights": [w.numpy() for w in g["weights"]],
                                        "probs": [q.numpy() for q in g["probs"]]})
        self.tasks_done = int(st["tasks_done"])
        self.history = json.loads(st["history"])
        self.train_seconds = float(st["train_seconds"])


@torch.no_grad()
def align_weights(bn: torch.nn.BatchNorm1d, new: list[int], old: list[int]) -> float:
    """Weight aligning (WA) of an output layer of ±1 weights and BatchNorm: class c's effective
    weight norm is proportional to |γ_c| / sqrt(var_c + eps); the new classes' scores (γ and β)
    are multiplied by k = mean norm of `old` / mean norm of `new`. Returns k."""
    norm = bn.weight.abs() / torch.sqrt(bn.running_var + bn.eps)
    k = float(norm[old].mean() / norm[new].mean())
    bn.weight[new] *= k
    bn.bias[new] *= k
    return k


def summarize(history: list[dict], memory_bytes: int, train_seconds: float) -> dict:
    """Final metrics from the per-task evaluations, for validation and test alike (validation
    alone in a sealed run)."""
    out = {"memory_bytes": memory_bytes, "train_seconds": round(train_seconds, 2)}
    if not history:
        return out
    n = len(history)
    for split in [s for s in ("val", "test") if s in history[-1]]:
        acc = [h[split]["per_task"] for h in history]  # acc[i][j]: task j after task i
        final = acc[-1]
        earlier = range(n - 1)
        out[split] = {
            "final_seen_acc": history[-1][split]["seen"],
            "average_acc": float(np.mean(final)),
            "forgetting": float(np.mean([max(acc[i][j] for i in range(j, n - 1)) - final[j]
                                         for j in earlier])) if n > 1 else 0.0,
            "backward_transfer": float(np.mean([final[j] - acc[j][j] for j in earlier]))
            if n > 1 else 0.0,
            "seen_acc_curve": [h[split]["seen"] for h in history],
        }
    return out


def run_sequence(cfg: ContinualConfig, data: SequenceData, checkpoint: Path | None = None,
                 resume: bool = False, stop_after: int | None = None,
                 on_task: Callable[[int, dict], None] | None = None,
                 on_epoch: Callable[[int, int, dict], None] | None = None) -> Sequence:
    """Learn the tasks in order, writing `checkpoint` after each; with `resume`, continue from
    the checkpoint's last finished task. `stop_after` ends after that many tasks (tests)."""
    seq = Sequence(cfg, data)
    if resume and checkpoint is not None and Path(checkpoint).is_file():
        seq.load_state(torch.load(checkpoint, weights_only=True), checkpoint)
    last = len(data.tasks) if stop_after is None else min(stop_after, len(data.tasks))
    for t in range(seq.tasks_done, last):
        seq.learn_task(t, on_epoch)
        if checkpoint is not None:
            with atomic_path(checkpoint) as tmp:
                torch.save(seq.state(), tmp)
        if on_task:
            on_task(t, seq.history[-1])
    return seq
