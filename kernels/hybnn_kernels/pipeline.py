"""The torch-free end-to-end runtime: a deploy bundle classifies uint8 images.

A deploy bundle (a folder, written by `hybnn export --vae`) holds:

- ``bundle.json``: the manifest: ``format`` = "hybnn-bundle", ``format_version``, the hybnn
  version, and
  - ``encoder``: ``file`` (the ONNX model), ``sha256`` (of that file), ``weights_sha256`` (the
    encoder's weights, as recorded in codes files and BNN checkpoints), ``latent_bits``, ``opset``,
    ``input`` (name, ``channels``, ``height``, ``width``, ``layout`` NCHW, ``pixels`` uint8,
    the normalisation x = (pixel − offset) / scale, and ``resize``: how the VAE's training
    images were brought to its size, or "none"), ``output``, the VAE checkpoint's path and
    SHA-256;
  - ``encoder_int8`` (optional, `--int8`): the statically quantized encoder (QDQ, per-channel),
    its ``file``, ``sha256`` and calibration;
  - ``heads``: task name → ``file`` (a deploy file, see `runtime`), ``sha256``, ``classes``,
    ``encoder_sha256`` and the BNN checkpoint's path and SHA-256. Several heads share the encoder.
  - ``prototype_heads`` (optional, format version 2; written by `hybnn learn-class`): head name →
    ``file`` (a ``.npy`` of packed prototypes, see `prototypes`), ``sha256``, ``encoder_sha256``
    (the encoder it was fitted with), ``latent_bits``, ``components`` (K per class), ``classes``
    (class names, strings, in the order learned: rows k·K … (k+1)·K − 1 of the file are class
    k's) and ``learned`` (class name → how it was learned: images, seed, time, …).
- ``encoder.onnx`` (``encoder-int8.onnx``), ``heads/<task>.h5`` and ``heads/<name>-<sha>.npy``.

Format version 2 added ``prototype_heads``; version 1 bundles (without them) read as before.
Version 3 is written for an encoder whose input is not one 28×28 channel or whose training images
were resized (``input.channels`` and ``input.resize``), so that a runtime that reads 1 and 2 only
refuses it in one line; a 1×28×28 bundle without resizing is still written as version 2 (those
runtimes read it). A manifest without ``channels`` or ``resize`` reads as one channel, "none".

Images: uint8 (N, H, W) for one channel, (N, H, W, C) for C channels (channels last, as image
files hold them); `normalise` turns them into the encoder's float32 (N, C, H, W) input with
training's arithmetic (`hybnn_cli.data.tensors.images_to_tensor`). Reading files of other sizes
or modes is `hybnn_cli.data.image_files`'s work, not the runtime's.

Loading checks every file's SHA-256 before reading it and that every head was trained on codes
of this encoder. Running: ONNX Runtime (CPU execution provider, threads set explicitly) gives the
latent logits; they are thresholded (logit >= 0 → bit 1, the project's sign) and packed straight
into uint64 codes; each head runs on the codes with the XNOR kernels. onnxruntime and h5py are
imported when a bundle is loaded, not at import.

Cold start: numba is not imported until a head needs its compiled kernels. Starting numba and
loading the compiled head from the cache costs about 0.6 s of CPU in a new process, more than
everything else a one-image classification does, so with `compiled=None` (the default) a head
answers its first `NUMPY_CALLS` calls of at most `NUMPY_ROWS` codes with `head_numpy` (the same
scores and labels, some microseconds per call) and switches to the compiled head at the first
larger batch or after those calls. `compiled=True` compiles at load (a warm process that wants
the fastest head from its first call), `compiled=False` never starts numba.

Without numba (the base install, `pip install hybnn`; numba comes with the `fast` extra) every
head runs on `head_numpy`, with no error: the compiled head is tried once, and an ImportError of
numba or llvmlite leaves the numpy one in place (`compiled_kernels_available`). `Pipeline.
head_kernel()` says which head ran: "numba" when any call ran compiled, else "numpy".

Memory: the ONNX Runtime session keeps its CPU memory arena (reused across batches) but not its
memory pattern (`enable_mem_pattern` plans one buffer for every intermediate of a batch shape,
which doubled the peak at large batches), and `DEFAULT_BATCH` images per call keep the encoder's
activations (some tens of kB per 28×28 image) to a few tens of MB.

Threads: the encoder runs on `threads` ONNX Runtime threads; the compiled heads on as many for
batches of more than `SERIAL_HEAD_ROWS` codes, on one below. ONNX Runtime's pool threads spin
for a moment after each call, on the cores a parallel head would start on. Measured on 2 cores
busy with other work (six heads), the heads on one thread gave about 1.5 times the images per
second of the heads on two at batches of 256 and were ahead at 1,024 and 4,096 too; above
`SERIAL_HEAD_ROWS` the heads stay parallel, for large arrays of codes on idle cores.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from hybnn_kernels.deploy_file import DeployArrays, DeployFileError, read_deploy
from hybnn_kernels.head_numpy import NumpyHead
from hybnn_kernels.layout import pack_signs_numpy
from hybnn_kernels.prototypes import PrototypeHead, read_prototypes

BUNDLE_FORMAT = "hybnn-bundle"
BUNDLE_VERSION = 2  # written for an encoder of one 28×28 channel, unresized (`format_version`)
SHAPED_VERSION = 3  # written for any other input (module docstring)
READ_VERSIONS = (1, 2, 3)  # version 1: no prototype heads; 3: input of another shape or resized
MANIFEST = "bundle.json"
NUMPY_CALLS = 64  # calls a head answers in numpy before it compiles (compiled=None)
NUMPY_ROWS = 64  # the largest batch it answers in numpy
# images per encoder call by default (`hybnn predict --batch-size`): the activations of a batch,
# not the number of images, set the peak memory (module docstring)
DEFAULT_BATCH = 256
# batches of at most this many codes run the compiled heads on one thread: right after each
# encoder call ONNX Runtime's pool threads spin a while on the cores a parallel head would use,
# and such a head waited for them (module docstring)
SERIAL_HEAD_ROWS = 1024


class BundleError(ValueError):
    """A bundle that is not one, is damaged, or does not fit the images given."""


class InputShape(NamedTuple):
    """The images an encoder takes: channels, height, width and how its training images were
    resized to that size ("none": they were not)."""

    channels: int = 1
    height: int = 28
    width: int = 28
    resize: str = "none"

    @property
    def image(self) -> tuple[int, ...]:
        """One image's array shape: (H, W) for one channel, else (H, W, C)."""
        hw = (self.height, self.width)
        return hw if self.channels == 1 else (*hw, self.channels)

    def text(self) -> str:
        return f"{self.channels}×{self.height}×{self.width}"


