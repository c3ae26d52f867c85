"""FedHyBNN at scale: many clients, a fraction sampled per round, against centralized training.

On one codes file (real MNIST codes), for each task, number of clients N, partition and uplink,
it runs `hybnn fed --clients N --fraction F --json` through the CLI (so every number comes from a
command anyone can rerun) once per seed (`--seeds`) and records the global test accuracy after
every round, the rounds needed to come within 1 point of centralized `train-bnn` on the same codes
(same learning rate, `rounds × local-epochs` epochs, the same seeds; the reference is its mean
over them), the bytes per round and in total, and the wall seconds per round (mean and std over
the rounds); each grid row holds its per-seed runs and the mean ± std over the seeds
(`study.fed_records.over_seeds`).
The learning rate per task (and, for the 10-class problem `all`, the hidden width) is the one the
reproduction study chose on validation (`benchmarks/results/reproduction.json`); the federated
optimisation settings of the grid (`--fed-options`, e.g. a server optimizer) are the ones
`benchmarks/fedtune.py` chose on validation; no setting is chosen here.

Then, on one configuration (`--engine-config`), the seconds per round of each engine
(`--engines`), and with and without SecAgg+ (`--secagg-config`: accuracy, bytes and seconds per
round; float and bits uplink): timings, one run each with the first of the seeds.

Then the memory of one in-process run (server and the sampled clients in one process) for
`--memory-clients` N with the same number of clients sampled per round (`--memory-sampled`):
the peak resident set size of the `hybnn fed` process, which stays flat in N when nothing is kept
per client beyond a round.

Writes `benchmarks/results/fedscale.json` (format `fed_records.SCALE_FORMAT`, version 2) after
every run, each run with the record of its own (`provenance.run_record`); a rerun keeps the runs
already there made by the same code with the same command, so an interrupted study resumes (a
file of version 1, one seed, is started over); a grid row re-run with other `--fed-options`
replaces the row, which moves to the section "earlier" with its options; and the figure
`benchmarks/results/fedscale.png` (accuracy per round, mean over seeds, one panel per task and
partition). The file is made by one command: no part of it is run apart and merged in. The
study and the docs blocks that render its file live in `hybnn_cli.study.fed_scale`.

Usage: python benchmarks/fedscale.py --codes runs/codes.h5 [--tasks 3,5] [--clients 10,100,1000]
       [--partitions iid,dirichlet] [--uplinks float,bits] [--fraction 0.1] [--rounds 100]
       [--engines inprocess,simulation] [--threads 1] [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.study.fed_scale import run_scale_study


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--tasks", default="3,5")
    p.add_argument("--clients", default="10,100,1000")
    p.add_argument("--partitions", default="iid,dirichlet")
    p.add_argument("--uplinks", default="float,bits")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--local-epochs", type=int, default=5)
    p.add_argument("--seeds", default="0,1,2",
                   help="each grid row and centralized reference runs once per seed; the "
                        "engine, SecAgg+ and memory runs once, with the first")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fed-options", default="",
                   help="extra hybnn fed options for the grid's runs (chosen by fedtune.py)")
    p.add_argument("--fed-options-from", type=Path,
                   help="take --fed-options from the setting a fedtune.py file chose")
    p.add_argument("--engines", default="inprocess,simulation")
    p.add_argument("--engine-config", default="3/100/iid/float/5",
                   help="task/clients/partition/uplink/rounds timed on every engine")
    p.add_argument("--secagg-config", default="3/100/iid/20",
                   help="task/clients/partition/rounds run with and without SecAgg+ "
                        "(both uplinks)")
    p.add_argument("--memory-clients", default="100,1000,10000")
    p.add_argument("--memory-sampled", type=int, default=10)
    p.add_argument("--memory-rounds", type=int, default=2)
    p.add_argument("--skip-grid", action="store_true", help="only the engine and SecAgg+ runs")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/fedscale.json"))
    p.add_argument("--figure", type=Path, default=Path("benchmarks/results/fedscale.png"))
    p.add_argument("--models", type=Path, default=Path("runs/bench-fedscale"))
    args = p.parse_args(argv)
    try:
        run_scale_study(args, ["python", "benchmarks/fedscale.py", *(argv or sys.argv[1:])])
    except HybnnError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
