"""Classification tasks over a labelled dataset: the paper's digit pairs, any pair, or all classes.

Task t (1..5) separates class 2t−2 from class 2t−1 (task 1 = 0 vs 1, …, task 5 = 8 vs 9);
`--digits A,B` picks any two classes; `--task all` is the 10-class problem. Labels are remapped
to 0..n−1 in the order of `classes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybnn_cli.errors import HybnnError

N_CLASSES = 10


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[int, ...]

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def select(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the samples in this task and their remapped labels (int64)."""
        labels = np.asarray(labels)
        lut = np.full(256, -1, dtype=np.int64)
        lut[list(self.classes)] = np.arange(len(self.classes))
        mapped = lut[labels.astype(np.int64)]
        idx = np.flatnonzero(mapped >= 0)
        return idx, mapped[idx]


def parse_task(task: str | None = None, digits: str | None = None) -> Task:
    """Build a Task from the CLI's --task (1..5 or all) or --digits A,B."""
    if digits is not None:
        if task is not None:
            raise HybnnError("give either --task or --digits, not both")
        try:
            classes = tuple(int(d) for d in digits.split(","))
        except ValueError:
            raise HybnnError(
                f"--digits must be class numbers like 3,8; got '{digits}'") from None
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise HybnnError(f"--digits needs at least two different classes; got '{digits}'")
        if not all(0 <= c < N_CLASSES for c in classes):
            raise HybnnError(f"--digits classes must be in 0..{N_CLASSES - 1}; got '{digits}'")
        return Task("digits-" + "-".join(map(str, classes)), classes)
    task = "3" if task is None else str(task).strip().lower()
    if task == "all":
        return Task("all", tuple(range(N_CLASSES)))
    if task.isdigit() and 1 <= int(task) <= 5:
        t = int(task)
        return Task(f"task{t}", (2 * t - 2, 2 * t - 1))
    raise HybnnError(f"unknown task '{task}': use 1..5 (digit pairs 0/1 … 8/9) or all")


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