def input_shape(manifest: dict) -> InputShape:
    """The `InputShape` of a manifest's ``encoder.input`` (without channels or resize, as
    bundles before version 3 are: one channel, "none")."""
    inp = (manifest.get("encoder") or {}).get("input") or {}
    try:
        return InputShape(int(inp.get("channels", 1)), int(inp.get("height", 28)),
                          int(inp.get("width", 28)), str(inp.get("resize") or "none"))
    except (TypeError, ValueError):
        raise BundleError("the manifest's encoder input has no valid shape") from None


def format_version(shape: InputShape) -> int:
    """The format version a bundle of encoder input `shape` is written with (module docstring)."""
    return BUNDLE_VERSION if shape == InputShape() else SHAPED_VERSION


def normalise(images: np.ndarray, offset, scale) -> np.ndarray:
    """The encoder's float32 (N, C, H, W) input for uint8 images (N, H, W) or (N, H, W, C):
    (pixel − offset) / scale in float32, as training's images_to_tensor computes it."""
    nchw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    x = np.empty(nchw.shape, dtype=np.float32)
    np.subtract(nchw, np.float32(offset), out=x, dtype=np.float32)
    np.divide(x, np.float32(scale), out=x)
    return x


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Head:
    """A task head: its deploy arrays, run in numpy (`head_numpy`) or compiled (`runtime`)."""

    name: str
    arrays: DeployArrays
    classes: np.ndarray  # int64 (n_classes,): the dataset label of each class index
    compiled: bool | None = None  # None: numpy for the first small calls, then compiled
    numpy_calls: int = 0
    compiled_calls: int = 0
    _numpy: NumpyHead | None = field(default=None, repr=False)
    _runtime: object = field(default=None, repr=False)  # runtime.BNNRuntime, built on first use

    def __post_init__(self):
        if self.compiled:
            self.runtime  # noqa: B018  (compile now, where numba imports)

    @property
    def runtime(self):
        """The compiled head (`runtime.BNNRuntime`), or None where numba does not import; numba
        starts on the first access."""
        if self._runtime is None and compiled_kernels_available():
            from hybnn_kernels.runtime import BNNRuntime

            self._runtime = BNNRuntime.from_deploy(self.arrays)
        return self._runtime

    def _use_numpy(self, rows: int) -> bool:
        """Whether this call runs on `head_numpy` (module docstring: cold start, no numba)."""
        if self._runtime is not None:
            return False
        if self.compiled is False or (self.compiled is None and rows <= NUMPY_ROWS
                                      and self.numpy_calls < NUMPY_CALLS):
            return True
        return self.runtime is None  # compiles now where numba imports

    def labels(self, codes: np.ndarray, threads: int) -> np.ndarray:
        """Dataset labels int64 (N,) for packed codes (N, words)."""
        if self._use_numpy(len(codes)):
            self.numpy_calls += 1
            if self._numpy is None:
                self._numpy = NumpyHead(self.arrays)
            return self.classes[self._numpy.run(codes)[1]]
        self.compiled_calls += 1
        threads = 1 if len(codes) <= SERIAL_HEAD_ROWS else min(threads, _numba_threads())
        return self.classes[self._runtime.run(codes, threads)[1]]


