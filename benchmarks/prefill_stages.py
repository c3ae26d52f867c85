"""Run parts of `hybnn reproduce` in this process, into the study's cache, so that several
processes can share the work on a multi-core or shared machine. A later `hybnn reproduce` with the
same settings finds those stages done and reuses them.

Jobs:
- `T:B`: the binary CNN on MNIST task T with input binarization B, whole: every candidate
  learning rate with the first seed, the choice on validation, the other seeds at the choice;
- `vae:S`: pretrain the MNIST VAE of seed S (resuming it if interrupted) and extract its codes;
- `bnn:T`: the task BNN of task T (1..5, or all for 10 classes), whole, on every seed's codes
  (start it once the VAEs are done).
A stage another live process is making is skipped (its lock file); run the job again later.
Each stage's record holds the version of the code that made it and the record of its run
(`study.work_cache`), so `hybnn reproduce` reuses only stages made by its own code. The work is
`hybnn_cli.study.reproduction_work.prefill`.

Example: python benchmarks/prefill_stages.py --threads 1 --vae-epochs 10 1:threshold 3:sign vae:0
         python benchmarks/prefill_stages.py --quick --seeds 0 --work runs/reproduce-quick vae:0
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybnn_cli.options import parse_seeds
from hybnn_cli.study.reproduce import Study, StudyConfig
from hybnn_cli.study.reproduction_work import PrintDone, prefill


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jobs", nargs="+")
    ap.add_argument("--work", type=Path, default=Path("runs/reproduce"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vae-epochs", type=int, default=None,
                    help=f"default {StudyConfig.vae_epochs} (--quick: 1)")
    ap.add_argument("--quick", action="store_true",
                    help="the settings of `hybnn reproduce --quick`")
    ap.add_argument("--seeds", default=None, help="as `hybnn reproduce --seeds`")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    over = {k: v for k, v in {"vae_epochs": args.vae_epochs,
                              "seeds": parse_seeds(args.seeds) if args.seeds else None}.items()
            if v is not None}
    cfg = (StudyConfig.quick if args.quick else StudyConfig)(threads=args.threads, **over)
    prefill(Study(cfg, args.work, args.data_dir, reporter=PrintDone()), args.jobs)


if __name__ == "__main__":
    main()
