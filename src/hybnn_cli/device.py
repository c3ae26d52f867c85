"""Which torch device a command runs on: `--device auto|cpu|cuda[:N]`, resolved here and only
here, and moving saved state back to the CPU so that checkpoints do not depend on the device.

- `auto`: the first CUDA device when torch sees one, else the CPU.
- `cpu`, `cuda` (= `cuda:0`), `cuda:N`: that device; asking for CUDA where torch sees none is a
  one-line error, never a silent fall-back to the CPU.

Importing this module does not import torch (the CLI reads `DEVICE_HELP`).

Checkpoints are always written with CPU tensors (`to_cpu`) and read with `map_location="cpu"`
(`checkpoint.load_checkpoint`), so a file trained on a GPU loads on a machine without one and the
format is the same whatever device trained it.
"""

from __future__ import annotations

import re

from hybnn_cli.errors import HybnnError

DEVICE_HELP = ("Device: auto (CUDA when torch sees a GPU, else the CPU), cpu, cuda or cuda:N. "
        "On the CPU a seed repeats a run exactly. On CUDA the seed fixes the initial weights "
        "and the order of the data, but training is not bit-for-bit repeatable (cuDNN chooses "
        "convolution algorithms and some GPU kernels add in a varying order); encoding codes "
        "(extract) is repeatable on one GPU model. Checkpoints hold CPU tensors either way.")

_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")


def resolve_device(spec: str, local_rank: int | None = None):
    """The torch.device for a `--device` value. Under torchrun (`local_rank` given), `auto` and
    `cuda` mean the process's own GPU, cuda:<local_rank>."""
    import torch

    m = _SPEC.match(spec.strip().lower())
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise HybnnError(f"--device {spec}: use auto, cpu, cuda or cuda:N")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if kind == "auto":
        if not available:
            return torch.device("cpu")
        kind = "cuda"
    if not available:
        raise HybnnError(f"--device {spec}: CUDA is not available here (torch "
                         f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}, "
                         f"no GPU visible); use --device cpu or auto")
    if local_rank is not None:
        if index is not None and int(index) != local_rank:
            raise HybnnError(f"--device {spec}: under torchrun each process uses its own GPU, "
                             f"cuda:<LOCAL_RANK>; pass --device cuda or auto")
        index = str(local_rank)
    n = torch.cuda.device_count()
    i = int(index or 0)
    if i >= n:
        raise HybnnError(f"--device {spec}: this machine has {n} CUDA device(s), "
                         f"cuda:0..cuda:{n - 1}")
    return torch.device("cuda", i)


def to_cpu(obj):
    """`obj` with every tensor inside (dicts, lists, tuples) moved to the CPU."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
