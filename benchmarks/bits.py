"""How many bits does HyBNN need: latent bits against VAE reconstruction, BNN accuracy (all
classes and the five class pairs), code bytes and head bytes, on MNIST and Fashion-MNIST, under a
plan committed before it runs (`benchmarks/plans/bits.json`).

For every dataset, number of bits and seed of the plan (a point): `hybnn pretrain-vae
--latent-bits B`, `hybnn extract`, then `hybnn train-bnn` and `hybnn export` for every task,
each with `--json` and one thread, `--jobs` points at a time. Nothing is chosen: every point is
reported, and test is read once per BNN by train-bnn's final evaluation. Writes
`benchmarks/results/bits.json` (provenance header; the plan's record; each stage with the
commit, load and times it ran at) after every stage, and the figure at the end. A rerun adds only
what is missing (an interrupted VAE resumes from its last epoch) and refuses a result file made
under another version of the plan. `--quick` runs a tiny draft of the plan (bits 16 and 40, one
seed, two tasks, a few hundred images, one epoch) into a temporary folder: it publishes nothing.
The study is `hybnn_cli.study.bits_study`.

Usage: python benchmarks/bits.py --jobs 2
       [--plan benchmarks/plans/bits.json] [--work runs/bits-study]
       [--out benchmarks/results/bits.json] [--figure benchmarks/results/bits.png]
       python benchmarks/bits.py --quick [--dataset mnist]    # a smoke test, in a temp folder
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import load_plan
from hybnn_cli.study.bits_study import FORMAT, check_unpublished, quick_plan, run_bits_study

__all__ = ["FORMAT", "main"]  # FORMAT: the result file's, which its readers check


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", type=Path, default=Path("benchmarks/plans/bits.json"))
    p.add_argument("--draft", action="store_true", help="allow an uncommitted plan (smoke "
                   "tests; the file records that it is a draft; publishes nothing)")
    p.add_argument("--quick", action="store_true", help="a tiny draft of the plan in a "
                   "temporary folder (unless --work/--out/--figure say where): publishes nothing")
    p.add_argument("--dataset", action="append", help="with --quick: only these datasets")
    p.add_argument("--work", type=Path, help="the models and codes (default runs/bits-study)")
    p.add_argument("--out", type=Path, help="default benchmarks/results/bits.json")
    p.add_argument("--figure", type=Path, help="default benchmarks/results/bits.png")
    p.add_argument("--jobs", type=int, default=1, help="points at a time (one thread each)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        raise HybnnError("--jobs takes a number of points at a time, 1 or more")
    if args.dataset and not args.quick:
        raise HybnnError("--dataset narrows a --quick run; the study runs the plan's datasets")
    plan = load_plan(args.plan, draft=args.draft or args.quick)
    if args.quick:
        plan = quick_plan(plan, args.dataset)
        tmp = Path(tempfile.mkdtemp(prefix="hybnn-bits-quick-"))
        args.work, args.out = args.work or tmp / "work", args.out or tmp / "bits.json"
        args.figure = args.figure or tmp / "bits.png"
    work = args.work or Path("runs/bits-study")
    out = args.out or Path("benchmarks/results/bits.json")
    figure = args.figure or Path("benchmarks/results/bits.png")
    check_unpublished(plan, [out, figure])
    body = run_bits_study(plan, work, out, ["python", "benchmarks/bits.py",
                                            *(argv if argv is not None else sys.argv[1:])],
                          jobs=args.jobs, figure=figure)
    print(f"wrote {out} and {figure}", file=sys.stderr)
    return body


if __name__ == "__main__":
    try:
        main()
    except HybnnError as e:
        sys.exit(str(e))
