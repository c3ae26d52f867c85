"""Classification tasks over a labelled dataset: the paper's digit pairs, any classes by name or
index, or all classes.

Task t (1..5) separates class 2t−2 from class 2t−1 (task 1 = 0 vs 1, …, task 5 = 8 vs 9);
`--digits A,B` picks any classes by index; `--classes cat,dog` by name (a name the codes file
records first, else an index); `--task all` is every class of the data (ten for MNIST). Labels are
remapped to 0..n−1 in the order of `classes`; a task made with the data's class names keeps the
names of its classes in that order (`Task.class_names`), which checkpoints and deploy files record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from hybnn_cli.errors import HybnnError

N_CLASSES = 10


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...] | None = None  # the names of `classes`, in output order

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def record(self) -> dict:
        """What a checkpoint records of the task."""
        out = {"name": self.name, "classes": list(self.classes)}
        if self.class_names is not None:
            out["class_names"] = list(self.class_names)
        return out

    def shown(self) -> str:
        """The classes as a reader names them ("4 vs 5", "cat vs dog", "10 classes")."""
        if self.n_classes > 3:
            return f"{self.n_classes} classes"
        return " vs ".join(self.class_names or map(str, self.classes))

    def select(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the samples in this task and their remapped labels (int64)."""
        labels = np.asarray(labels)
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.classes)] = np.arange(len(self.classes))
        mapped = lut[labels.astype(np.int64)]
        idx = np.flatnonzero(mapped >= 0)
        return idx, mapped[idx]


def parse_task(task: str | None = None, digits: str | None = None, classes: str | None = None,
               names=None) -> Task:
    """Build a Task from the CLI's --task (1..5, all, or classes like cat,dog), --digits A,B or
    --classes A,B. `names`: the data's class names (from the codes file); without them the data
    has the ten classes of MNIST."""
    given = [o for o, v in (("--task", task), ("--digits", digits), ("--classes", classes))
             if v is not None]
    if len(given) > 1:
        raise HybnnError(f"give either {' or '.join(given)}, not several")
    names = None if names is None else tuple(str(n) for n in names)
    n = N_CLASSES if names is None else len(names)
    if digits is not None:
        return _by_index(digits, n, names)
    if classes is not None or (task is not None and "," in str(task)):
        return parse_classes(classes if classes is not None else str(task), names)
    task = "3" if task is None else str(task).strip().lower()
    if task == "all":
        return Task("all", tuple(range(n)), names)
    if task.isdigit() and 1 <= int(task) <= 5:
        t = int(task)
        if 2 * t > n:
            raise HybnnError(f"task {t} separates classes {2 * t - 2} and {2 * t - 1}, but the "
                             f"data has {n} classes; pick classes with --classes")
        pair = (2 * t - 2, 2 * t - 1)
        return Task(f"task{t}", pair, None if names is None else tuple(names[c] for c in pair))
    raise HybnnError(f"unknown task '{task}': use 1..5 (digit pairs 0/1 … 8/9), all, or "
                     f"--classes A,B")


def _by_index(digits: str, n: int, names) -> Task:
    try:
        classes = tuple(int(d) for d in digits.split(","))
    except ValueError:
        raise HybnnError(f"--digits must be class numbers like 3,8; got '{digits}'") from None
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise HybnnError(f"--digits needs at least two different classes; got '{digits}'")
    if not all(0 <= c < n for c in classes):
        raise HybnnError(f"--digits classes must be in 0..{n - 1}; got '{digits}'")
    return Task("digits-" + "-".join(map(str, classes)), classes,
                None if names is None else tuple(names[c] for c in classes))


def class_index(item: str, names, option: str = "--classes") -> int:
    """The index of one class given by name (one of `names`) or, failing that, by index."""
    n = N_CLASSES if names is None else len(names)
    if names is not None and item in names:
        return names.index(item)
    if item.isdigit() and int(item) < n:
        return int(item)
    known = ", ".join(names[:12]) + (", …" if len(names) > 12 else "") if names else \
        f"0..{n - 1}"
    raise HybnnError(f"{option}: unknown class '{item}'; the classes are {known}")


def parse_classes(text: str, names=None, option: str = "--classes", at_least: int = 2) -> Task:
    """A task of the classes in a comma-separated list of names or indices ("cat,dog", "3,8")."""
    names = None if names is None else tuple(str(n) for n in names)
    items = [p.strip() for p in str(text).split(",") if p.strip()]
    classes = tuple(class_index(item, names, option) for item in items)
    if len(classes) < at_least or len(set(classes)) != len(classes):
        raise HybnnError(f"{option} needs at least {at_least} different classes; got '{text}'")
    shown = [names[c] if names is not None else str(c) for c in classes]
    slug = "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", s)[:24] for s in shown)
    return Task(f"classes-{slug}", classes, None if names is None else tuple(shown))


def parse_pair_tasks(value: str) -> list[int]:
    """The digit-pair tasks (1..5) of a comma-separated option value such as "1,2,3" (`--tasks`);
    the 10-class problem is not one of them."""
    from hybnn_cli.options import parse_list

    out = []
    for item in parse_list(value, "--tasks"):
        if parse_task(item).name == "all":
            raise HybnnError("--tasks takes digit-pair tasks 1..5; the 10-class run is "
                             "--ten-class")
        out.append(int(item))
    return out
