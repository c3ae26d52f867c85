"""Work on the reproduction study's folder from outside `hybnn reproduce`:

- `prefill`: make some of the study's stages in this process, into the study's cache, so that
  several processes can share the work on a multi-core or shared machine; a later `hybnn
  reproduce` with the same settings finds those stages done and reuses them
  (`benchmarks/prefill_stages.py`);
- `copy_first_seed`: the study's first-seed models and codes under stable names, for the
  benchmarks that start from them (`benchmarks/study_artifacts.py`).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from hybnn_cli.data.tasks import parse_task
from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.provenance import read_result
from hybnn_cli.study.reproduce import Study
from hybnn_cli.study.work_cache import Reporter, StageBusy


# ── prefilling the stage cache ────────────────────────────────────────────────────────────────
class PrintDone(Reporter):
    """Prints each stage as it is done or found done, with the time."""

    def done(self, description: str, result: str, cached: bool) -> None:
        print(time.strftime("%H:%M:%S"), "reused" if cached else "done", description, result,
              flush=True)


def prefill_job(study: Study, job: str) -> None:
    """One job: `vae:S` (the MNIST VAE of seed S and its codes), `bnn:T` (the task BNN of task T,
    whole, on every seed's codes) or `T:B` (the binary CNN on task T with binarization B,
    whole)."""
    if job.startswith("vae:"):
        seed = int(job[4:])
        study.codes(study.vae("mnist", seed), "mnist")
    elif job.startswith("bnn:"):
        codes_of = {s: study.codes(study.vae("mnist", s), "mnist") for s in study.cfg.seeds}
        study.bnn_entry(codes_of, "mnist", parse_task(job[4:]))
    else:
        task, binarize = job.split(":")
        study.cnn_entry("mnist", parse_task(task), binarize)


def prefill(study: Study, jobs: list[str]) -> None:
    """Each job in turn; one whose stage another live process is making is skipped (its lock
    file), with a line saying so."""
    for job in jobs:
        try:
            prefill_job(study, job)
        except StageBusy as e:  # another process has it: go on with the next job
            print(time.strftime("%H:%M:%S"), "busy", job, e, flush=True)


# ── the first seed's artifacts ────────────────────────────────────────────────────────────────
def first_seed_files(study: dict, work: Path) -> dict[str, Path]:
    """Stable name → the study's artifact, for the first seed."""
    seed = study["config"]["seeds"][0]
    vae, codes = study["vaes"][0], study["codes"][0]
    if vae is None or codes is None:
        raise HybnnError("the study's first VAE or its codes are not done; run `hybnn reproduce` "
                         "first")
    files = {"vae.pt": work / vae["path"], "codes-mnist.h5": work / codes["path"]}
    entries = {row["task"]: row["hybnn"] for row in study["tasks"]}
    if study.get("ten_class"):
        entries["all"] = study["ten_class"]
    for task, entry in entries.items():
        if entry is None:
            raise HybnnError(f"the study's {task} BNN is not done; run `hybnn reproduce` first")
        [run] = [r for r in entry["runs"] if r["seed"] == seed]
        files[f"bnn-{task}.pt"] = work / run["path"]
    return files


def copy_first_seed(study_path: Path, work: Path, out: Path) -> dict[str, Path]:
    """Copy the first seed's artifacts of the study (`study_path`, its work folder `work`) into
    `out` under stable names, with `artifacts.json` saying where each came from."""
    study = read_result(study_path, "hybnn-reproduction")
    files = first_seed_files(study, work)
    for name, src in files.items():
        with atomic_path(out / name) as tmp:
            shutil.copyfile(src, tmp)
        print(f"{src} → {out / name}", file=sys.stderr)
    with atomic_path(out / "artifacts.json") as tmp:
        tmp.write_text(json.dumps({"study": str(study_path), "study_commit": study["commit"],
                                   "seed": study["config"]["seeds"][0],
                                   "files": {n: str(s) for n, s in files.items()}}, indent=1))
    return files
