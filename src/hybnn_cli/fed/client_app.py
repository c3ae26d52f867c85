"""The Flower ClientApp: train the global BNN on this client's codes, reply with the update.

With `secagg` on, the server speaks SecAgg+ through Flower's legacy workflow: the train message
is a legacy FitIns and the reply a legacy FitRes, which Flower's `secaggplus_mod` (installed here
for the messages of a SecAgg+ round only) masks before it leaves the client; on a bits uplink
the binary weights go out as their signs (±1), since masked sums need whole vectors.

With DP on, Flower's `fixedclipping_mod` (through `dp.dp_clip_if_asked`) clips the update to the
norm the server asks for. A client whose partition `robust.attacker_partitions` picks (run setting
`byzantine` > 0, studies only) replies with its update sign-flipped (`robust.sign_flip`).

Node config (per SuperNode, `--node-config`): `partition-id` and `num-partitions` pick this
client's share of the codes file (default: all of it, for a machine that holds only its own
data); `codes` overrides the run's codes path with a local file.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.dp import dp_clip_if_asked
from hybnn_cli.fed.local_training import client_data, local_train, model_shape, scratch_model
from hybnn_cli.fed.payload import UpdateSpec, arrays_to_state, binary_weight_keys, encode_update
from hybnn_cli.fed.robust import attacker_partitions, sign_flip
from hybnn_cli.fed.secagg import (
    is_legacy_fit,
    legacy_fit_in,
    legacy_fit_reply,
    secagg_if_asked,
    stat_scales,
)

app = ClientApp(mods=[secagg_if_asked, dp_clip_if_asked])


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = FedConfig.from_run_config(context.run_config)
    node = context.node_config
    pid, n_parts = int(node.get("partition-id", 0)), int(node.get("num-partitions", 1))
    data = client_data(cfg, pid, n_parts, codes=node.get("codes") or None)
    legacy = is_legacy_fit(msg.content)
    if legacy:
        arrays, config = legacy_fit_in(msg.content)
    else:
        arrays, config = msg.content["arrays"], msg.content["config"]
    want = config.get("encoder-sha256")
    if want and want != data["encoder_sha256"]:
        raise HybnnError(f"this client's codes come from encoder {data['encoder_sha256'][:12]}…, "
                         f"the server's from {str(want)[:12]}…")
    model = scratch_model(model_shape(data["n_bits"], cfg, data.get("n_classes")))
    if legacy:
        model.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in
                               zip(model.state_dict(), arrays, strict=True)})
    else:
        model.load_state_dict(arrays_to_state(arrays))
    attacker = cfg.byzantine > 0 and pid in attacker_partitions(n_parts, cfg.byzantine, cfg.seed)
    received = {k: v.clone() for k, v in model.state_dict().items()} if attacker else None
    m = local_train(model, data["x"], data["y"], cfg, int(config["server-round"]), pid)
    if attacker:
        model.load_state_dict(sign_flip(model.state_dict(), received, binary_weight_keys(model)))
    metrics = {"num-examples": len(data["y"]), "partition-id": pid,
               "train-loss": float(m["loss"]), "train-acc": float(m["acc"])}
    if legacy:
        return Message(content=legacy_fit_reply(secagg_update(model, cfg.uplink),
                                                 len(data["y"]), metrics), reply_to=msg)
    reply = RecordDict({"arrays": encode_update(model, cfg.uplink),
                        "metrics": MetricRecord(metrics)})
    return Message(content=reply, reply_to=msg)


def secagg_update(model: torch.nn.Module, uplink: str) -> list[np.ndarray]:
    """The update in state-dict order for SecAgg+: floats (running statistics divided by their
    bound, `secagg.stat_scales`), binary weights as ±1 on a bits uplink (sign(0) = +1)."""
    binary = set(binary_weight_keys(model)) if uplink == "bits" else set()
    scales = stat_scales(UpdateSpec.for_model(model, "float"))
    return [np.where(v.numpy() < 0, -1.0, 1.0).astype(np.float32) if k in binary
            else (v.detach().numpy() / scales[k]).astype(v.detach().numpy().dtype)
            for k, v in model.state_dict().items()]
