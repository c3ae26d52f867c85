"""The studies name the settings their plans and rows were written against before their own
options, so that `hybnn fed`'s and `hybnn continual`'s defaults (now the studies' choices) do not
change what a recorded command runs: `FEDAVG` is plain FedAvg with Adam clients, `PLAN_BASE` the
continual settings before any choice, and a later option still overrides them."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.continual.settings import ContinualConfig
from hybnn_cli.errors import HybnnError
from hybnn_cli.study.continual_study import PLAN_BASE
from hybnn_cli.study.fed_runner import FEDAVG
from tests.test_settings import fed_config_of

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def continual_config(monkeypatch, tmp_path, options: list[str]) -> ContinualConfig:
    seen = {}

    def stop(*args, **kwargs):
        raise HybnnError("stop here")

    monkeypatch.setattr("hybnn_cli.continual.sequence.load_data", stop)
    monkeypatch.setattr(ContinualConfig, "check", lambda self, n=None: seen.setdefault("cfg", self))
    res = runner.invoke(app, ["continual", "--strategy", "replay", *options,
                              "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "stop here" in res.output
    return seen["cfg"]


def test_fedavg_base_is_plain_fedavg_with_adam_clients(monkeypatch, tmp_path):
    cfg = fed_config_of(monkeypatch, tmp_path, FEDAVG)
    assert (cfg.client_opt, cfg.lr, cfg.server_opt, cfg.server_lr, cfg.server_momentum,
            cfg.server_schedule) == ("adam", 0.01, "sgd", 1.0, 0.0, "constant")
    assert fed_config_of(monkeypatch, tmp_path, []).server_opt != "sgd"  # the default differs


def test_a_rows_own_options_override_the_base(monkeypatch, tmp_path):
    chosen = "--client-opt sgd --lr 3 --server-opt adam --server-lr 0.1 --server-schedule cosine"
    cfg = fed_config_of(monkeypatch, tmp_path, [*FEDAVG, "--lr", "0.03", *chosen.split()])
    assert (cfg.client_opt, cfg.lr, cfg.server_opt, cfg.server_lr, cfg.server_momentum,
            cfg.server_schedule) == ("sgd", 3.0, "adam", 0.1, 0.0, "cosine")


def test_plan_base_is_the_continual_settings_before_any_choice(monkeypatch, tmp_path):
    cfg = continual_config(monkeypatch, tmp_path, PLAN_BASE)
    assert (cfg.loss, cfg.flip, cfg.balanced_batches, cfg.hidden) == ("plain", 0.0, False, 512)
    assert continual_config(monkeypatch, tmp_path, []).hidden != 512  # the default differs
    cfg = continual_config(monkeypatch, tmp_path, [*PLAN_BASE, "--loss", "la", "--hidden", "2048"])
    assert (cfg.loss, cfg.hidden, cfg.flip) == ("la", 2048, 0.0)


def test_every_study_command_names_its_base_first():
    """Each `hybnn fed` and `hybnn continual` command a study module builds starts with its base."""
    study = ROOT / "src" / "hybnn_cli" / "study"
    found = {"fed": 0, "continual": 0}
    for path in sorted(study.glob("*.py")):
        if path.name == "forgetproof_study.py":
            continue  # its strategies take no network setting: see the test below
        text = path.read_text()
        for m in re.finditer(r'\["fed",\s*([^,\]]+)', text):
            assert m.group(1).strip() == "*FEDAVG", f"{path.name}: fed command without *FEDAVG"
            found["fed"] += 1
        for m in re.finditer(r'\["continual", "--codes"', text):
            head = text[m.end():text.index("*self.common", m.end())]
            assert "*PLAN_BASE" in head, f"{path.name}: continual command without *PLAN_BASE"
            found["continual"] += 1
    assert found == {"fed": 4, "continual": 2}  # the four federated studies, tuning and study


def test_the_forgetproof_plan_gives_every_run_its_k():
    """The forget-proof study's strategies (mixture, prototype) take none of the network settings
    a base would fix; their one setting, K, is given by every candidate, and the study's runs take
    the chosen candidate's options, so a change of default never changes what the plan runs."""
    plan = json.loads((ROOT / "benchmarks" / "plans" / "forgetproof.json").read_text())
    assert set(plan["strategies"]) == {"mixture", "prototype"}
    for name, options in plan["candidates"].items():
        assert options[:1] == ["--components"] and len(options) == 2, name
    assert "--components" not in plan["common"]
