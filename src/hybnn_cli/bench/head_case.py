"""The BNN head case of `hybnn bench`: the whole head 200 → 128 → 2 of the benchmark's network
(`bench_bnn`) in the kernel runtime against the float32 head at its best (`float_head`, compiled
too at batch 1), against the same head in int8 (`int8_matmul.int8_heads`), and against the float
hidden-layer matmul 200 → 128 alone; every label, score and dot checked (`bench_head`).

The head's labels must equal the float head's: the benchmark's BNN (`bench_bnn`) places every batch
norm's decision between two reachable dot values, so float rounding cannot turn a label (see there).
"""

from __future__ import annotations

from hybnn_kernels.layout import CODE_BITS

from hybnn_cli.bench.gemm_cases import float_matmuls, random_bits
from hybnn_cli.bench.speedups import headline, ratios
from hybnn_cli.bench.timing import budget, compare, equal, require

HEAD_CHECK = ("XNOR labels = numpy and torch (and at batch 1 compiled) float head labels = TaskBNN "
              "labels = torch and ONNX Runtime int8 head labels; XNOR scores = score table at each "
              "float head's output dots, bit for bit; int8 scores = (h @ W2)·2s₂ + shift2 at the "
              "exact hidden bits, bit for bit; float hidden matmuls = XNOR dots")


def bench_bnn(shape, seed: int = 0):
    """A TaskBNN (eval mode) with random weights and trained-looking batch norms whose decisions
    never sit on a reachable value, so that a float head and the kernel (integer thresholds, score
    table) must agree on every label, whatever the rounding of either.

    Hidden layer: a dot of n_bits ±1 terms has the parity of n_bits; each neuron's batch norm is
    set (mean = c + β/s, s = γ/√(var + ε)) so that BN(d) = (d − c)·s with c of the other parity: the
    sign changes halfway between two reachable dots, |BN(d)| >= |s|. Output layer: all classes
    share one scale s and have boundaries c_i = r + 2i/n_classes, so two scores differ by
    |(d_i − d_j) − 2(i − j)/n_classes|·|s| >= 2|s|/n_classes (dots of one layer share a parity):
    no near-tie, the argmax is the same in any rounding.
    """
    import torch

    from hybnn_cli.models.bnn import TaskBNN

    g = torch.Generator().manual_seed(seed)
    model = TaskBNN(shape).eval()

    def scale(c):  # |γ| in [0.25, 1.75], random sign; var in [1, 51]
        sign = torch.where(torch.rand(c, generator=g) < 0.5, -1.0, 1.0)
        gamma = sign * (0.25 + 1.5 * torch.rand(c, generator=g))
        return gamma, torch.rand(c, generator=g) * 50 + 1

    with torch.no_grad():
        model.fc1.weight.copy_(torch.randn(shape.hidden, shape.n_bits, generator=g))
        model.fc2.weight.copy_(torch.randn(shape.n_classes, shape.hidden, generator=g))
        h = shape.hidden
        c1 = 2 * torch.randint(-10, 11, (h,), generator=g) + (shape.n_bits + 1) % 2
        gamma2, var2 = scale(1)
        r = 2 * torch.randint(-3, 4, (1,), generator=g) + shape.hidden % 2
        c2 = r + 2.0 * torch.arange(shape.n_classes) / shape.n_classes
        for bn, c, (gamma, var) in ((model.bn1, c1, scale(h)),
                                    (model.bn2, c2, (gamma2.expand(shape.n_classes),
                                                     var2.expand(shape.n_classes)))):
            beta = torch.randn(bn.num_features, generator=g)
            bn.weight.copy_(gamma)
            bn.running_var.copy_(var)
            bn.bias.copy_(beta)
            bn.running_mean.copy_(c + beta / (gamma / torch.sqrt(var + bn.eps)))
    return model


