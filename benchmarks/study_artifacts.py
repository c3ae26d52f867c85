"""The reproduction study's first-seed models and codes under stable names, for the benchmarks that
start from them (the codes of `benchmarks/fedpriv.py`; a bundle of them for anyone who wants one).

From the study's results (`benchmarks/results/reproduction.json`) and its work folder, where
each artifact's name holds the digest of its stage's key (which changes with the code version),
it copies into `--out`:
- `vae.pt`: the MNIST VAE of the study's first seed, and `codes-mnist.h5`, its codes;
- `bnn-<task>.pt`: for each task of the accuracy table (task1..task5, and `all` for the 10-class
  BNN when the study has it), the BNN of that seed at the setting chosen on validation;
- `artifacts.json`: where each file came from (the study, its commit, the seed).
Then `hybnn export <out>/bnn-*.pt --vae <out>/vae.pt --int8 --out <out>/bundle` makes the bundle.

Usage: python benchmarks/study_artifacts.py [--study benchmarks/results/reproduction.json]
           [--work runs/study] [--out runs/study-seed0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from hybnn_cli.fileio import atomic_path
from hybnn_cli.study.provenance import read_result


def first_seed_files(study: dict, work: Path) -> dict[str, Path]:
    """Stable name → the study's artifact, for the first seed."""
    seed = study["config"]["seeds"][0]
    vae, codes = study["vaes"][0], study["codes"][0]
    if vae is None or codes is None:
        sys.exit("the study's first VAE or its codes are not done; run `hybnn reproduce` first")
    files = {"vae.pt": work / vae["path"], "codes-mnist.h5": work / codes["path"]}
    entries = {row["task"]: row["hybnn"] for row in study["tasks"]}
    if study.get("ten_class"):
        entries["all"] = study["ten_class"]
    for task, entry in entries.items():
        if entry is None:
            sys.exit(f"the study's {task} BNN is not done; run `hybnn reproduce` first")
        [run] = [r for r in entry["runs"] if r["seed"] == seed]
        files[f"bnn-{task}.pt"] = work / run["path"]
    return files


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"),
                   help="the study's work folder")
    p.add_argument("--out", type=Path, default=Path("runs/study-seed0"))
    args = p.parse_args(argv)
    study = read_result(args.study, "hybnn-reproduction")
    files = first_seed_files(study, args.work)
    for name, src in files.items():
        with atomic_path(args.out / name) as tmp:
            shutil.copyfile(src, tmp)
        print(f"{src} → {args.out / name}", file=sys.stderr)
    with atomic_path(args.out / "artifacts.json") as tmp:
        tmp.write_text(json.dumps({"study": str(args.study), "study_commit": study["commit"],
                                   "seed": study["config"]["seeds"][0],
                                   "files": {n: str(s) for n, s in files.items()}}, indent=1))


if __name__ == "__main__":
    main()
