"""The settings of a continual run (`ContinualConfig`) and their defaults, torch-free: `hybnn
continual`'s options are made from the fields and `HELP` (`cli.config_options`), and the run
checks its settings here, with one line naming the option.

The defaults are the best found: per scenario and strategy, the options the continual study chose
on validation (benchmarks/results/continual.json, "chosen"; tests/test_defaults.py keeps the two
equal) are `CHOSEN`; a setting left at None takes its value from there, else from `BASE`. By the
study's rule, none and joint take no options, and in the task scenario a strategy without a
choice of its own takes the class scenario's.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from hybnn_cli.continual.memory import POLICIES
from hybnn_cli.errors import HybnnError

SCENARIOS = ("class", "task")
STRATEGIES = ("none", "replay", "generative", "joint", "mixture", "prototype")
# strategies without a network: one model per class, fitted on that class's codes alone
# (`continual.class_models`)
CLASS_MODELS = ("mixture", "prototype")
LOSSES = ("ace", "la", "plain")
READOUTS = ("scores", "nme")

BASE = {"loss": "plain", "flip": 0.0, "balanced_batches": False, "hidden": 512}
# mixture components per class when --components is left out: generative replay's, and the class
# models' as the forget-proof study chose them on validation (`benchmarks/results/forgetproof.json`,
# the `mnist` encoder's choice; tests/test_defaults.py checks it)
COMPONENTS = {"generative": 50, "mixture": 200, "prototype": 200}
CHOSEN = {
    ("class", "replay"): {"loss": "la", "flip": 0.1, "hidden": 2048},
    ("class", "generative"): {"loss": "la", "balanced_batches": True},
    ("task", "replay"): {"loss": "plain", "flip": 0.1, "balanced_batches": True, "hidden": 2048},
    ("task", "generative"): {"loss": "la", "balanced_batches": True},  # the class scenario's
}


@dataclass
class ContinualConfig:
    scenario: str = "class"
    strategy: str = "replay"
    memory: int = 2000  # codes kept by `replay`
    memory_policy: str = "balanced"  # balanced or reservoir
    components: int | None = None  # mixture components per class (generative and CLASS_MODELS)
    epochs_per_task: int = 20
    batch_size: int = 128  # new codes per batch
    replay_ratio: float = 1.0  # replayed (or generated) codes per new code in each batch
    balanced_batches: bool | None = None  # replay ratio = old classes / new classes instead
    loss: str | None = None  # plain, ace or la (replay and generative)
    finetune_epochs: int = 0  # balanced fine-tuning at the end of each task (0: none)
    finetune_lr: float = 1e-3
    finetune_head: bool = False  # fine-tune only the output layer's per-class scale and offset
    finetune_per_class: int = 1000  # pseudo-codes per class per fine-tuning epoch (`generative`)
    distill: float = 0.0  # weight of the distillation loss on the old classes' scores
    flip: float | None = None  # probability of flipping each bit of a replayed code
    align: bool = False  # weight aligning of the new classes' scores after each task (WA)
    readout: str = "scores"  # scores, or nme: nearest mean of exemplars on the hidden layer
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: none)
    lr: float = 1e-2
    hidden: int | None = None
    seed: int = 0
    threads: int = 0  # CPU threads (torch and kernels); 0: every core (`threads.resolve`)
    val_fraction: float = 0.1
    task_order: str | None = None  # e.g. "3,1,5,2,4" (task numbers from 1); None: 1, 2, … in order
    tasks: str | None = None  # e.g. "cat,dog;ant,bee" (`task_sequence`); None: consecutive pairs

    def __post_init__(self) -> None:
        chosen = CHOSEN.get((self.scenario, self.strategy), {})
        for name, base in BASE.items():
            if getattr(self, name) is None:
                setattr(self, name, chosen.get(name, base))
        if self.components is None:
            self.components = COMPONENTS.get(self.strategy, COMPONENTS["generative"])
        self.check()

    def to_dict(self) -> dict:
        """The settings; `task_order` only when given (so the records of runs in the usual order
        keep the settings they were made with)."""
        d = asdict(self)
        for key in ("task_order", "tasks"):
            if d[key] is None:
                del d[key]
        return d

    def n_tasks(self, n_classes: int) -> int:
        """How many tasks the sequence has: those of --tasks, else the pairs of classes."""
        return len(self.tasks.split(";")) if self.tasks is not None else n_classes // 2

    def tasks_in_order(self, n_tasks: int) -> list[int]:
        """The tasks' indices (from 0) in the order they are learned; HybnnError (one line) when
        --task-order is not a permutation of 1..n_tasks."""
        if self.task_order is None:
            return list(range(n_tasks))
        try:
            order = [int(p) for p in self.task_order.split(",")]
        except ValueError:
            order = []
        if sorted(order) != list(range(1, n_tasks + 1)):
            example = ",".join(map(str, range(n_tasks, 0, -1)))
            raise HybnnError(f"--task-order '{self.task_order}' is not a permutation of the "
                             f"tasks 1 to {n_tasks}, e.g. {example}")
        return [t - 1 for t in order]

    @classmethod
    def from_dict(cls, d: dict) -> ContinualConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def check(self, n_classes: int | None = None) -> None:
        """Raise HybnnError naming the option when a setting is out of range or the settings
        contradict each other; with `n_classes`, also when the memory cannot keep every class."""
        if self.strategy not in STRATEGIES:
            raise HybnnError(f"unknown strategy '{self.strategy}': use {', '.join(STRATEGIES)}")
        if self.scenario not in SCENARIOS:
            raise HybnnError(f"unknown scenario '{self.scenario}': use {' or '.join(SCENARIOS)}")
        if self.memory_policy not in POLICIES:
            raise HybnnError(f"unknown memory policy '{self.memory_policy}': use "
                             f"{' or '.join(POLICIES)}")
        if self.loss not in LOSSES:
            raise HybnnError(f"unknown loss '{self.loss}': use {' or '.join(LOSSES)}")
        if self.readout not in READOUTS:
            raise HybnnError(f"unknown read-out '{self.readout}': use {' or '.join(READOUTS)}")
        if self.readout == "nme" and self.strategy != "replay":
            raise HybnnError("--readout nme needs the stored codes of --strategy replay")
        if not 0 <= self.ema < 1:
            raise HybnnError(f"--ema must be in [0, 1), got {self.ema}")
        if not 0 <= self.flip <= 0.5:
            raise HybnnError(f"--flip must be in [0, 0.5], got {self.flip}")
        for name in ("memory", "components", "hidden", "epochs_per_task"):
            if getattr(self, name) < 1:
                raise HybnnError(f"--{name.replace('_', '-')} must be at least 1, got "
                                 f"{getattr(self, name)}")
        for name in ("replay_ratio", "distill", "finetune_epochs"):
            if not getattr(self, name) >= 0:
                raise HybnnError(f"--{name.replace('_', '-')} must be >= 0, got "
                                 f"{getattr(self, name)}")
        for name in ("lr", "finetune_lr"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise HybnnError(f"--{name.replace('_', '-')} must be > 0, got "
                                 f"{getattr(self, name)}")
        if self.batch_size < 2:
            raise HybnnError(f"--batch-size must be at least 2, got {self.batch_size}")
        if not 0 <= self.val_fraction <= 0.9:
            raise HybnnError(f"--val-fraction must be in [0, 0.9], got {self.val_fraction}")
        if self.task_order is not None:
            self.tasks_in_order(len(self.task_order.split(",")))
        if n_classes is not None:
            self.tasks_in_order(self.n_tasks(n_classes))
        if n_classes is not None and self.strategy == "replay" and self.memory < n_classes:
            raise HybnnError(f"--memory {self.memory} is less than the {n_classes} classes: the "
                             f"memory must keep at least one code per class")


def task_sequence(text: str | None, names: list[str] | None, n_classes: int) -> list[tuple]:
    """The classes of each task, in order: --tasks "a,b;c,d;…" (classes by the names the codes
    file records, else by index; a class in one task at most; at least two tasks), or without
    --tasks the consecutive pairs of classes (0/1, 2/3, …: Split-MNIST), which need an even
    number of classes, at least four."""
    from hybnn_cli.data.tasks import class_index

    if text is None:
        if n_classes < 4 or n_classes % 2:
            raise HybnnError(f"{n_classes} classes; the default task sequence (consecutive pairs) "
                             f"needs an even number of classes, at least 4: give the tasks with "
                             f"--tasks, e.g. \"a,b;c,d\"")
        return [(c, c + 1) for c in range(0, n_classes, 2)]
    names = None if names is None else [str(n) for n in names]
    tasks, seen = [], {}
    for t, part in enumerate(text.split(";"), 1):
        items = [p.strip() for p in part.split(",") if p.strip()]
        if not items:
            raise HybnnError(f"--tasks '{text}': task {t} names no class")
        classes = tuple(class_index(item, names, "--tasks") for item in items)
        for c, item in zip(classes, items, strict=True):
            if c in seen:
                raise HybnnError(f"--tasks '{text}': class '{item}' is in task {seen[c]} and "
                                 f"task {t}; each class belongs to one task")
            seen[c] = t
        tasks.append(classes)
    if len(tasks) < 2:
        raise HybnnError(f"--tasks '{text}': give at least two tasks, separated by ';'")
    if any(c >= n_classes for c in seen):
        raise HybnnError(f"--tasks '{text}': a class index is past the {n_classes} classes")
    return tasks


def default_text(name: str) -> str:
    """How a setting's default depends on the scenario and strategy, for its help."""
    where = {}
    for (scenario, strategy), chosen in CHOSEN.items():
        if name in chosen and chosen[name] != BASE[name]:
            where.setdefault(_shown(chosen[name]), []).append(f"{scenario} {strategy}")
    parts = [f"{value} for {', '.join(runs)}" for value, runs in where.items()]
    return f" (default: {'; '.join(parts + [f'else {_shown(BASE[name])}'])})"


