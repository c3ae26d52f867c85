"""How the federated studies run their commands: `hybnn fed ... --json` and `hybnn train-bnn ...
--json` as child processes (so every number comes from a command anyone can rerun), in an
environment with Flower quiet and offline and a fixed thread count; what a study keeps of a run
(`summarize`); a run kept from an earlier, interrupted study when the same code made it with the
same command (`Runs`); the learning rates the reproduction study chose; and the common end of the
accuracy-per-round figures.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.flower_setup import flower_env
from hybnn_cli.study.provenance import end_run, read_result, run_record, same_code
from hybnn_cli.threads import child_env

# The optimizers the federated studies' plans and rows are written against: plain FedAvg with Adam
# clients, `hybnn fed`'s defaults before the tuning study's choice became its default. Every study
# command names them first, so a row's own options (its --lr, a candidate's or --fed-options)
# override them (the last value given counts), and a later default does not change what a
# recorded command runs.
FEDAVG = ["--client-opt", "adam", "--server-opt", "sgd", "--server-lr", "1.0",
          "--server-momentum", "0.0", "--server-schedule", "constant"]


def hybnn(cmd: list[str], env: dict, peak: dict | None = None) -> tuple[dict, float]:
    """Run `hybnn cmd` (ends in --json); its JSON output and wall seconds. `peak`, if given,
    receives the process's peak resident set size in bytes (`peak_rss`). A failed command raises
    `HybnnError` with the end of its stderr."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "hybnn"), *cmd], stdout=out,
                                stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise HybnnError(f"failed ({proc.returncode}): hybnn {shlex.join(cmd)}\n{stderr[-2000:]}")
    if peak is not None:
        peak["peak_rss"] = usage.ru_maxrss * 1024  # Linux reports kilobytes
    return json.loads(stdout), time.perf_counter() - t0


def run_env(threads: int) -> dict:
    """The environment of the `hybnn` runs: Flower quiet and offline (`flower_env`), `threads`
    threads (`child_env`)."""
    return flower_env(child_env(threads))


def study_choices(path: Path) -> tuple[dict, str]:
    """(task ("1".."5", "all") → the settings the reproduction study chose on validation (lr, and
    hidden for the 10-class problem), the study's commit)."""
    study = read_result(path, "hybnn-reproduction")
    chosen = {row["task"].removeprefix("task"): row["hybnn"]["chosen"] for row in study["tasks"]}
    chosen["all"] = study["ten_class"]["chosen"]
    return chosen, study["commit"]


def summarize(res: dict, seconds: float) -> dict:
    """What the scale and the privacy studies keep of one `hybnn fed --json` (`res`) that took
    `seconds`: accuracies and their curves, bytes, clients sampled, seconds per round (mean and
    std over the rounds), the run's mode, encoder and config."""
    rounds = res["rounds"]
    per_round = [r["seconds"] - p["seconds"] for p, r in zip([{"seconds": 0.0}] + rounds[:-1],
                                                            rounds, strict=True)]
    sampled = [len(r.get("clients", [])) for r in rounds]
    return {"test_acc": res["final_test_acc"], "best_test_acc": res["best_test_acc"],
            "initial_test_acc": res["initial_test_acc"], "accuracy_curve": res["accuracy_curve"],
            "final_val_acc": res.get("final_val_acc"), "val_curve": res.get("val_curve"),
            "uplink_per_round": res["bytes"]["uplink_per_round"],
            "downlink_per_round": res["bytes"]["downlink_per_round"],
            "uplink_total": res["bytes"]["uplink_total"],
            "downlink_total": res["bytes"]["downlink_total"],
            "sampled_per_round": sampled[-1] if sampled else 0,
            "valid_updates": [r.get("valid_updates", 0) for r in rounds],
            "seconds_per_round": sum(per_round) / max(len(per_round), 1),
            "seconds_per_round_std": statistics.stdev(per_round) if len(per_round) > 1 else 0.0,
            "wall_seconds": round(seconds, 1), "mode": res["mode"],
            "encoder_sha256": res["encoder_sha256"], "config": res["config"]}


class Runs:
    """A study's runs of `hybnn` in `env`, each with the record of its own run; `this_run` is the
    study's record (`provenance.start_run`), against which a kept run's code is compared."""

    def __init__(self, env: dict, this_run: dict):
        self.env, self.this_run = env, this_run

    def run(self, cmd: list[str], kept: dict | None,
            peak: dict | None = None) -> tuple[dict, bool]:
        """`hybnn cmd`'s JSON output, summarized (`summarize`; a `train-bnn` run's as it is),
        with its command and run record; or `kept`, the run already in the file, when it was
        made by this code with this command. And whether it ran. `peak`: as in `hybnn`."""
        command = "hybnn " + shlex.join(cmd)
        if kept and same_code(kept.get("run"), self.this_run) and kept.get("command") == command:
            return kept, False
        record = run_record()
        res, secs = hybnn(cmd, self.env, peak)
        summary = res if cmd[0] == "train-bnn" else summarize(res, secs)
        return {**summary, **(peak or {}), "command": command, "wall_seconds": round(secs, 1),
                "run": end_run(record)}, True


def save_accuracy_figure(fig, first_ax, path: Path,
                         ylabel: str = "global test accuracy (%)") -> None:
    """The accuracy-per-round figures' common end: y label, layout, PNG at `path`, closed."""
    import matplotlib.pyplot as plt

    first_ax.set_ylabel(ylabel)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
