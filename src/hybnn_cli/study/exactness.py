"""Exactness: the very BNNs the README's accuracy table reports, exported, against their torch
models on every code of their encoder's test split; its result file and its generated block.

`check_study` reads the reproduction study's results (`benchmarks/results/reproduction.json`):
for every task (the five pairs and the 10-class problem) and every seed, the checkpoint at the
chosen setting and the codes of that seed's encoder, both in the study's work folder. It writes
`benchmarks/results/exactness.json` with the provenance header of its run; each row holds the
record of the run that made it (`provenance.run_record`). `benchmarks/exactness.py` runs it.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hybnn_cli.study.docgen import renderer, source
from hybnn_cli.study.provenance import end_run, read_result, start_run, write_result

FORMAT = "hybnn-exactness"
VERSION = 2
EXACT = "exactness.json"


def compare(ckpt_path: Path, codes_path: Path, tmp: Path) -> dict:
    """Export the checkpoint to a deploy file in `tmp`; its predictions and class scores against
    the torch model's on every test code of `codes_path`, and both accuracies on its task."""
    from hybnn_cli.codes.store import check_encoder, read_codes
    from hybnn_cli.deploy.export_head import torch_predict, write_deploy
    from hybnn_cli.deploy.predict_head import load_model, model_task
    from hybnn_cli.models.checkpoint import load_bnn

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


def check_study(study_path: Path, work: Path, out: Path, argv: list[str]) -> dict:
    """Compare every BNN of the study (`study_path`, its work folder `work`) with its deploy
    file; write the rows to `out` (recorded as made by the command `argv`) and return them."""
    run = start_run(out, argv)
    study = read_result(study_path, "hybnn-reproduction")
    codes = {s: work / c["path"]
             for s, c in zip(study["config"]["seeds"], study["codes"], strict=True)}
    entries = [t["hybnn"] for t in study["tasks"]] + [study.get("ten_class")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in entries:
            for model in (entry or {}).get("runs", []):
                rows.append({"seed": model["seed"],
                             **compare(work / model["path"], codes[model["seed"]], Path(tmp)),
                             "run": end_run(run)})
                print(json.dumps(rows[-1]), file=sys.stderr)
    return write_result(out, FORMAT, VERSION, {"study": str(study_path),
                                               "study_commit": study["commit"],
                                               "results": rows}, argv=argv, run=end_run(run))


@renderer("exactness")
def exactness(results_dir: Path) -> str:
    r = read_result(Path(results_dir) / EXACT, FORMAT)
    rows = r["results"]
    tasks = sorted({x["task"] for x in rows})
    mism = sum(x["mismatches"] for x in rows)
    identical = sum(x["scores_bit_identical"] for x in rows)
    codes = sum(x["n_codes"] for x in rows)
    agree = sum(x["accuracy_kernel"] == x["accuracy_torch"] for x in rows)
    return (f"Exactness: {len(rows)} exported BNNs (tasks {', '.join(tasks)}; every seed of the "
            f"accuracy table) against their torch models on all test codes of their encoder "
            f"({codes:,} predictions): {mism} mismatched predictions, class scores bit-identical "
            f"for {identical} of {len(rows)} models, kernel accuracy equal to torch's for "
            f"{agree} of {len(rows)}.\n\n" + source(EXACT, r))
