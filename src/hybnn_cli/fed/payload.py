"""The wire format of the BNN between server and clients, and how its size is counted.

Downlink (server → client) is always the float state dict of the global model: latent weights of
the binary layers in [−1, 1], BatchNorm parameters and running statistics.

Uplink (client → server) is either
- `float`: the same float state dict, or
- `bits`: each binary layer's weight matrix as packed sign bits (`pack_signs`: bit 1 = +1, bit j
  of a row in word j // 64 at position j % 64), one uint64 row per output neuron; BatchNorm
  vectors stay float. The server turns the bits back into ±1 values (`decode_update`) and
  averages those, so the next global latent weights are sample-weighted means of the clients'
  signs.

`UpdateSpec` lists what a valid update holds (keys, dtypes, shapes); the strategy checks every
reply against it. `payload_bytes` counts the serialized bytes of a message's content as Flower
pushes them (every object of the record tree, deflated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from hybnn_kernels import n_words, pack_signs, unpack_signs

from hybnn_cli.models.layers import BinaryConv2d, BinaryLinear


def binary_weight_keys(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict keys of the latent weights of binary layers (sent as bits on a bits uplink)."""
    return tuple(f"{name}.weight" for name, m in model.named_modules()
                 if isinstance(m, BinaryLinear | BinaryConv2d))


def state_to_arrays(state: dict) -> ArrayRecord:
    """A state dict (torch tensors or numpy arrays) as a float ArrayRecord (the downlink)."""
    return ArrayRecord({k: Array(np.array(_np(v), order="C")) for k, v in state.items()})


def arrays_to_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """A float ArrayRecord back to a torch state dict."""
    return {k: torch.from_numpy(np.array(a.numpy())) for k, a in arrays.items()}


def encode_update(model: torch.nn.Module, uplink: str) -> ArrayRecord:
    """The client's reply: its state dict, with binary weights packed to bits if uplink=bits."""
    state = {k: _np(v) for k, v in model.state_dict().items()}
    if uplink == "bits":
        for k in binary_weight_keys(model):
            state[k] = pack_signs(state[k].reshape(state[k].shape[0], -1))
    return state_to_arrays(state)


@dataclass(frozen=True)
class UpdateSpec:
    """What a valid client update holds: per key, (dtype, shape) on the wire and the float shape
    it decodes to."""

    uplink: str
    wire: dict  # key → (dtype name, shape tuple)
    shapes: dict  # key → float shape after decoding
    binary_keys: tuple[str, ...]

    @classmethod
    def for_model(cls, model: torch.nn.Module, uplink: str) -> UpdateSpec:
        binary = binary_weight_keys(model)
        wire, shapes = {}, {}
        for k, v in model.state_dict().items():
            shapes[k] = tuple(v.shape)
            if uplink == "bits" and k in binary:
                rows = v.shape[0]
                wire[k] = ("uint64", (rows, n_words(int(np.prod(v.shape[1:])))))
            else:
                wire[k] = (str(_np(v).dtype), tuple(v.shape))
        return cls(uplink, wire, shapes, binary)


def bn_fan_in(shapes: dict) -> dict[str, float]:
    """Per state key (key → shape), the fan-in of the binary layer whose output a BatchNorm
    normalizes, for that BatchNorm's keys (`bnN` follows `fcN`); 1 for every other key. A
    popcount sum of that many ±1 products has a mean within ±fan-in and a typical spread of
    √fan-in: the scale of its running statistics."""
    out = {}
    for key in shapes:
        layer = key.rpartition(".")[0]
        weight = "fc" + layer.removeprefix("bn") + ".weight"
        out[key] = (float(np.prod(shapes[weight][1:]))
                    if layer.startswith("bn") and weight in shapes else 1.0)
    return out


def decode_update(arrays, spec: UpdateSpec) -> dict[str, np.ndarray]:
    """Wire arrays (an ArrayRecord, or its arrays as numpy) → float64 arrays of the model's
    shapes (bits become ±1). Assumes the arrays passed `strategy.check_arrays`."""
    out = {}
    for k, a in arrays.items():
        x = a.numpy() if isinstance(a, Array) else np.asarray(a)
        if spec.uplink == "bits" and k in spec.binary_keys:
            shape = spec.shapes[k]
            x = unpack_signs(x, int(np.prod(shape[1:]))).reshape(shape)
        out[k] = x.astype(np.float64)
    return out


def payload_bytes(content: RecordDict) -> int:
    """Serialized bytes of a message's content: every object of its tree, deflated."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def _np(v) -> np.ndarray:
    return v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
