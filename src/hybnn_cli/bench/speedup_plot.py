"""The picture of a `hybnn bench` result (`hybnn bench --plot`): the XNOR kernel's speedup over
numpy and torch float32 and over the faster int8 contender against GEMM size."""

from __future__ import annotations

from pathlib import Path


def plot(result: dict, path: Path) -> None:
    """Speedup of the XNOR kernel over numpy and torch float32 and over the faster int8 contender
    against GEMM size (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hybnn_cli.fileio import atomic_path

    gemm = [c for c in result["cases"] if c["name"].startswith("gemm")]
    sizes = [c["m"] for c in gemm]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sizes, [c["speedup_vs_numpy"] for c in gemm], "o-", label="vs numpy float32 (OpenBLAS)")
    ax.plot(sizes, [c["speedup_vs_torch"] for c in gemm], "s-", label="vs torch float32")
    if all("speedup_vs_best_int8" in c for c in gemm):
        ax.plot(sizes, [c["speedup_vs_best_int8"] for c in gemm], "^-",
                label="vs the faster int8 (torch._int_mm, ONNX Runtime)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xlabel("M = N = K (bits for the kernel)")
    ax.set_ylabel("speedup (same 2·M·N·K operations)")
    m, s = result["machine"], result["setup"]
    ax.set_title(f"XNOR-popcount GEMM vs dense matmul (outputs checked equal)\n{m['cpu']} "
                 f"({s['llvm_cpu_name']}), {s['threads']} threads, kernel variant "
                 f"{s['kernel']['variant']}, load average {result['load_average']['start'][0]:.1f}"
                 f" at start", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