def bench_head(batch: int, threads: int, quick: bool) -> dict:
    """The whole BNN head 200 → 128 → 2 on `bench_bnn`: the kernel runtime (packed codes in,
    scores and labels out) against the float32 head at its best (`float_head`: numpy and torch,
    and at batch 1 compiled, entered as the XNOR one-code head is), against the same head in int8
    (`int8_matmul.int8_heads`: torch and ONNX Runtime), and against the float hidden-layer matmul
    200 → 128 alone (numpy and torch).

    Checks: the float heads' labels equal the TaskBNN module's (computed once, untimed: the float
    head is the same network); the kernel's labels equal every float head's; the kernel's scores
    equal, bit for bit, its score table at the output dots each float head computed (so every
    hidden bit and output dot agrees); the int8 heads' labels equal the TaskBNN module's, their
    scores equal, bit for bit, (h @ W2)·2s₂ + shift2 at the exact hidden bits, and torch's hidden
    bits equal those; both hidden matmuls equal the XNOR dot products."""
    import numpy as np
    import torch

    from hybnn_cli.bench.float_head import fold
    from hybnn_cli.deploy.export_head import runtime_from_model, torch_predict
    from hybnn_cli.models.bnn import BNNShape

    shape = BNNShape(CODE_BITS, 128, 2)
    name = f"head {CODE_BITS}-128-2 b={batch}"
    model = bench_bnn(shape)
    rt = runtime_from_model(model)
    fh = fold(model)
    rng = np.random.default_rng(batch)
    _, codes, x = random_bits(rng, batch, shape.n_bits)
    _, want_labels = torch_predict(model, codes)
    ops = 2.0 * batch * (shape.n_bits * shape.hidden + shape.hidden * shape.n_classes)
    out = (np.empty((batch, shape.n_classes), np.float32), np.empty(batch, np.int64))
    with torch.inference_mode():
        dense = _dense_heads(fh, x, threads, batch)
        check = _head_check(name, dense, fh, codes, want_labels, rt.score_table, out)
        run, check = _xnor_heads(rt, codes, threads, out, check)
        res = {"name": name, "batch": batch, "ops": ops,
               **compare({**run, **dense["heads"], **dense["int8s"], **dense["matmuls"]}, ops,
                         *budget(ops, quick), check=check, peaks_threads=threads),
               "weight_bytes": {"binary": rt.weight_bytes,
                                "int8": shape.hidden * (shape.n_bits + shape.n_classes),
                                "float32": 4 * shape.hidden * (shape.n_bits + shape.n_classes)},
               "check": {"passed": True, "compared": HEAD_CHECK, "values": batch}}
    _head_ratios(res, batch, run, dense)
    res["weight_bytes"]["ratio"] = res["weight_bytes"]["float32"] / rt.weight_bytes
    return res


def _dense_heads(fh: dict, x, threads: int, batch: int) -> dict:
    """The dense contenders of the head on ±1 inputs x: the float32 heads (`float_head`: numpy,
    torch, and at batch 1 compiled), the int8 heads, the float hidden-layer matmuls alone; each
    with its buffers. Call inside `torch.inference_mode`."""
    import numpy as np

    from hybnn_cli.bench.float_head import CompiledFloatHead, vector_heads
    from hybnn_cli.bench.int8_matmul import int8_heads

    heads, hbufs = vector_heads(fh, x)
    compiled = None
    if batch == 1:  # the compiled float head, as the XNOR one-code head, is batch 1's
        compiled = heads["numba_f32"] = CompiledFloatHead(fh)
        compiled.x[:] = x[0]
        hbufs["numba_f32"] = {"h": compiled.h[None], "scores": compiled.scores[None],
                              "labels": np.empty(1, np.int64)}
    int8s, ibufs, iinfo = int8_heads(fh, x, threads)
    mms, mouts = float_matmuls(x, fh["w1"])
    return {"heads": heads, "hbufs": hbufs, "compiled": compiled, "int8s": int8s,
            "ibufs": ibufs, "iinfo": iinfo, "matmuls": {f"{k}_matmul": fn for k, fn in mms.items()},
            "mouts": mouts}


