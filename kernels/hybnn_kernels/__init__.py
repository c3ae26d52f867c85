"""hybnn_kernels: the torch-free runtime of hybnn (numpy and numba only; h5py only to read a deploy
file, imported when one is read). numba is optional for a deploy bundle (`pipeline`): without it
(the base install; `pip install 'hybnn[fast]'` adds it) the heads run on `head_numpy`; the modules
that compile (`bits`, `tile`, `xnor`, `dense`, `runtime`, ...) need it.

- `layout`: the bit convention, `n_words`, the padding-bit rule, numpy packing and unpacking
  (no numba); `bits`: the compiled packers;
- `tile`: the register tile in LLVM IR and the CPU variant it is built for;
- `xnor`: `xnor_gemm`, the register-tiled XNOR-popcount GEMM (`prepack` lays weights into panels);
- `dense`: `binary_dense`, the fused layer (XNOR-popcount, integer thresholds, packed output bits);
- `runtime`: `BNNRuntime` / `load_deploy`, an exported task BNN run on packed codes
  (`one_sample`: its head for one code at a time, `BNNRuntime.one_sample()`);
  `deploy_file`: reading a deploy file (no numba); `head_numpy`: the same head in numpy, the
  cold path of a bundle;
- `checks` (argument checks shared by the entry points), `parallel` (serial or threaded launch),
  `h5attrs` (how hybnn's HDF5 files store their attributes);
- `pipeline`: `load_bundle` / `Pipeline`, a deploy bundle run end to end on uint8 images (the
  encoder in ONNX Runtime, imported when a bundle is loaded; the heads on the kernels, the first
  small batches in numpy, every batch in numpy where numba does not import).
- `prototypes`: the Bernoulli-mixture EM, binary class prototypes and the nearest-prototype rule
  in numpy alone (a bundle's prototype head; `hybnn learn-class` fits one class on the device).

Names are imported from their modules on first use: `import hybnn_kernels` alone starts nothing.
"""

import importlib

# public name → the module that defines it, imported on first use (PEP 562), so that
# `from hybnn_kernels import load_bundle` does not start numba (see `pipeline`)
_HOMES = {"n_words": "layout", "unpack_bits": "layout", "unpack_signs": "layout",
          "pack_bits": "bits", "pack_signs": "bits", "xnor_gemm": "xnor", "prepack": "xnor",
          "PackedWeights": "xnor", "binary_dense": "dense", "make_dense": "dense",
          "BinaryDense": "dense", "BNNRuntime": "runtime", "load_deploy": "runtime",
          "Pipeline": "pipeline", "load_bundle": "pipeline"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'hybnn_kernels' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hybnn_kernels.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
