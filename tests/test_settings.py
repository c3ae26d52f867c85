"""One source per setting: `hybnn fed`'s and `hybnn continual`'s options take their defaults from
`FedConfig` and `ContinualConfig`, `[tool.flwr.app.config]` and the Flower app folder equal
`FedConfig`'s defaults, and the dataclasses check their settings with one line naming the option."""

from __future__ import annotations

import tomllib
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from hybnn_cli.cli import app
from hybnn_cli.continual import settings as continual_settings
from hybnn_cli.continual.settings import ContinualConfig
from hybnn_cli.errors import HybnnError
from hybnn_cli.fed import config as fed_config
from hybnn_cli.fed.config import FedConfig
from hybnn_cli.fed.flower_setup import write_app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# fields a command sets itself (from its own options or what it computes), not options of their own
FED_SET_BY_COMMAND = {"codes", "out", "threads", "out_dir"}
CONTINUAL_SET_BY_COMMAND = {"threads", "seed", "finetune_per_class"}


def command_params(name: str) -> dict:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[name].params}


def field_default(f):
    return f.default if f.default is not MISSING else f.default_factory()


@pytest.mark.parametrize("name, cls, module, own", [
    ("fed", FedConfig, fed_config, FED_SET_BY_COMMAND),
    ("continual", ContinualConfig, continual_settings, CONTINUAL_SET_BY_COMMAND),
])
def test_every_setting_is_an_option_with_the_dataclass_default(name, cls, module, own):
    params = command_params(name)
    options = {f.name for f in fields(cls)} - own
    assert set(module.HELP) == options  # every other field is an option, with help
    for f in fields(cls):
        if f.name in options:
            param = params[f.name]
            assert param.default == field_default(f), f.name
            assert param.help.startswith(module.HELP[f.name]), f.name
            assert f"--{f.name.replace('_', '-')}" in param.opts


def fed_config_of(monkeypatch, tmp_path, options: list[str]) -> FedConfig:
    """The FedConfig `hybnn fed OPTIONS --codes … --out … --threads 1` builds (nothing runs)."""
    seen = {}

    def fake_run(cfg, engine, run_dir, on_round, cpus):
        seen["cfg"] = cfg
        return {"bytes": {}, "rounds": []}

    monkeypatch.setattr("hybnn_cli.fed.launch.run_federation", fake_run)
    codes = tmp_path / "codes.h5"
    codes.write_bytes(b"")
    res = runner.invoke(app, ["fed", *options, "--codes", str(codes), "--out",
                              str(tmp_path / "f.pt"), "--threads", "1", "--json"])
    assert res.exit_code == 0, res.output
    return seen["cfg"]


def test_fed_options_reach_the_config_unchanged(monkeypatch, tmp_path):
    """What the command builds from its options left out is FedConfig() itself."""
    made = fed_config_of(monkeypatch, tmp_path, []).to_dict()
    expected = FedConfig(codes=str(tmp_path / "codes.h5"), out=str(tmp_path / "f.pt"),
                         threads=1).to_dict()
    assert made == expected


def test_pyproject_flower_config_is_fedconfigs_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert table == FedConfig().to_run_config()
    assert FedConfig.from_run_config(table) == FedConfig()


