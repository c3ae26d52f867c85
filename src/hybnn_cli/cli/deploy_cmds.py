"""Deployment commands: export a BNN (or a bundle with the encoder), predict without torch,
learn a new class into a bundle without torch, benchmark the kernels."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from hybnn_cli.cli.app import (
    DataDir,
    JsonOut,
    Threads,
    app,
    check_out,
    handle_errors,
    print_json,
)
from hybnn_cli.cli.progress import make_progress
from hybnn_cli.errors import HybnnError
from hybnn_cli.threads import resolve as resolve_threads
from hybnn_cli.threads import using as using_threads


@app.command("export")
@handle_errors
def export_cmd(
    models: list[Path] = typer.Argument(..., help="BNN checkpoint(s) (.pt) from train-bnn; "
                                        "several (one per task) with --vae."),
    out: Path = typer.Option(None, "--out", help="Deploy file to write (HDF5), or with --vae the "
                             "deploy bundle (a folder)."),
    c_out: Path = typer.Option(None, "--c", help="Write one head as C99 source instead: OUT.h and "
                               "OUT.c (packed weights, thresholds, score table and a classify "
                               "function, stdint.h only). MODEL may also be a deploy file; OUT's "
                               "file name makes the C names (hybnn_NAME_classify)."),
    vae: Path = typer.Option(None, "--vae", help="VAE checkpoint: write a deploy bundle (encoder "
                             "as ONNX + the heads) that classifies images without torch."),
    int8: bool = typer.Option(False, "--int8", help="With --vae: add an int8 encoder (ONNX "
                              "Runtime static quantization, QDQ, per-channel)."),
    calibration: int = typer.Option(2000, "--calibration", min=1, help="With --vae: training "
                                    "images to check the ONNX encoder on (and calibrate --int8)."),
    seed: int = typer.Option(0, "--seed", help="With --vae: picks the calibration images "
                             "(saved in the bundle)."),
    data_dir: Path = DataDir,
    check: Path = typer.Option(None, "--check", help="Codes file: after writing, compare the "
                               "deploy file's predictions with the torch model's on its test "
                               "split (every code) and fail on any mismatch."),
    threads: int = Threads,
    json_out: bool = JsonOut,
):
    """Export a trained BNN to a torch-free deploy file or bundle.

    A deploy file runs the BNN on the XNOR-popcount kernels; with --vae, a deploy bundle holds
    the encoder (ONNX) and the task heads of every checkpoint given: image in, class out, at the
    VAE's image shape (channels and size, and how its training images were resized). Batch
    norm + sign become one integer threshold per hidden neuron; the output layer's scores are
    tabulated by torch itself, so predictions equal the torch model's bit for bit. In a bundle
    the encoder's batch norms are folded into its convolutions; the export reports how many
    code bits differ from the torch encoder's on the calibration images. --seed only picks the
    calibration images of a bundle; a deploy file records the BNN's seed. With --c OUT, one head
    (a checkpoint, or a deploy file such as a bundle's heads/task3.h5) becomes C source for any
    C host (`hybnn export runs/bnn-task3.pt --c runs/task3` writes runs/task3.h and runs/task3.c):
    OUT.h documents the code's bit layout and records where the head came from.

    Example: hybnn export runs/bnn-task3.pt --out runs/bnn-task3.h5 --check runs/codes.h5
    """
    if c_out is not None:
        return _export_c(models, c_out, out, vae, int8, check, json_out)
    if out is None:
        raise HybnnError("give --out FILE (a deploy file, or with --vae a bundle folder), or --c "
                         "OUT for C source")
    if vae is not None:
        return _export_bundle(models, vae, out, int8, calibration, seed, data_dir, check,
                              threads, json_out)
    if int8:
        raise HybnnError("--int8 quantizes a bundle's encoder: give --vae VAE.pt")
    if len(models) != 1:
        raise HybnnError(f"{len(models)} checkpoints: a deploy file holds one BNN; give --vae "
                         f"VAE.pt to write a bundle with several heads")
    model = models[0]
    from hybnn_cli.codes.store import read_attrs
    from hybnn_cli.deploy.export_head import check_deploy, write_deploy
    from hybnn_cli.models.checkpoint import load_bnn

    check_out(out)
    if check is not None:
        read_attrs(check)  # a missing or foreign codes file is refused before anything is written
    torch_model, ckpt = load_bnn(model)
    with using_threads(threads):
        result = write_deploy(out, torch_model, ckpt)
        if check is not None:
            with make_progress(transient=True, disable=json_out) as progress:
                progress.add_task(f"checking {out} against torch on {check}", total=None,
                                  status="")
                result["check"] = check_deploy(out, torch_model, check)
    if json_out:
        print_json(result)
    else:
        typer.echo(f"Wrote {out}: {result['n_bits']} → {result['hidden']} → {result['n_classes']}, "
                   f"{result['weight_bytes']} bytes of packed weights (float32: "
                   f"{result['float32_weight_bytes']}), {result['flipped_neurons']} neurons with "
                   f"flipped weights")
        if "check" in result:
            typer.echo(f"Checked against torch on {result['check']['n']} codes of {check}: "
                       f"0 mismatches")


def _export_c(models, c_out, out, vae, int8, check, json_out):
    from hybnn_cli.deploy.export_c import write_c_head

    if out is not None or vae is not None or int8 or check is not None:
        raise HybnnError("--c writes one head as C source: give it without --out, --vae, --int8 "
                         "or --check")
    if len(models) != 1:
        raise HybnnError(f"{len(models)} models: --c writes one head; export each to its own OUT")
    result = write_c_head(models[0], c_out)
    if json_out:
        print_json(result)
        return
    typer.echo(f"Wrote {result['header']} and {result['source']}: {result['n_bits']} → "
               f"{result['hidden']} → {result['n_classes']} (classes "
               f"{', '.join(map(str, result['classes']))}), {result['const_bytes']} bytes of "
               f"constants; call {result['functions'][0]}(code)")


def _export_bundle(models, vae, out, int8, calibration, seed, data_dir, check, threads,
                   json_out):
    from hybnn_cli.deploy.export_bundle import write_bundle

    if check is not None:
        raise HybnnError("--check compares a deploy file with codes; a bundle is checked "
                         "against the torch encoder at export")
    if out.exists() and not out.is_dir():
        raise HybnnError(f"{out} is a file; a bundle is a folder: give a new name for --out")
    with using_threads(threads) as n, make_progress(transient=True, disable=json_out) as progress:
        progress.add_task(f"exporting {len(models)} head(s) + encoder", total=None, status="")
        m = write_bundle(out, vae, models, int8, calibration, seed, data_dir, n)
    if json_out:
        print_json({"out": str(out), **m})
        return
    c = m["encoder"]["check"]
    typer.echo(f"Wrote {out}: encoder.onnx (opset {m['encoder']['opset']}) + heads "
               f"{', '.join(m['heads'])}; on {c['images']} training images the ONNX codes "
               f"differ from torch's in {c['flipped_bits']} of {c['bits']} bits")
    if m.get("prototype_heads"):
        typer.echo(f"Kept the heads learned on the device: {', '.join(m['prototype_heads'])}")
    if int8:
        q = m["encoder_int8"]["check"]
        typer.echo(f"int8 encoder: {q['flipped_bits']} of {q['bits']} bits differ from the "
                   f"float torch encoder's")


@app.command("predict")
@handle_errors
def predict_cmd(
    images: list[Path] = typer.Argument(None, help="Image files (IDX, PNG, JPEG or NPY) to "
                                        "classify with a bundle (or folders of them), or with "
                                        "--encoder; read at the encoder's shape."),
    model: Path = typer.Option(..., "--model", help="Deploy file, or deploy bundle (folder), "
                               "from hybnn export."),
    codes: Path = typer.Option(None, "--codes", help="Codes file: predict a whole split."),
    encoder: Path = typer.Option(None, "--encoder", help="VAE checkpoint to encode IMAGES with."),
    split: str = typer.Option("test", "--split", help="train or test (with --codes)."),
    threads: int = Threads,
    head: list[str] = typer.Option(None, "--head", help="With a bundle: the task head(s) to run "
                                   "(default: every head in the bundle)."),
    int8: bool = typer.Option(False, "--int8", help="With a bundle: run its int8 encoder."),
    labels: Path = typer.Option(None, "--labels", help="With a bundle: IDX labels of the images, "
                                "to report each head's accuracy on its classes."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="With a bundle: images per "
                                   "batch; the batch, not the number of images, sets the peak "
                                   "memory (the encoder's activations)."),
    json_out: bool = JsonOut,
):
    """Classify codes or images with an exported BNN or bundle.

    A deploy file classifies codes (--codes) on the XNOR-popcount kernels, or images through a
    torch encoder (--encoder); a deploy bundle classifies images with its encoder in ONNX
    Runtime and its heads on the kernels, without importing torch, and prints one line per
    image: its file (with :i in a file of several images), then each head's class (by name
    when the head was trained on named classes, e.g. --classes cat,dog); a folder
    stands for the image files in it. Images are read at the shape the bundle's encoder takes
    (channels × height × width, in its manifest): square images of another size are resized as
    its training images were when they were resized, else refused; grayscale and colour are
    never converted into each other. No --seed: prediction is deterministic.

    Example: hybnn predict --model runs/bundle t10k-images-idx3-ubyte.gz --json
    """
    if not model.exists():
        raise HybnnError(f"{model}: no such deploy file or bundle folder")
    if model.is_dir():
        if codes is not None or encoder is not None:
            raise HybnnError("a bundle holds its encoder: give image files, not --codes or "
                             "--encoder")
        return _predict_bundle(model, images or [], threads, head, int8, labels, batch_size,
                               json_out)
    if head or int8 or labels is not None:
        raise HybnnError("--head, --int8 and --labels go with a deploy bundle (a folder) as "
                         "--model")
    from hybnn_cli.deploy import predict_head as pr

    if (codes is None) == (encoder is None):
        raise HybnnError("give either --codes CODES.h5, or --encoder VAE.pt with image files")
    if codes is not None:
        if images:
            raise HybnnError("image files go with --encoder, not with --codes")
        if split not in ("train", "test"):
            raise HybnnError(f"unknown --split '{split}': use train or test")
        with using_threads(threads):
            result = pr.predict_codes(model, codes, split)
        if json_out:
            print_json(result)
            return
        line = (f"{result['task']} on {codes} /{split}: {result['n']} codes in "
                f"{result['seconds'] * 1e3:.1f} ms")
        if "accuracy" in result:
            line += f"; accuracy {result['accuracy']:.2%} on the task's {result['n_task']} codes"
        typer.echo(line)
        return
    if not images:
        raise HybnnError("--encoder needs image files (IDX, PNG, JPEG or NPY)")
    with using_threads(threads):
        result = pr.predict_images(model, encoder, images)
    if json_out:
        print_json(result)
    else:
        for i, label in enumerate(result["labels"]):
            typer.echo(f"{i}\t{label}")


def _predict_bundle(bundle, images, threads, heads, int8, labels, batch_size, json_out):
    from hybnn_cli.deploy.predict_bundle import predict_bundle, write_json, write_rows

    if not images:
        raise HybnnError("no images given: name IDX, PNG, JPEG or NPY files to classify")
    n = resolve_threads(threads, kernels=False)  # numba is optional here: not imported to check
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task("classify", total=None, status="")
        result = predict_bundle(bundle, images, n, int8, heads, batch_size, labels,
                                on_start=lambda n: progress.update(bar, total=n),
                                on_batch=lambda n: progress.advance(bar, n))
    if result["int8_note"]:
        typer.echo(result["int8_note"], err=True)

    def write(text):
        typer.echo(text, nl=False)

    if json_out:
        write_json(result, write)
        return
    for name, r in result["heads"].items():
        if "accuracy" in r and r["accuracy"] is not None:
            typer.echo(f"# {name}: accuracy {r['accuracy']:.2%} on the {r['n_task']} images of "
                       f"classes {', '.join(map(str, r['classes']))}")
    write_rows(result, write)


@app.command("learn-class")
@handle_errors
def learn_class_cmd(
    images: list[Path] = typer.Argument(None, help="Images of the new class: IDX, PNG, JPEG or "
                                        "NPY files, or folders of them."),
    model: Path = typer.Option(..., "--model", help="Deploy bundle (folder) from hybnn export; "
                               "the class is added to it in place."),
    name: str = typer.Option(..., "--name", help="The new class's name (what predict prints)."),
    head: str = typer.Option("learned", "--head", help="The bundle's prototype head to add the "
                             "class to (made if absent)."),
    components: int = typer.Option(None, "--components", help="Prototypes per class, K (default: "
                                   "the head's, or 10 for a new head); at most the number of "
                                   "images."),
    seed: int = typer.Option(0, "--seed", help="Seeds the EM (saved with the class)."),
    threads: int = Threads,
    batch_size: int = typer.Option(4096, "--batch-size", min=1, help="Images encoded per batch."),
    json_out: bool = JsonOut,
):
    """Learn a new class into a bundle on the device, without torch.

    The bundle's encoder (ONNX Runtime) turns the images into codes; K binary prototypes of the
    class are fitted on them with numpy alone (EM on a Bernoulli mixture, its means rounded to
    bits) and appended to the prototype head, which predict then runs like the other heads: a
    code goes to the class of its nearest prototype in Hamming distance. The classes already
    learned are kept byte for byte; the bundle changes atomically (its manifest last).

    Example: hybnn learn-class --model runs/bundle --name 8 eights/ --components 10 --seed 0
    """
    from hybnn_cli.deploy.learn_class import learn_class
    from hybnn_cli.threads import default_threads

    if not images:
        raise HybnnError("no images given: name IDX, PNG, JPEG or NPY files (or folders) of the "
                         "class")
    n_threads = threads or default_threads()  # ONNX Runtime's threads: numba is not started
    with make_progress(disable=json_out) as progress:
        bar = progress.add_task(f"encoding {name}", total=None, status="")
        result = learn_class(model, name, images, head, components, seed, n_threads, batch_size,
                             on_start=lambda n: progress.update(bar, total=n),
                             on_batch=lambda n: progress.advance(bar, n))
    if json_out:
        print_json(result)
        return
    s = result["seconds"]
    typer.echo(f"Learned {name!r} into head {result['head']} of {model}: {result['components']} "
               f"prototypes from {result['images']} images (encode {s['encode']:.2f} s, fit "
               f"{s['fit']:.2f} s); the head's classes: {', '.join(result['classes'])}")


@app.command("bench")
@handle_errors
def bench_cmd(
    quick: bool = typer.Option(False, "--quick", help="Short run: GEMMs up to 512, fewer "
                               "repeats."),
    threads: int = Threads,
    out: Path = typer.Option(None, "--out", help="Write the full results as JSON here."),
    plot_path: Path = typer.Option(None, "--plot", help="Write a PNG of speedup against GEMM "
                                   "size here."),
    json_out: bool = JsonOut,
):
    """Benchmark the XNOR kernels against float32 and int8.

    Dense contenders: numpy and torch float32, torch._int_mm and ONNX Runtime's MatMulInteger in
    int8; the headline ratio is against the fastest of any precision. The BNN head runs against
    a float32 head built from the same network (weights pre-signed, batch norm folded; at batch 1
    also compiled), the same head in int8, and the float hidden-layer matmul alone. Every
    contender's output is checked against a reference in the same run, and a mismatch fails the
    benchmark.

    It runs in a child process with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, so numpy uses
    its best kernel, and records the machine and which BLAS kernel ran. No --seed: the inputs
    come from fixed seeds; only the timings vary between runs.

    Example: hybnn bench --out benchmarks/results/bench.json --plot benchmarks/results/speedup.png
    """
    from hybnn_cli.bench import runner as bench
    from hybnn_cli.study import provenance as results

    threads = resolve_threads(threads)
    for p in (out, plot_path):
        if p is not None:
            check_out(p)
    # the provenance of this run, taken as it starts (the command checked first)
    run = results.start_run(out, sys.argv) if out is not None else results.run_record()
    body = bench.run_in_clean_env(quick, threads,
                                  log=None if json_out else sys.stderr)
    run = results.end_run(run)
    if out is not None:
        result = results.write_result(out, bench.BENCH_FORMAT, bench.BENCH_VERSION, body,
                                      run=run)
    else:
        result = {**results.result_header(bench.BENCH_FORMAT, bench.BENCH_VERSION, run=run),
                  **body}
    if plot_path is not None:
        bench.plot(result, plot_path)
    if json_out:
        print_json(result)
        return
    _print_bench_table(result)


def _print_bench_table(result: dict) -> None:
    from rich.table import Table

    m, s = result["machine"], result["setup"]
    blas = ", ".join(f"{b['internal_api']} {b['version']} {b['architecture']}"
                     for b in s["numpy_blas"])
    table = Table(title=f"{m['cpu']} ({s['llvm_cpu_name']}), {s['threads']} threads; kernel "
                  f"{s['kernel']['variant']}; numpy BLAS {blas}; torch {m['packages']['torch']}; "
                  f"every output checked")
    for col in ("case", "XNOR", "numpy f32", "torch f32", "best int8", "×fastest dense",
                "×best f32", "×numpy", "×torch", "×best int8", "×float 200→128 matmul alone",
                "XNOR of its peak", "best f32 of FMA peak", "weights (less)"):
        table.add_column(col, justify="left" if col == "case" else "right")

    def rate(e):
        if "us_per_sample" in e:
            return f"{e['us_per_sample']:.3g} µs/smp"
        return f"{e['ops_per_second'] / 1e9:,.0f} Gop/s"

    def times(x, c=None):
        return "" if x is None else f"{x:.1f}" + (f" ({c})" if c else "")

    for c in result["cases"]:
        wb = c["weight_bytes"]
        alone = c.get("speedup_vs_best_hidden_matmul")
        frac = c["fraction_of_peak"]
        fastest = c.get("fastest", {})
        int8 = fastest.get("int8")
        table.add_row(c["name"], rate(c["xnor"]), rate(c["numpy_f32"]), rate(c["torch_f32"]),
                      f"{rate(c[int8])} ({int8})" if int8 else "",
                      times(c.get("speedup_vs_best_dense"), fastest.get("dense")),
                      times(c["speedup_vs_best_float"], fastest.get("float32")),
                      f"{c['speedup_vs_numpy']:.1f}", f"{c['speedup_vs_torch']:.1f}",
                      times(c.get("speedup_vs_best_int8")),
                      "" if alone is None else f"{alone:.1f}", f"{frac['xnor']:.0%}",
                      f"{max(frac['numpy_f32'], frac['torch_f32']):.0%}",
                      f"{wb['binary']:,} B ({wb['ratio']:.0f}×)")
    console = Console() if sys.stdout.isatty() else Console(width=230)
    console.print(table)
    roof = result["roofline"]
    console.print(f"Roofline, measured in this run: float32 FMA peak "
                  f"{roof['fma_f32']['ops_per_second'] / 1e9:,.0f} GFLOP/s, XNOR tile peak "
                  f"{roof['xnor']['ops_per_second'] / 1e9:,.0f} Gop/s: the XNOR kernel can be at "
                  f"most {roof['ratio_bound']:.1f}× a float32 GEMM at its peak here.",
                  highlight=False)
    for c in result["cases"]:
        if "xnor_run" in c:
            console.print(f"{c['name']}: XNOR is the one-code head ({c['xnor']['api']}); "
                          f"through {c['xnor_run']['api']}: {rate(c['xnor_run'])}.",
                          highlight=False)
        if "numba_f32" in c:
            console.print(f"{c['name']}: the float32 head compiled ({c['numba_f32']['api']}): "
                          f"{rate(c['numba_f32'])}.", highlight=False)