def _head_check(name: str, dense: dict, fh: dict, codes, want_labels, table, out):
    """The head case's check of every contender's answer (see `bench_head`); `out` holds the
    XNOR head's (scores, labels)."""
    import numpy as np
    from hybnn_kernels.bits import pack_bits
    from hybnn_kernels.xnor import xnor_gemm

    from hybnn_cli.bench.int8_matmul import score_reference

    scores, labels = out
    batch, n_classes, hidden = len(labels), scores.shape[1], fh["w2"].shape[0]
    # the hidden-layer dots of the float head's ±1 weights, by the kernel (untimed reference)
    dots1 = xnor_gemm(codes, pack_bits((fh["w1"].T > 0).astype(np.uint8)), fh["w1"].shape[0])
    want_int8_scores = score_reference(dots1 >= fh["t1"], fh)
    compiled, hbufs, ibufs = dense["compiled"], dense["hbufs"], dense["ibufs"]

    def check():
        if compiled is not None:  # its label is what the call returns
            hbufs["numba_f32"]["labels"][0] = compiled()
        for f, buf in ibufs.items():
            require(equal(buf["labels"], want_labels), name,
                    f"the {f} head's labels differ from the TaskBNN module's")
            require(equal(buf["scores"].view(np.uint32), want_int8_scores.view(np.uint32)),
                    name, f"the {f} head's scores differ from (h @ W2)·2s₂ + shift2 at the "
                    "exact hidden bits")
        require(equal(ibufs["torch_int8"]["h"], dots1 >= fh["t1"]), name,
                "the torch_int8 head's hidden bits differ from (XNOR dots >= thresholds)")
        for f, buf in hbufs.items():
            require(equal(buf["labels"], want_labels), name,
                    f"the {f} float head's labels differ from the TaskBNN module's")
            require(equal(labels, buf["labels"]), name, "XNOR head labels differ from the "
                    f"{f} float head's on {int(np.count_nonzero(labels != buf['labels']))} "
                    f"of {batch} samples")
        for f, buf in hbufs.items():  # output dots from the float head's hidden bits
            d2 = (2 * (buf["h"] @ fh["w2"]) - fh["w2_sum"]).astype(np.int64)
            want = table[np.arange(n_classes), (d2 + hidden) // 2]
            require(equal(scores.view(np.uint32), want.view(np.uint32)), name,
                    f"XNOR head scores differ from the score table at the {f} float head's "
                    "output dots")
        for f, o in dense["mouts"].items():
            require(equal(o, dots1), name, f"{f} hidden-layer dots differ from XNOR's")

    return check


def _xnor_heads(rt, codes, threads: int, out, check):
    """The XNOR contenders, writing into `out` (scores, labels), and the check they run under: the
    batch path (`BNNRuntime.run`); at batch 1 the one-code head (its own buffers, one pointer per
    call) as "xnor", the run() path beside it as "xnor_run", and both checked."""
    scores, labels = out
    run = {"xnor": lambda: rt.run(codes, threads, out=(scores, labels))}
    if len(labels) != 1:
        return run, check
    one = rt.one_sample()
    one.code[:] = codes[0]

    def run_one():
        labels[0] = one()
        scores[0] = one.scores

    run = {"xnor": one, "xnor_run": run["xnor"]}
    return run, _checking_both(check, run_one, run["xnor_run"])


def _head_ratios(res: dict, batch: int, run: dict, dense: dict) -> None:
    """A head case's record completed: how each XNOR contender is called (batch 1), torch's int8
    padding, the time per sample of every contender, the ratios (`headline`, and against the
    hidden-layer matmul alone)."""
    if batch == 1:
        res["xnor"]["api"] = "BNNRuntime.one_sample(): label = head() on the code in head.code"
        res["xnor_run"]["api"] = "BNNRuntime.run(codes, threads, out=(scores, labels))"
        res["numba_f32"]["api"] = ("float_head.CompiledFloatHead: label = head() on the ±1 "
                                   "values in head.x")
    for f, i in dense["iinfo"].items():
        res[f].update(i)
    for key in (*run, *dense["heads"], *dense["int8s"], *dense["matmuls"]):
        res[key]["us_per_sample"] = res[key]["seconds"] / batch * 1e6
        res[key]["samples_per_second"] = batch / res[key]["seconds"]
    headline(res)
    ratios(res, tuple(dense["matmuls"]), "best_hidden_matmul")


def _checking_both(check, run_one, run_batch):
    """`check` applied to the one-code head's answer (`run_one` writes it into the checked
    buffers), then to the batch path's."""
    def both():
        run_one()
        check()
        run_batch()
        check()
    return both
