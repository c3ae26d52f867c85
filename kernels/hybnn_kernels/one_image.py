"""A deploy bundle's whole path for one image at a time, at the lowest cost per call:
`Pipeline.one_image()` (or `OneImage.fastest(pipe)`, which also picks the thread count).

At batch 1 the encoder's own work is tens of microseconds, and `Pipeline.classify` adds to it
what a batch path costs per call: a new input array, ONNX Runtime's feed dictionary and output
allocation, the packer's and each head's call through Numba's dispatcher. `OneImage` fixes all
of that when it is made:

- the normalised image goes into a preallocated float32 input, bound to the session with its
  preallocated logits output once (ONNX Runtime's I/O binding), so a call allocates nothing there;
- with the compiled kernels (the `fast` extra), threshold, pack and every BNN head run in one
  compiled call on the bound logits (`one_sample.OneImageTail`: logit >= 0 → bit 1, bit j at
  position j % 64 of word j // 64, as everywhere; each head its one-code entry, all reading one
  code buffer); without them, threshold and pack are two numpy calls over the logits straight into
  the code words, and each head is the numpy head's one-code path (`NumpyHead.one`).

The labels, bit for bit, are `Pipeline.classify`'s (tests/test_one_image.py). Thread count: at
batch 1 one intra-op thread often beats two (the encoder's layers are too small to split), so
`fastest` times each candidate on a couple of hundred calls, taking turns, and keeps the faster.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from hybnn_kernels.layout import n_words, pack_signs_numpy
from hybnn_kernels.pipeline import BundleError, compiled_kernels_available, make_session

BLOCK = 10  # calls per turn when `fastest` times thread counts

_UINT8 = np.dtype(np.uint8)


class OneImage:
    """``labels = one(image)``: {head name: dataset label (a BNN head) or class name (a
    prototype head)} for one uint8 image (H, W), or (H, W, C) for an encoder of C channels."""

    def __init__(self, pipe, threads: int | None = None, heads=None):
        import onnxruntime as ort

        self.pipe = pipe
        self.threads = int(threads or pipe.threads)
        if self.threads < 1:
            raise BundleError(f"threads must be >= 1, got {self.threads}")
        if self.threads == pipe.threads:
            self.session = pipe.session
        else:
            entry = pipe.manifest["encoder_int8" if pipe.int8 else "encoder"]
            self.session = make_session(pipe.path / str(entry["file"]), self.threads)
        self.shape = pipe.shape.image  # (H, W), or (H, W, C)
        self.x = np.zeros((1, pipe.channels, pipe.height, pipe.width), dtype=np.float32)
        # the same memory, in the image's layout (channels last: a transposed view)
        self._x2d = self.x.reshape(self.shape) if len(self.shape) == 2 else self.x[0].transpose(
            1, 2, 0)
        # the quick check's shape: an image's last two dimensions; with channels a triple, which
        # no shape[-2:] equals, so that colour images take the full check (one channel: the same
        # cost per call as before)
        self._quick_shape = self.shape if len(self.shape) == 3 else self.shape[-2:]
        self._cut = -len(self.shape)  # shape[_cut:] is an image's own shape
        self._offset, self._scale = pipe.offset, pipe.scale
        self.logits = np.zeros((1, pipe.n_bits), dtype=np.float32)
        self.binding = self.session.io_binding()
        self.binding.bind_ortvalue_input(pipe.input_name,
                                         ort.OrtValue.ortvalue_from_numpy(self.x))
        self.binding.bind_ortvalue_output(self.session.get_outputs()[0].name,
                                          ort.OrtValue.ortvalue_from_numpy(self.logits))
        self.code = np.zeros(n_words(pipe.n_bits), dtype=np.uint64)
        self._code_bytes = self.code.view(np.uint8)
        self._bits = np.zeros(pipe.n_bits, dtype=bool)
        self._n_bytes = (pipe.n_bits + 7) // 8
        self._little = sys.byteorder == "little"
        names = list(heads) if heads else list(pipe.heads)
        bnn = [n for n in names if hasattr(pipe.heads[n], "arrays")]  # the others: prototypes
        compiled = compiled_kernels_available() and all(
            pipe.heads[n].compiled is not False for n in bnn)
        self.kernel = "numba" if compiled else "numpy"
        self.tail = self._normaliser = None
        if compiled:  # threshold, pack and every BNN head in one compiled call
            from hybnn_kernels.one_sample import OneImageNormaliser, OneImageTail

            self.tail = OneImageTail(self.logits[0], [pipe.heads[n].runtime for n in bnn])
            self._normaliser = OneImageNormaliser(self.x, float(pipe.offset), float(pipe.scale))
            pixels = self._normaliser.pixels  # (1, C, H, W); seen in the image's layout
            self._pixels = pixels.reshape(self.shape) if len(self.shape) == 2 else pixels[
                0].transpose(1, 2, 0)
            self.code = self.tail.code
            self._code_bytes = self.code.view(np.uint8)
            self._tail_classes = [(n, pipe.heads[n].classes.tolist()) for n in bnn]
        # the heads the tail does not answer: name → (classes, numpy head) of a BNN head without
        # numba, (None, prototype head) of a prototype head (`prototypes.PrototypeHead`)
        self._others = {}
        for name in names:
            h = pipe.heads[name]
            if name not in bnn:
                self._others[name] = (None, h)
            elif not compiled:
                from hybnn_kernels.head_numpy import NumpyHead

                self._others[name] = (h.classes, NumpyHead(h.arrays))
        # the fewest Python steps for the common case, one compiled BNN head: after an encoder
        # run the caches hold its weights, and every step of Python costs several times its
        # warm time there
        self._single = (self._tail_classes[0] if self.tail is not None and not self._others
                        and len(self._tail_classes) == 1 else None)
        self._run = self.session.run_with_iobinding

    def encode(self, image: np.ndarray) -> np.ndarray:
        """The packed code (words,) uint64 of one uint8 image (H, W) or (1, H, W) ((H, W, C)
        for C channels); the returned array is this object's buffer, overwritten by the next
        call."""
        self._run_encoder(image)
        np.greater_equal(self.logits[0], 0, out=self._bits)
        if self._little:
            self._code_bytes[:self._n_bytes] = np.packbits(self._bits, bitorder="little")
        else:  # the words' bytes in another order: pack through the reference packer
            self.code[:] = pack_signs_numpy(self.logits)[0]
        return self.code

    def _run_encoder(self, image: np.ndarray) -> None:
        """The image, checked and normalised into the bound input; the logits into theirs."""
        if image.__class__ is not np.ndarray or image.dtype is not _UINT8 or (
                image.shape[-2:] != self._quick_shape) or (
                image.ndim != 2 and image.size != self.x.size):
            if not (isinstance(image, np.ndarray) and image.dtype == _UINT8
                    and image.shape[self._cut:] == self.shape and image.size == self.x.size):
                raise BundleError(f"expected one {'×'.join(map(str, self.shape))} uint8 image, "
                                  f"got {getattr(image, 'dtype', type(image).__name__)} "
                                  f"{getattr(image, 'shape', '')}")
        image = image if image.ndim == 2 else image.reshape(self.shape)
        if self._normaliser is not None:  # compiled: a copy, then one call
            self._pixels[...] = image
            self._normaliser()
            self.session.run_with_iobinding(self.binding)
            return
        x = self._x2d
        # the same arithmetic as Pipeline.encode: float32 (pixel − offset) / scale; with offset 0
        # in one call (pixel − 0 is pixel exactly, so the quotient is the same float)
        if self._offset == 0:
            np.divide(image, self._scale, out=x, dtype=np.float32)
        else:
            np.subtract(image, self._offset, out=x, dtype=np.float32)
            np.divide(x, self._scale, out=x)
        self.session.run_with_iobinding(self.binding)

    def __call__(self, image: np.ndarray) -> dict[str, int | str]:
        if self._single is not None and image.__class__ is np.ndarray and (
                image.dtype is _UINT8 and image.shape == self.shape):
            self._pixels[...] = image
            self._normaliser()
            self._run(self.binding)
            self.tail()
            name, classes = self._single
            return {name: classes[self.tail.labels[0]]}
        if self.tail is not None:  # the compiled tail: pack and the BNN heads in one call
            self._run_encoder(image)
            self.tail()
            out = {name: classes[i] for (name, classes), i in
                   zip(self._tail_classes, self.tail.labels.tolist(), strict=True)}
            code = self.code
        else:
            code = self.encode(image)
            out = {}
        for name, (classes, other) in self._others.items():
            if classes is not None:  # a BNN head in numpy
                out[name] = int(classes[other.one(code)])
            else:  # a prototype head: its class name
                out[name] = str(other.labels(code[None])[0])
        return out

    @classmethod
    def fastest(cls, pipe, candidates=None, calls: int = 200, heads=None,
                image: np.ndarray | None = None) -> OneImage:
        """The `OneImage` of the thread count (1 and the pipeline's, by default) with the lowest
        median time over `calls` calls each, the candidates taking turns in blocks of BLOCK calls
        (so that a change in load hits all alike); `timing` holds each candidate's median
        microseconds."""
        candidates = sorted(set(candidates or (1, pipe.threads)))
        ones = {t: cls(pipe, t, heads) for t in candidates}
        image = np.zeros(pipe.shape.image, np.uint8) if image is None else image
        times = {t: [] for t in ones}
        for _ in range(calls // BLOCK):
            for t, one in ones.items():  # a block of calls each, its first one not timed: a
                one(image)  # session's worker threads spin a while after a run, and would
                for _ in range(BLOCK):  # compete with the other session's run call by call
                    t0 = time.perf_counter()
                    one(image)
                    times[t].append(time.perf_counter() - t0)
        medians = {t: 1e6 * float(np.median(v)) for t, v in times.items()}
        best = ones[min(medians, key=medians.get)]
        best.timing = {"microseconds_median": medians, "calls": calls // BLOCK * BLOCK}
        return best
