"""Export the very BNNs the README's accuracy table reports and compare each deploy file's
predictions with the torch model's on every code of its codes file's test split.

It reads the reproduction study's results (`benchmarks/results/reproduction.json`): for every
task (the five pairs and the 10-class problem) and every seed, the checkpoint at the chosen
setting and the codes of that seed's encoder, both in the study's work folder. Writes
`benchmarks/results/exactness.json` with the provenance header of this run; each row holds the
record of the run that made it (`results.run_record`).

Usage: python benchmarks/exactness.py [--study benchmarks/results/reproduction.json]
           [--work runs/reproduce] [--out benchmarks/results/exactness.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybnn_cli.codes.store import check_encoder, read_codes
from hybnn_cli.deploy.export_head import torch_predict, write_deploy
from hybnn_cli.deploy.predict_head import load_model, model_task
from hybnn_cli.models.checkpoint import load_bnn
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result

FORMAT = "hybnn-exactness"


def compare(ckpt_path: Path, codes_path: Path, tmp: Path) -> dict:
    c = read_codes(codes_path, "test")
    model, ckpt = load_bnn(ckpt_path)
    deploy = tmp / (ckpt_path.stem + ".h5")
    write_deploy(deploy, model, ckpt)
    rt = load_model(deploy)
    check_encoder(rt.meta.get("encoder_sha256"), c.attrs["encoder_sha256"], deploy, codes_path)
    t0 = time.perf_counter()
    want_scores, want = torch_predict(model, c.codes)
    t_torch = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores, got = rt.run(c.codes)
    t_kernel = time.perf_counter() - t0
    task = model_task(rt)
    idx, y = task.select(c.labels)
    return {"checkpoint": str(ckpt_path), "codes": str(codes_path), "task": task.name,
            "classes": list(task.classes), "n_codes": int(len(got)),
            "mismatches": int(np.count_nonzero(got != want)),
            "scores_bit_identical": bool(np.array_equal(scores.view(np.uint32),
                                                        want_scores.view(np.uint32))),
            "n_task": int(len(idx)), "accuracy_kernel": float(np.mean(got[idx] == y)),
            "accuracy_torch": float(np.mean(want[idx] == y)),
            "seconds_torch": t_torch, "seconds_kernel": t_kernel}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, default=Path("benchmarks/results/reproduction.json"))
    p.add_argument("--work", type=Path, default=Path("runs/reproduce"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/exactness.json"))
    args = p.parse_args(argv)
    argv_rec = ["python", "benchmarks/exactness.py", *(argv or sys.argv[1:])]
    run = start_run(args.out, argv_rec)
    study = read_result(args.study, "hybnn-reproduction")
    codes = {s: args.work / c["path"]
             for s, c in zip(study["config"]["seeds"], study["codes"], strict=True)}
    entries = [t["hybnn"] for t in study["tasks"]] + [study.get("ten_class")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            for model in (entry or {}).get("runs", []):
                rows.append({"seed": model["seed"],
                             **compare(args.work / model["path"], codes[model["seed"]],
                                       Path(tmp)), "run": end_run(run)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    write_result(args.out, FORMAT, 2, {"study": str(args.study), "study_commit": study["commit"],
                                       "results": rows}, argv=argv_rec, run=end_run(run))


if __name__ == "__main__":
    main()
