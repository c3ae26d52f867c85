"""Export a trained task BNN (torch, eval mode) to the deploy file that `hybnn_kernels` runs.

Exactness comes from letting torch evaluate its own batch norms on every value they can ever see:

- Hidden layer. fc1's outputs are integers d ∈ {−K, −K + 2, …, K} (K = n_bits), exact in float32.
  `bn1` is run on all of them (the table is laid out (values, hidden), like a batch, so each neuron
  goes through the same code path as in the model), and sign (0 → +1) gives each neuron's output
  bit as a function of d. Batch norm is monotone in d, so that function is a step:
  rising (scale > 0) → threshold t = the smallest d with bit 1; falling (scale < 0) → the neuron's
  weight bits are flipped (d → −d) and t = −(the largest d with bit 1); constant (scale 0, or a
  step outside the range) → t = −K (always 1) or K + 1 (never). The runtime computes bit = d' >= t.
- Output layer. Its inputs are ±1, so its dots are d ∈ {−H, …, H} (H = hidden); `bn2` is run on all
  of them and stored as a float32 score table (n_classes, H + 1). The runtime looks the scores up,
  so its argmax (first maximum on ties, like `torch.argmax`) sees exactly torch's scores.

`verify_export` checks the exported runtime against the torch model on given codes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hybnn_kernels import pack_bits
from hybnn_kernels.h5attrs import write_attrs
from hybnn_kernels.runtime import DEPLOY_FORMAT, DEPLOY_VERSION, BNNRuntime

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path, provenance
from hybnn_cli.models.bnn import TaskBNN
from hybnn_cli.models.quantizers import sign


def _bn_table(bn: torch.nn.BatchNorm1d, k: int, width: int) -> np.ndarray:
    """bn (eval) on every dot value d = −k, −k + 2, …, k: float32 (k + 1, width)."""
    d = torch.arange(-k, k + 1, 2, dtype=torch.float32)
    with torch.no_grad():
        return bn(d[:, None].expand(-1, width).contiguous()).numpy()


def fold_hidden(model: TaskBNN) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight bits (hidden, n_bits) uint8 with flips, thresholds int64 (hidden,), flipped bool)."""
    k, hidden = model.shape.n_bits, model.shape.hidden
    w = (sign(model.fc1.weight.detach()) > 0).numpy().astype(np.uint8)
    on = ~(_bn_table(model.bn1, k, hidden) < 0)  # sign(0) = +1; rows: d ascending
    d = np.arange(-k, k + 1, 2)
    thresholds = np.empty(hidden, dtype=np.int64)
    flipped = np.zeros(hidden, dtype=bool)
    for j in range(hidden):
        b = on[:, j]
        if b.all() or not b.any():
            thresholds[j] = -k if b[0] else k + 1
        elif np.all(b[1:] >= b[:-1]):  # rising step
            thresholds[j] = d[np.argmax(b)]
        elif np.all(b[1:] <= b[:-1]):  # falling step: flip the weights, compare −d
            flipped[j] = True
            w[j] ^= 1
            thresholds[j] = -d[len(b) - 1 - np.argmax(b[::-1])]
        else:
            raise HybnnError(f"hidden neuron {j}: its batch norm + sign is not monotone in the "
                             f"dot product (NaN or infinite batch-norm statistics?)")
    return w, thresholds, flipped


def export_arrays(model: TaskBNN) -> dict:
    """The deploy file's arrays for a TaskBNN (put in eval mode)."""
    model.eval()
    w1, t1, flipped = fold_hidden(model)
    h, c = model.shape.hidden, model.shape.n_classes
    w2 = (sign(model.fc2.weight.detach()) > 0).numpy().astype(np.uint8)
    table = np.ascontiguousarray(_bn_table(model.bn2, h, c).T, dtype=np.float32)
    if not np.all(np.isfinite(table)):
        raise HybnnError("the output batch norm gives non-finite scores; is the checkpoint intact?")
    return {"fc1/weights": pack_bits(w1), "fc1/thresholds": t1, "fc1/flipped": flipped,
            "fc2/weights": pack_bits(w2), "fc2/score_table": table}


