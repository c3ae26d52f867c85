"""The sealed test split: every choice is made on validation, and test is read once.

Two halves, both enforced here and only here:

- **A sealed process cannot read test.** A study runner starts every candidate run with
  `HYBNN_SEAL_TEST=1` in its environment. In such a process `guard("test")` raises `TestSealed`;
  the readers of codes files and image datasets call it, and the commands that would report test
  accuracy (`hybnn continual`, `hybnn fed`) leave test out instead of reading it. So code that runs
  candidates cannot compute a test number, by construction rather than by care.
- **A study follows a plan committed before it runs.** A plan file (JSON under
  `benchmarks/plans/`) names the candidates, the rule, the seeds, the horizon and the tie-break.
  `load_plan` refuses a plan that is not committed unchanged (unless it is a draft, for smoke
  tests), `check_same_plan` refuses to add to a result file made under another version of the plan,
  and `choose` applies the rule to candidate records after checking that none holds a test number.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybnn_cli.errors import HybnnError

ENV = "HYBNN_SEAL_TEST"


class TestSealed(HybnnError):
    """A sealed process (a study's candidate run) tried to read the test split."""

    __test__ = False  # not a pytest test class


def sealed() -> bool:
    """Whether this process runs sealed (the test split may not be read)."""
    return os.environ.get(ENV, "") not in ("", "0")


def guard(split: str, where: str = "") -> None:
    """Raise `TestSealed` when a sealed process asks for the test split."""
    if split == "test" and sealed():
        raise TestSealed(f"{where + ': ' if where else ''}the test split is sealed in this run "
                         f"({ENV}=1): choices are made on validation only")


def sealed_env(env: dict | None = None) -> dict:
    """A copy of `env` (default: this process's) in which a child process runs sealed."""
    return {**(os.environ if env is None else env), ENV: "1"}


def found_test_keys(record, path: str = "") -> list[str]:
    """Every key in a nested record that names the test split (`test`, `test_acc`, …)."""
    found = []
    if isinstance(record, dict):
        for k, v in record.items():
            here = f"{path}/{k}"
            if "test" in str(k).lower():
                found.append(here)
            found += found_test_keys(v, here)
    elif isinstance(record, list):
        for i, v in enumerate(record):
            found += found_test_keys(v, f"{path}[{i}]")
    return found


def assert_no_test(record, name: str) -> None:
    """Refuse a candidate record that holds a test number."""
    keys = found_test_keys(record)
    if keys:
        raise HybnnError(f"candidate {name}: its record holds test numbers ({', '.join(keys[:3])})"
                         f"; candidates run sealed and are judged on validation only")


# ── plans ─────────────────────────────────────────────────────────────────────────────────────
@dataclass(frozen=True)
class Plan:
    """A study's plan as committed: its path, its parsed content and the SHA-256 of its bytes."""

    path: Path
    body: dict
    sha256: str
    commit: str | None  # the last commit that touched the plan file (None for a draft)

    def record(self) -> dict:
        """What a result file keeps of the plan it was made under."""
        return {"path": str(self.path), "sha256": self.sha256, "committed_in": self.commit,
                "draft": self.commit is None, "rule": self.body.get("rule"),
                "tie_break": self.body.get("tie_break")}


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=30)


def load_plan(path: str | os.PathLike, draft: bool = False) -> Plan:
    """Read a plan; unless `draft`, refuse one that git does not hold committed and unchanged."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        body = json.loads(raw)
    except FileNotFoundError:
        raise HybnnError(f"{path}: no such plan file") from None
    except json.JSONDecodeError as e:
        raise HybnnError(f"{path}: not a JSON plan ({e})") from None
    for key in ("candidates", "rule", "seeds", "tie_break"):
        if key not in body:
            raise HybnnError(f"{path}: a plan names its {key!r}")
    sha = hashlib.sha256(raw).hexdigest()
    if draft:
        return Plan(path, body, sha, None)
    root = path.resolve().parent
    tracked = _git(root, "ls-files", "--error-unmatch", path.resolve().name)
    changed = _git(root, "status", "--porcelain", "--", path.resolve().name)
    if tracked.returncode != 0 or changed.stdout.strip():
        raise HybnnError(f"{path}: the plan is not committed as it is; commit it before the "
                         f"study runs (or run a --draft study that publishes nothing)")
    commit = _git(root, "log", "-1", "--format=%H", "--", path.resolve().name).stdout.strip()
    return Plan(path, body, sha, commit or None)


def check_same_plan(result: dict, plan: Plan, where: str) -> None:
    """Refuse to add to a result file made under another version of the plan."""
    old = (result.get("plan") or {}).get("sha256")
    if old is not None and old != plan.sha256:
        raise HybnnError(f"{where} was made under another version of {plan.path} "
                         f"(SHA-256 {old[:12]} against {plan.sha256[:12]}): a plan does not "
                         f"change once it has results; write a new plan and a new result file")


def choose(records: dict[str, dict], order: list[str], score: Callable[[dict], object],
           size: Callable[[str], float] | None = None) -> dict:
    """The candidate with the highest `score` (a number, or a tuple compared in order); ties go
    to the smaller `size` (fewer parameters), then to the one earlier in `order` (the plan's
    list). Every record must be free of test numbers. Returns {"name", "score", "tied": [names
    with the same score]}."""
    missing = [n for n in order if n not in records]
    if missing:
        raise HybnnError(f"cannot choose before every candidate has run: {', '.join(missing)}")
    for name in order:
        assert_no_test(records[name], name)
    scores = {n: score(records[n]) for n in order}
    best = max(scores.values())
    tied = [n for n in order if scores[n] == best]
    name = min(tied, key=lambda n: (size(n) if size else 0, order.index(n)))
    return {"name": name, "score": best, "tied": tied}
