"""hybnn_kernels: the torch-free runtime of hybnn (numpy and numba only; h5py only to read a deploy
file, imported when one is read).

- `bits`: packing ±1 / {0, 1} / boolean arrays to uint64 words and back; the padding-bit rule;
- `tile`: the register tile in LLVM IR and the CPU variant it is built for;
- `xnor`: `xnor_gemm`, the register-tiled XNOR-popcount GEMM (`prepack` lays weights into panels);
- `dense`: `binary_dense`, the fused layer (XNOR-popcount, integer thresholds, packed output bits);
- `runtime`: `BNNRuntime` / `load_deploy`, an exported task BNN run on packed codes;
- `checks` (argument checks shared by the entry points), `parallel` (serial or threaded launch),
  `h5attrs` (how hybnn's HDF5 files store their attributes);
- `pipeline`: `load_bundle` / `Pipeline`, a deploy bundle run end to end on uint8 images (the
  encoder in ONNX Runtime, imported when a bundle is loaded; the heads on the kernels).
"""

from hybnn_kernels.bits import n_words, pack_bits, pack_signs, unpack_bits, unpack_signs
from hybnn_kernels.dense import BinaryDense, binary_dense, make_dense
from hybnn_kernels.pipeline import Pipeline, load_bundle
from hybnn_kernels.runtime import BNNRuntime, load_deploy
from hybnn_kernels.xnor import PackedWeights, prepack, xnor_gemm

__all__ = ["n_words", "pack_bits", "pack_signs", "unpack_bits", "unpack_signs", "xnor_gemm",
           "prepack", "PackedWeights", "binary_dense", "make_dense", "BinaryDense", "BNNRuntime",
           "load_deploy", "Pipeline", "load_bundle"]
