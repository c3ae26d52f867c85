"""Extraction throughput from a folder of PNG files against the IDX path, in images per second.

MNIST's train and test images (all, or the first `--limit` of each split) are written out as PNG
files into a temporary folder (under `--work` if given); one VAE (`--vae`, by default the MNIST
encoder the Makefile's `results` target makes) encodes them from the IDX files, from the folder
with an empty cache of decoded images, and from the folder with its images cached, in turn,
`--repeats` times after an untimed round that checks the folder's codes equal to the IDX path's.
Writes `benchmarks/results/folder-throughput.json` (provenance header: `study.provenance`); the
study is `hybnn_cli.study.folder_throughput`, and `hybnn report --docs` renders its block in
docs/pretraining.md.

Usage: python benchmarks/folder_throughput.py [--vae runs/enc/vae-mnist.pt] [--repeats 5]
                                              [--threads 2] [--limit N] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.folder_throughput import run_throughput, summary
from hybnn_cli.study.provenance import RESULTS_DIR


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vae", type=Path, default=Path("runs/enc/vae-mnist.pt"))
    p.add_argument("--repeats", type=int, default=5, help="timed runs of each contender")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--batch-size", type=int, default=1000, help="extract's --batch-size")
    p.add_argument("--limit", type=int, default=None, help="the first N images of each split")
    p.add_argument("--data-dir", type=Path, default=None, help="where MNIST's IDX files are")
    p.add_argument("--work", type=Path, default=None, help="folder for the temporary PNGs")
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "folder-throughput.json")
    args = p.parse_args(argv)
    if not args.vae.is_file():
        raise HybnnError(f"{args.vae}: no such VAE checkpoint; make it with hybnn pretrain-vae "
                         f"(the Makefile's results target makes runs/enc/vae-mnist.pt)")
    argv_rec = ["python", "benchmarks/folder_throughput.py",
                *(argv if argv is not None else sys.argv[1:])]
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        bar = progress.add_task("write PNGs, then extract", total=None)
        rec = run_throughput(args.out, argv_rec, args.vae, args.threads, data_dir=args.data_dir,
                             limit=args.limit, repeats=args.repeats, batch_size=args.batch_size,
                             work=args.work, on_step=lambda n: progress.advance(bar, max(n, 1)))
    for which, v in summary(rec).items():
        print(f"{which:15s} {v['rate']:10.0f} images/s  ({v['ratio']:.2f}× the IDX path)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