@dataclass
class Timings:
    """Seconds spent in each part of the pipeline (accumulated over calls)."""

    encoder: float = 0.0
    pack: float = 0.0
    head: float = 0.0
    images: int = 0

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "threshold_pack": self.pack, "head": self.head,
                "images": self.images}


@dataclass
class Pipeline:
    """A loaded bundle: `classify(images)` → {head name: dataset labels}."""

    session: object  # onnxruntime.InferenceSession
    heads: dict[str, Head]
    manifest: dict
    path: Path
    threads: int
    int8: bool = False
    timings: Timings = field(default_factory=Timings)

    def __post_init__(self):
        inp = self.manifest["encoder"]["input"]
        self.input_name = str(inp["name"])
        self.shape = input_shape(self.manifest)
        self.channels, self.height, self.width = self.shape[:3]
        self.offset, self.scale = np.float32(inp["offset"]), np.float32(inp["scale"])
        self.n_bits = int(self.manifest["encoder"]["latent_bits"])

    def check_images(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise BundleError(f"images must be uint8 pixels, got {images.dtype}")
        if images.ndim != len(self.shape.image) + 1 or images.shape[1:] != self.shape.image:
            raise BundleError(f"expected {self.shape.text()} images (channels × height × width) "
                              f"as an array (N, {', '.join(map(str, self.shape.image))}), got "
                              f"shape {images.shape}")
        return images

    def encode(self, images: np.ndarray) -> np.ndarray:
        """Packed codes (N, words(latent_bits)) uint64 for uint8 images (N, H, W) of one
        channel, (N, H, W, C) of C."""
        images = self.check_images(images)
        t0 = time.perf_counter()
        x = normalise(images, self.offset, self.scale)  # training's arithmetic
        logits = self.session.run(None, {self.input_name: x})[0]
        t1 = time.perf_counter()
        codes = _pack_signs(logits)  # logit >= 0 → bit 1, straight from the float32 logits
        t2 = time.perf_counter()
        self.timings.encoder += t1 - t0
        self.timings.pack += t2 - t1
        self.timings.images += len(images)
        return codes

    def classify_codes(self, codes: np.ndarray, names=None) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        out = {}
        for name in names or self.heads:
            out[name] = self.heads[name].labels(codes, self.threads)
        self.timings.head += time.perf_counter() - t0
        return out

    def classify(self, images: np.ndarray, names=None) -> dict[str, np.ndarray]:
        """{head name: dataset labels int64 (N,)} for uint8 images (N, H, W) or (N, H, W, C)."""
        return self.classify_codes(self.encode(images), names)

    def one_image(self, threads: int | str | None = None, names=None):
        """The path for one image at a time at the lowest cost per call (`one_image.OneImage`):
        ``one(image)`` → {head name: label}. `threads`: a count, None (this pipeline's), or
        "fastest" (1 or this pipeline's count, whichever a short measurement finds faster)."""
        from hybnn_kernels.one_image import OneImage

        if threads == "fastest":
            return OneImage.fastest(self, heads=names)
        return OneImage(self, threads, names)

    def head_kernel(self) -> str:
        """"numba" when a head has run compiled, else "numpy" (`head_numpy`: the cold path, or
        every call where numba does not import)."""
        compiled = any(getattr(h, "compiled_calls", 0) for h in self.heads.values())
        return "numba" if compiled else "numpy"


_NUMBA: list = []  # [the numba module, or None where it does not import], filled on first use


def compiled_kernels_available() -> bool:
    """Whether numba imports (the `fast` extra), tried once; importing it starts it."""
    if not _NUMBA:
        try:
            import numba
        except ImportError:  # not installed, or llvmlite or numpy do not fit it
            numba = None
        _NUMBA.append(numba)
    return _NUMBA[0] is not None


def _numba_threads() -> int:
    """The most threads a compiled kernel takes (NUMBA_NUM_THREADS, fixed at numba's start);
    called once a compiled head exists, so numba is loaded."""
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _pack_signs(logits: np.ndarray) -> np.ndarray:
    """The compiled packer once numba has started (a head compiled: `bits` is loaded), else the
    numpy one; both give the same words (tests/test_bits.py). At batch 1 the numpy one costs
    about ten numpy calls, several times the compiled one."""
    bits = sys.modules.get("hybnn_kernels.bits")
    return bits.pack_signs(logits) if bits is not None else pack_signs_numpy(logits)


def _check_file(bundle: Path, entry: dict, what: str) -> Path:
    try:
        p = bundle / str(entry["file"])
        want = str(entry["sha256"])
    except (KeyError, TypeError):
        raise BundleError(f"{bundle}: the manifest's {what} entry lacks file or sha256") from None
    if bundle.resolve() not in p.resolve().parents:
        raise BundleError(f"{bundle}: {what} file {entry['file']} lies outside the bundle")
    if not p.is_file():
        raise BundleError(f"{bundle}: {what} file {entry['file']} is missing")
    got = file_sha256(p)
    if got != want:
        raise BundleError(f"{p}: SHA-256 {got[:12]}… does not match the manifest's {want[:12]}…; "
                          f"the file is damaged or was changed after export")
    return p


def read_manifest(path) -> dict:
    bundle = Path(path)
    mf = bundle / MANIFEST
    if not mf.is_file():
        raise BundleError(f"{bundle}: not a deploy bundle (no {MANIFEST})")
    try:
        m = json.loads(mf.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{mf}: not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{bundle}: not a hybnn deploy bundle (format "
                          f"{m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("format_version") not in READ_VERSIONS:
        raise BundleError(f"{bundle}: bundle format version {m.get('format_version')}, this "
                          f"runtime reads {', '.join(map(str, READ_VERSIONS[:-1]))} and "
                          f"{READ_VERSIONS[-1]}")
    if not m.get("heads") and not m.get("prototype_heads"):
        raise BundleError(f"{bundle}: the bundle has no task heads")
    both = set(m.get("heads") or {}) & set(m.get("prototype_heads") or {})
    if both:
        raise BundleError(f"{bundle}: head {sorted(both)[0]} is both a BNN head and a prototype "
                          f"head")
    return m


def make_session(onnx_path: Path | bytes, threads: int):
    """An ONNX Runtime session on the CPU execution provider with `threads` intra-op threads, of
    an ONNX file or of a serialized model in memory."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False  # the arena stays; the memory pattern doubled the peak
    so.log_severity_level = 3
    try:
        model = onnx_path if isinstance(onnx_path, bytes) else str(onnx_path)
        return ort.InferenceSession(model, sess_options=so,
                                    providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a malformed model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        name = "an in-memory model" if isinstance(onnx_path, bytes) else onnx_path
        raise BundleError(f"{name}: ONNX Runtime cannot load it ({first[:200]})") from None


def load_bundle(path, threads: int = 2, int8: bool = False, heads=None,
                compiled: bool | None = None) -> Pipeline:
    """Load a deploy bundle: check the files' SHA-256 and the heads' encoder, open the session.

    `heads`: names of the task heads to load (default: all). `int8`: run the quantized encoder.
    `compiled`: when the heads start numba (module docstring: None, True or False)."""
    bundle = Path(path)
    if threads < 1:
        raise BundleError(f"threads must be >= 1, got {threads}")
    m = read_manifest(bundle)
    enc = m.get("encoder") or {}
    key = "encoder_int8" if int8 else "encoder"
    if key not in m:
        raise BundleError(f"{bundle}: the bundle has no int8 encoder (export it with --int8)")
    onnx_path = _check_file(bundle, m[key], key)
    weights = str(enc.get("weights_sha256", ""))
    protos = m.get("prototype_heads") or {}
    bnn_heads = m.get("heads") or {}
    names = list(heads) if heads else [*bnn_heads, *protos]
    loaded = {}
    for name in names:
        if name in protos:
            loaded[name] = load_prototype_head(bundle, name, protos[name], enc)
            continue
        if name not in bnn_heads:
            raise BundleError(f"{bundle}: no head '{name}' (it has "
                              f"{', '.join([*bnn_heads, *protos])})")
        entry = bnn_heads[name]
        hp = _check_file(bundle, entry, f"head {name}")
        try:
            rt = read_deploy(hp)
        except DeployFileError as e:
            raise BundleError(str(e)) from None
        got = str(rt.meta.get("encoder_sha256", ""))
        if got != weights or str(entry.get("encoder_sha256", "")) != weights:
            raise BundleError(f"{bundle}: head {name} was trained on codes of encoder "
                              f"{got[:12]}… but the bundle's encoder is {weights[:12]}…")
        if rt.n_bits != int(enc.get("latent_bits", -1)):
            raise BundleError(f"{bundle}: head {name} takes {rt.n_bits} bits, the encoder gives "
                              f"{enc.get('latent_bits')}")
        classes = np.asarray(entry.get("classes") or range(rt.n_classes), dtype=np.int64)
        if len(classes) != rt.n_classes:
            raise BundleError(f"{bundle}: head {name} lists {len(classes)} classes for a "
                              f"{rt.n_classes}-class BNN")
        loaded[name] = Head(name, rt, classes, compiled)
    session = make_session(onnx_path, threads)
    return Pipeline(session, loaded, m, bundle, int(threads), int8)


def load_prototype_head(bundle: Path, name: str, entry: dict, encoder: dict) -> PrototypeHead:
    """A prototype head of the manifest (`prototype_heads`), its file's SHA-256 checked, and
    refused unless it was fitted on codes of the bundle's encoder."""
    weights = str(encoder.get("weights_sha256", ""))
    if not isinstance(entry, dict) or str(entry.get("encoder_sha256", "")) != weights:
        got = str(entry.get("encoder_sha256", "")) if isinstance(entry, dict) else ""
        raise BundleError(f"{bundle}: prototype head {name} was fitted on codes of encoder "
                          f"{got[:12]}… but the bundle's encoder is {weights[:12]}…")
    path = _check_file(bundle, entry, f"prototype head {name}")
    classes, k = entry.get("classes"), entry.get("components")
    if (not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes)
            or len(set(classes)) != len(classes) or not isinstance(k, int) or k < 1):
        raise BundleError(f"{bundle}: prototype head {name} needs distinct class names and "
                          f"components >= 1 in the manifest")
    try:
        protos = read_prototypes(path, int(encoder.get("latent_bits", -1)), len(classes) * k)
    except ValueError as e:
        raise BundleError(str(e)) from None
    return PrototypeHead(name, np.asarray(classes, dtype=str), protos, k)
