"""Running the ServerApp and the ClientApps in one process, without a SuperLink.

`InProcessGrid` is a Flower `Grid` that hands each message straight to the destination node's
ClientApp and returns its reply. Messages are deep-copied on the way in and out, so no client can
alter what the server or another client holds, as over a real wire. A ClientApp that raises
yields an error reply (as a SuperNode sends); one that returns None has "disappeared" and yields
no reply. This is what `hybnn fed` runs by default and what most tests drive: a round takes as
long as the local training, with no process start-up or polling.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from uuid import uuid4

from flwr.app import (
    Array,
    ArrayRecord,
    Context,
    Error,
    Message,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from hybnn_cli.fed import client_app as default_client
from hybnn_cli.fed import server_app
from hybnn_cli.fed.config import FedConfig


class InProcessGrid(Grid):
    def __init__(self, clients: dict[int, tuple[ClientApp, Context]], run: Run,
                 on_round: Callable[[dict], None] | None = None):
        self._clients = clients
        self._run = run
        self._replies: dict[str, Message] = {}
        self.on_round = on_round

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._clients)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            msg_id = str(uuid4())
            msg.metadata.__dict__["_message_id"] = msg_id
            reply = self._deliver(copy_message(msg))
            if reply is not None:
                self._replies[msg_id] = copy_message(reply)
            ids.append(msg_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))

    def _deliver(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        if node not in self._clients:
            return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=f"no node {node}"),
                           reply_to=msg)
        app, context = self._clients[node]
        try:
            return app(msg, context)
        except Exception as e:  # a crashing ClientApp becomes an error reply, as on a SuperNode
            return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                 reason=f"{type(e).__name__}: {e}"), reply_to=msg)


def copy_message(msg: Message) -> Message:
    """A copy sharing no mutable state with `msg` (what a trip over the wire gives)."""
    meta = copy.deepcopy(msg.metadata)
    if msg.has_error():
        return Message(Error(code=msg.error.code, reason=msg.error.reason), metadata=meta)
    content = RecordDict()
    for key, rec in msg.content.items():
        if isinstance(rec, ArrayRecord):
            content[key] = ArrayRecord({k: Array(dtype=a.dtype, shape=tuple(a.shape),
                                                 stype=a.stype, data=bytes(a.data))
                                        for k, a in rec.items()})
        else:
            content[key] = type(rec)(copy.deepcopy(dict(rec)))
    return Message(content, metadata=meta)


def run_inprocess(cfg: FedConfig, on_round: Callable[[dict], None] | None = None,
                  client_apps: Sequence[ClientApp] | None = None, run_id: int = 1) -> dict:
    """Run the ServerApp over cfg.clients ClientApps in this process; return the run summary.

    `client_apps` replaces the ClientApp of each node (tests inject faulty clients this way).
    """
    apps = list(client_apps) if client_apps is not None else [default_client.app] * cfg.clients
    run_config = cfg.to_run_config()
    clients = {}
    for pid, app in enumerate(apps):
        node_id = 1000 + pid
        clients[node_id] = (app, Context(run_id=run_id, node_id=node_id,
                                         node_config={"partition-id": pid,
                                                      "num-partitions": len(apps)},
                                         state=RecordDict(), run_config=dict(run_config)))
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    grid = InProcessGrid(clients, Run.create_empty(run_id), on_round=on_round)
    with tempfile.TemporaryDirectory(prefix="hybnn-fed-") as tmp:
        run_cfg = FedConfig(**{**cfg.to_dict(), "out_dir": cfg.out_dir or tmp})
        context = Context(run_id=run_id, node_id=SUPERLINK_NODE_ID, node_config={},
                          state=RecordDict(), run_config=run_cfg.to_run_config())
        server_app.app(grid, context)
        result = json.loads((Path(run_cfg.out_dir) / "result.json").read_text())
    result["config"] = cfg.to_dict()
    return result