def _shown(value) -> str:
    return {True: "on", False: "off"}.get(value, str(value)) if isinstance(value, bool) else \
        str(value)


# The help of `hybnn continual`'s option for each setting (`cli.config_options` makes the options
# from the fields named here, with the fields' defaults).
HELP = {
    "scenario": "class (one output layer for all classes seen; the task is not told at test "
                "time) or task (the task is known; outputs masked to its two classes).",
    "strategy": "none (fine-tuning), replay (a memory of codes), generative (per-class Bernoulli "
                "mixtures, no stored codes), joint (all tasks so far; upper bound), or a learner "
                "that cannot forget, one model per class fitted on that class's codes alone: "
                "mixture (a Bernoulli mixture per class; the class of highest likelihood) or "
                "prototype (its components' means rounded to bits; the nearest prototype in "
                "Hamming distance, on the XNOR-popcount kernels).",
    "memory": "Codes kept by replay (a code of n bits costs ceil(n / 8) bytes, plus a label "
              "byte).",
    "memory_policy": "balanced (each class an equal share) or reservoir.",
    "components": "Mixture components per class (default: "
                  f"{COMPONENTS['generative']} for generative; {COMPONENTS['mixture']} for "
                  f"mixture and {COMPONENTS['prototype']} for prototype, as the forget-proof "
                  "study chose on validation).",
    "epochs_per_task": "Epochs of training on each task's codes.",
    "batch_size": "New codes per batch.",
    "replay_ratio": "Replayed codes per new code in each batch.",
    "balanced_batches": "Replay as many codes per old class as new codes per new class in each "
                        "batch (replay ratio = old / new classes)" + default_text(
                            "balanced_batches") + ".",
    "loss": "ace (new codes compete only within their task, replayed codes across all seen "
            "classes), la (logit adjustment by each class's share of the batches) or plain"
            + default_text("loss") + ".",
    "finetune_epochs": "Balanced fine-tuning on the memory at the end of each task.",
    "finetune_lr": "Learning rate of the balanced fine-tuning.",
    "finetune_head": "Fine-tune only the output layer's per-class scale and offset (a bias "
                     "correction of the scores).",
    "flip": "Probability of flipping each bit of a replayed code (augmentation), in [0, 0.5]"
            + default_text("flip") + ".",
    "distill": "Weight of distillation toward the previous task's model on the old classes' "
               "scores.",
    "align": "Weight aligning (WA) after each task: scale the new classes' scores to the old "
             "classes' mean output weight norm (class scenario).",
    "readout": "scores, or nme: nearest mean of the memory's codes on the hidden layer (iCaRL; "
               "replay only).",
    "ema": "Decay per step of an exponential moving average of the weights, taken at the end of "
           "each task (0: none; e.g. 0.999).",
    "lr": "Adam learning rate (cosine over each task).",
    "hidden": "Hidden width of the BNN" + default_text("hidden") + ".",
    "val_fraction": "Share of each class of the training split held out for validation (the same "
                    "images in every run; 0: none). Choose settings on the validation accuracy, "
                    "never on the test accuracy.",
    "tasks": "The task sequence: the classes of each task, tasks separated by ';', classes by "
             "the names the codes file records (or by index), e.g. \"cat,dog;ant,bee;car,bus\" "
             "(default: consecutive pairs of classes, 0/1, 2/3, …).",
    "task_order": "Order in which the tasks are learned, a permutation of the task numbers, e.g. "
                  "3,1,5,2,4 (default: 1, 2, … in order).",
}