def test_the_flower_app_folder_holds_fedconfigs_defaults(tmp_path):
    folder = write_app(tmp_path / "app")
    table = tomllib.loads((folder / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert table["config"] == FedConfig().to_run_config()


# ── dependent defaults ────────────────────────────────────────────────────────────────────────
def test_fed_optimizer_defaults_follow_the_optimizer_named():
    assert (FedConfig().client_opt, FedConfig().server_opt) == ("sgd", "adam")
    plain = FedConfig(server_opt="sgd")  # plain FedAvg: Adam clients at train-bnn's rate
    assert (plain.client_opt, plain.lr, plain.server_lr, plain.server_momentum,
            plain.server_schedule, plain.server_step) == ("adam", 0.01, 1.0, 0.0, "constant",
                                                         False)
    assert FedConfig(client_opt="adam").lr == 0.01
    assert FedConfig(client_opt="sgd", server_opt="yogi").server_lr == 0.1


@pytest.mark.parametrize("kw", [{"secagg": True}, {"dp_clip": 10.0, "dp_noise": 1.0}])
def test_secagg_and_dp_default_to_plain_fedavg(kw):
    cfg = FedConfig(**kw)
    assert (cfg.client_opt, cfg.server_opt, cfg.server_step) == ("adam", "sgd", False)


def test_an_explicit_server_optimizer_with_secagg_is_still_refused():
    with pytest.raises(HybnnError, match="not with --secagg nor DP"):
        FedConfig(secagg=True, server_opt="adam")


def test_continual_defaults_depend_on_scenario_and_strategy():
    assert ContinualConfig(strategy="none").hidden == continual_settings.BASE["hidden"]
    assert ContinualConfig(strategy="replay", hidden=64).hidden == 64  # given wins
    assert ContinualConfig(strategy="replay", flip=0.0).flip == 0.0
    assert ContinualConfig(strategy="generative", balanced_batches=False).balanced_batches is False
    for (scenario, strategy), chosen in continual_settings.CHOSEN.items():
        cfg = ContinualConfig(scenario=scenario, strategy=strategy)
        assert {k: getattr(cfg, k) for k in chosen} == chosen


def test_no_balanced_batches_turns_a_default_off(monkeypatch, tmp_path):
    seen = {}

    def fake_load(path, val_fraction, tasks=None):
        raise HybnnError("stop here")

    monkeypatch.setattr("hybnn_cli.continual.sequence.load_data", fake_load)
    monkeypatch.setattr(ContinualConfig, "check",
                        lambda self, n=None: seen.setdefault("cfg", self))
    res = runner.invoke(app, ["continual", "--strategy", "generative", "--no-balanced-batches",
                              "--out", str(tmp_path / "c")])
    assert res.exit_code == 1 and "stop here" in res.output
    assert seen["cfg"].balanced_batches is False and seen["cfg"].loss == "la"


# ── validation: one line naming the option, exit code 1 ───────────────────────────────────────
@pytest.mark.parametrize("args, message", [
    (["--flip", "0.7"], "--flip must be in [0, 0.5], got 0.7"),
    (["--memory", "0"], "--memory must be at least 1, got 0"),
    (["--hidden", "0"], "--hidden must be at least 1, got 0"),
    (["--distill", "-1"], "--distill must be >= 0, got -1.0"),
    (["--lr", "0"], "--lr must be > 0, got 0.0"),
    (["--batch-size", "1"], "--batch-size must be at least 2, got 1"),
    (["--val-fraction", "0.95"], "--val-fraction must be in [0, 0.9], got 0.95"),
    (["--loss", "hinge"], "unknown loss 'hinge': use ace or la or plain"),
])
def test_continual_settings_are_checked_with_one_line(args, message, tmp_path):
    res = runner.invoke(app, ["continual", "--codes", str(tmp_path / "none.h5"), *args])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {message}"


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "1"], "--batch-size must be at least 2, --hidden and --min-valid at least "
                            "1; got 1, 128, 1"),
    (["--round-timeout", "0.5"], "--round-timeout must be at least 1 second, got 0.5"),
    (["--fraction", "0"], "the fraction of clients per round must be in (0, 1], got 0.0"),
    (["--client-opt", "lamb"], "unknown client optimizer 'lamb': use adam or sgd"),
])
def test_fed_settings_are_checked_with_one_line(args, message, tmp_path):
    codes = tmp_path / "codes.h5"
    codes.write_bytes(b"")
    res = runner.invoke(app, ["fed", "--codes", str(codes), *args])
    assert res.exit_code == 1
    assert res.output.strip() == f"Error: {message}"
