"""hybnn_kernels: the torch-free runtime of hybnn (numpy and numba only).

Owns bit packing, the XNOR-popcount kernels and the runtime that runs an exported BNN.
"""

from hybnn_kernels.bits import n_words, pack_bits, pack_signs, unpack_bits, unpack_signs

__all__ = ["n_words", "pack_bits", "pack_signs", "unpack_bits", "unpack_signs"]
