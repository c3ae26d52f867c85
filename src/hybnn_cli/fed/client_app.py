"""The Flower ClientApp: train the global BNN on this client's codes, reply with the update.

Node config (per SuperNode, `--node-config`): `partition-id` and `num-partitions` pick this
client's share of the codes file (default: all of it, for a machine that holds only its own
data); `codes` overrides the run's codes path with a local file.
"""

from __future__ import annotations

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from hybnn_cli.errors import HybnnError
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.payload import arrays_to_state, encode_update
from hybnn_cli.fed.task import client_data, initial_model, local_train, model_shape

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = FedConfig.from_run_config(context.run_config)
    node = context.node_config
    pid, n_parts = int(node.get("partition-id", 0)), int(node.get("num-partitions", 1))
    data = client_data(cfg, pid, n_parts, codes=node.get("codes") or None)
    want = msg.content["config"].get("encoder-sha256")
    if want and want != data["encoder_sha256"]:
        raise HybnnError(f"this client's codes come from encoder {data['encoder_sha256'][:12]}…, "
                         f"the server's from {str(want)[:12]}…")
    model = initial_model(model_shape(data["n_bits"], cfg), cfg.seed)
    model.load_state_dict(arrays_to_state(msg.content["arrays"]))
    m = local_train(model, data["x"], data["y"], cfg, int(msg.content["config"]["server-round"]),
                    pid)
    metrics = MetricRecord({"num-examples": len(data["y"]), "partition-id": pid,
                            "train-loss": float(m["loss"]), "train-acc": float(m["acc"])})
    reply = RecordDict({"arrays": encode_update(model, cfg.uplink), "metrics": metrics})
    return Message(content=reply, reply_to=msg)
