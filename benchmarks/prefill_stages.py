"""Run some of `hybnn reproduce`'s training stages in this process, into the study's cache, so
that several processes can share the work on a multi-core or shared machine. A later
`hybnn reproduce` (same settings) finds those stages done and reuses them.

Jobs: `T:B` trains the binary CNN on MNIST task T with input binarization B; `fA-B` trains the
threshold CNN on the Fashion-MNIST pair (A, B); `codes` takes the MNIST VAE (pretraining it if
needed), extracts the MNIST codes and trains the task BNNs 1–5 and the 10-class BNN on them;
`bnn:T` trains the BNN of task T (1..5 or all) on the MNIST codes; `fashion-codes` extracts
Fashion-MNIST codes with the MNIST VAE and trains the pair BNNs on them; `fashion-vae-codes` does
the same with the Fashion-MNIST VAE (start it only once that VAE is complete: a VAE being
pretrained by another process holds no lock).
The VAEs can be pretrained alongside with
`hybnn pretrain-vae --out <work>/vae-<dataset>-<digest>.pt` (the path `hybnn reproduce` uses;
see `Study.vae_path`). A stage another live process is making is skipped (its lock file).

Example: python benchmarks/prefill_stages.py --threads 1 1:threshold 3:sign f0-1
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hybnn_cli.reproduce import Reporter, StageBusy, Study, StudyConfig, _fashion_task
from hybnn_cli.tasks import parse_task


class PrintDone(Reporter):
    def done(self, description: str, result: str, cached: bool) -> None:
        print(time.strftime("%H:%M:%S"), "reused" if cached else "done", description, result,
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("jobs", nargs="+")
    ap.add_argument("--work", type=Path, default=Path("runs/reproduce"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fashion-vae-epochs", type=int, default=None)
    args = ap.parse_args()
    cfg = StudyConfig(threads=args.threads, fashion_vae_epochs=args.fashion_vae_epochs)
    study = Study(cfg, args.work, reporter=PrintDone())

    def attempt(what: str, fn, *a):
        try:
            return fn(*a)
        except StageBusy as e:  # another process has it: go on with the next stage
            print(time.strftime("%H:%M:%S"), "busy", what, e, flush=True)
            return None

    for job in args.jobs:
        if job in ("codes", "fashion-codes", "fashion-vae-codes"):
            dataset = "mnist" if job == "codes" else "fashion-mnist"
            vae = study.vae("fashion-mnist" if job == "fashion-vae-codes" else "mnist")
            codes = attempt(job, study.codes, vae, dataset)
            if codes is None:
                continue
            tasks = ([parse_task(str(t)) for t in [*cfg.tasks, "all"]] if job == "codes"
                     else [_fashion_task(p) for p in cfg.fashion_pairs])
            for t in tasks:
                attempt(t.name, study.bnn, codes, dataset, t)
        elif job.startswith("bnn:"):
            codes = study.codes(study.vae("mnist"), "mnist")
            attempt(job, study.bnn, codes, "mnist", parse_task(job[4:]))
        elif job.startswith("f"):
            attempt(job, study.baseline, "fashion-mnist", _fashion_task(job[1:].split("-")),
                    "threshold")
        else:
            task, binarize = job.split(":")
            attempt(job, study.baseline, "mnist", parse_task(task), binarize)


if __name__ == "__main__":
    main()
