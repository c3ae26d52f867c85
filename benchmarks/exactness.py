"""Export every given BNN checkpoint; compare the deploy file's predictions with the torch model's
on every code of a codes file's test split; write the counts as JSON.

Usage: .venv/bin/python benchmarks/exactness.py --codes runs/codes.h5 \\
           runs/bnn-task*.pt runs/bnn-all.pt --out benchmarks/results/exactness.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybnn_cli.checkpoint import load_bnn
from hybnn_cli.codes import read_codes
from hybnn_cli.export import torch_predict, write_deploy
from hybnn_cli.fileio import atomic_path
from hybnn_cli.predict import check_encoder, load_model, model_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path)
    p.add_argument("--codes", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    c = read_codes(args.codes, "test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ck in args.checkpoints:
            model, ckpt = load_bnn(ck)
            deploy = Path(tmp) / (ck.stem + ".h5")
            write_deploy(deploy, model, ckpt)
            rt = load_model(deploy)
            check_encoder(rt, c.attrs["encoder_sha256"], deploy, args.codes)
            t0 = time.perf_counter()
            want_scores, want = torch_predict(model, c.codes)
            t_torch = time.perf_counter() - t0
            t0 = time.perf_counter()
            scores, got = rt.run(c.codes)
            t_kernel = time.perf_counter() - t0
            task = model_task(rt)
            idx, y = task.select(c.labels)
            rows.append({
                "checkpoint": str(ck), "task": task.name, "classes": list(task.classes),
                "n_codes": int(len(got)), "mismatches": int(np.count_nonzero(got != want)),
                "scores_bit_identical": bool(np.array_equal(scores.view(np.uint32),
                                                            want_scores.view(np.uint32))),
                "n_task": int(len(idx)), "accuracy_kernel": float(np.mean(got[idx] == y)),
                "accuracy_torch": float(np.mean(want[idx] == y)),
                "seconds_torch": t_torch, "seconds_kernel": t_kernel,
            })
            print(json.dumps(rows[-1]), file=sys.stderr)
    result = {"command": " ".join(["benchmarks/exactness.py", *sys.argv[1:]]),
              "codes": str(args.codes), "encoder_sha256": c.attrs["encoder_sha256"],
              "results": rows}
    with atomic_path(args.out) as t:
        t.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
