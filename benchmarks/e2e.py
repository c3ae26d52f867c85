"""End to end, uint8 pixels to labels: a deploy bundle (ONNX Runtime encoder + XNOR head) against
the torch pipeline (encoder in `inference_mode`, threshold, the float32 BNN head at its best), in
one process, on the same MNIST test images, with the same number of threads.

The study is `hybnn_cli.study.e2e_study` (agreement of codes and labels on every test image, speed
at batch 4096 and at batch 1 against torch eager and torch at its best, the head on its numpy and
its compiled kernel at both batches, cold start, the installed sizes of the base install (no
numba), the `fast` one and one with torch, and `hybnn predict`'s peak memory in the base and the
fast install); this script parses the options and runs it, writing
`benchmarks/results/e2e.json` with the provenance header of the run.

Usage: python benchmarks/e2e.py --bundle runs/e2e/bundle [--venvs runs/e2e/venvs]
           [--threads 2] [--head all] [--out benchmarks/results/e2e.json] [--quick]
           [--torch-candidates jit,compile] [--batch 4096] [--dataset mnist]
The bundle's checkpoints (paths recorded in its manifest) must be at hand for the torch side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.study import e2e_study
from hybnn_cli.study.e2e_torch import TORCH_CANDIDATES
from hybnn_cli.study.provenance import REPO_ROOT

EXAMPLE = ("Example: python benchmarks/e2e.py --bundle runs/e2e/bundle "
           "--venvs runs/e2e/venvs --threads 2")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EXAMPLE)
    p.add_argument("--bundle", type=Path, default=Path("runs/e2e/bundle"))
    p.add_argument("--venvs", type=Path, default=Path("runs/e2e/venvs"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--head", default="all")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/e2e.json")
    p.add_argument("--quick", action="store_true", help="few repeats, no venvs (a smoke run)")
    p.add_argument("--batch", type=int, default=4096, help="the large batch (and batch 1)")
    p.add_argument("--torch-candidates", default=",".join(TORCH_CANDIDATES),
                   help="how torch at its best may run the folded encoder (comma-separated, of "
                   f"{', '.join(TORCH_CANDIDATES)}); the fastest that works is chosen")
    p.add_argument("--dataset", default="mnist", help="test images of this dataset (tests use a "
                   "generated one)")
    a = p.parse_args(argv)
    candidates = tuple(c for c in a.torch_candidates.split(",") if c)
    unknown = [c for c in candidates if c not in TORCH_CANDIDATES]
    if unknown or not candidates:
        p.error(f"--torch-candidates: choose from {', '.join(TORCH_CANDIDATES)}")
    argv_rec = ["python", "benchmarks/e2e.py", *(argv if argv is not None else sys.argv[1:])]
    e2e_study.run(a.bundle, a.out, argv_rec, venvs=a.venvs, threads=a.threads, head=a.head,
                  data_dir=a.data_dir, quick=a.quick, batch=a.batch, candidates=candidates,
                  dataset=a.dataset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