def runtime_from_model(model: TaskBNN) -> BNNRuntime:
    """The kernel runtime of a TaskBNN, in memory (what a deploy file would load to)."""
    a = export_arrays(model)
    return BNNRuntime.from_arrays(a["fc1/weights"], a["fc1/thresholds"], a["fc2/weights"],
                                  a["fc2/score_table"], model.shape.n_bits)


def write_deploy(path, model: TaskBNN, ckpt: dict) -> dict:
    """Write the deploy file for `model` (from checkpoint dict `ckpt`); returns a summary."""
    arrays = export_arrays(model)
    import h5py

    shape = model.shape
    meta = provenance(DEPLOY_FORMAT, DEPLOY_VERSION, ckpt.get("config", {}), ckpt.get("seed", 0))
    meta.update(n_bits=shape.n_bits, hidden=shape.hidden, n_classes=shape.n_classes,
                encoder_sha256=str(ckpt.get("encoder_sha256", "")),
                task=ckpt.get("task", {}), shape=shape.to_dict(),
                source_checkpoint={"format": ckpt.get("format"),
                                   "format_version": ckpt.get("format_version"),
                                   "hybnn_version": ckpt.get("hybnn_version")})
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        write_attrs(f.attrs, meta)
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr)
    n_flipped = int(arrays["fc1/flipped"].sum())
    return {"out": str(path), "n_bits": shape.n_bits, "hidden": shape.hidden,
            "n_classes": shape.n_classes, "flipped_neurons": n_flipped,
            "weight_bytes": int(arrays["fc1/weights"].nbytes + arrays["fc2/weights"].nbytes),
            "float32_weight_bytes": 4 * shape.hidden * (shape.n_bits + shape.n_classes),
            "encoder_sha256": meta["encoder_sha256"], "task": meta["task"]}


def torch_predict(model: TaskBNN, codes: np.ndarray, batch_size: int = 8192
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The torch model's (scores, argmax labels) on packed codes, batch by batch."""
    from hybnn_kernels import unpack_signs

    model.eval()
    scores = []
    with torch.no_grad():
        for s in range(0, len(codes), batch_size):
            x = torch.from_numpy(unpack_signs(codes[s:s + batch_size], model.shape.n_bits)
                                 .astype(np.float32))
            scores.append(model(x).numpy())
    if not scores:
        return np.zeros((0, model.shape.n_classes), np.float32), np.zeros(0, np.int64)
    s = np.concatenate(scores)
    return s, torch.from_numpy(s).argmax(dim=1).numpy()


def verify_export(model: TaskBNN, runtime: BNNRuntime, codes: np.ndarray) -> int:
    """Number of codes on which the runtime's labels differ from the torch model's."""
    _, want = torch_predict(model, codes)
    return int(np.count_nonzero(runtime.predict(codes) != want))


def check_deploy(deploy_path: Path, model: TaskBNN, codes_path: Path) -> dict:
    """Compare a written deploy file's predictions with the torch model's on every code of the
    test split of `codes_path` (same encoder required); a single mismatch is an error."""
    from hybnn_cli.codes.store import check_encoder, read_codes
    from hybnn_cli.deploy.predict_head import load_model

    c = read_codes(codes_path, "test")
    rt = load_model(deploy_path)
    check_encoder(rt.meta.get("encoder_sha256"), c.attrs["encoder_sha256"], deploy_path,
                  codes_path)
    mismatches = verify_export(model, rt, c.codes)
    if mismatches:
        raise HybnnError(f"{deploy_path}: {mismatches} of {len(c.codes)} predictions differ from "
                         f"the torch model's on {codes_path}")
    return {"codes": str(codes_path), "split": "test", "n": int(len(c.codes)),
            "mismatches": mismatches}
