"""Defaults are the best found: `hybnn continual` and `hybnn fed` default to the settings the
studies chose on validation, read here from their result files. A study that chooses differently
fails these tests until the defaults (`continual.settings.CHOSEN`, `fed.config`'s optimizer
tables) follow."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import typer.main

from hybnn_cli.cli import app
from hybnn_cli.continual.settings import BASE, HELP, ContinualConfig
from hybnn_cli.fed.config import FedConfig

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
CONTINUAL = json.loads((RESULTS / "continual.json").read_text())
FEDTUNE = json.loads((RESULTS / "fedtune.json").read_text())
FORGETPROOF = json.loads((RESULTS / "forgetproof.json").read_text())
OPTIMIZERS = {"client_opt", "lr", "server_opt", "server_lr", "server_momentum",
              "server_schedule"}


def parsed(command: str, options: list[str]) -> dict:
    """The settings `options` name, as the command's parser reads them."""
    cmd = typer.main.get_command(app).commands[command]
    ctx = cmd.make_context(command, list(options), resilient_parsing=True)
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name).name == "COMMANDLINE"}
    return {name: ctx.params[name] for name in given}


def chosen_options(scenario: str, strategy: str) -> list[str]:
    """The study's rule (recorded with its choice): none and joint take no options; in the task
    scenario a strategy without a group of its own takes the class scenario's choice."""
    chosen = CONTINUAL["chosen"]
    if strategy in ("none", "joint"):
        return []
    group = strategy if scenario == "class" else f"task/{strategy}"
    return chosen.get(group, chosen.get(strategy, {})).get("options", [])


SCENARIOS = ("class", "task")
STRATEGIES = ("none", "replay", "generative", "joint")


def test_the_rule_is_the_one_recorded():
    rule = CONTINUAL["chosen"]["rule"]
    assert "none and joint take no options" in rule
    assert "in the task scenario a strategy without a group of its own takes the class " \
           "scenario's choice" in rule


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_continual_defaults_are_the_studys_choice(scenario, strategy):
    options = chosen_options(scenario, strategy)
    given = parsed("continual", ["--scenario", scenario, "--strategy", strategy, *options])
    cfg = ContinualConfig(scenario=scenario, strategy=strategy)
    for name, value in given.items():
        assert getattr(cfg, name) == value, name
    # a setting with a per-run default that the choice leaves out takes the base value
    for name in set(BASE) - set(given):
        assert getattr(cfg, name) == BASE[name], name


@pytest.mark.parametrize("key", sorted(CONTINUAL["runs"]))
def test_continual_defaults_are_what_the_study_ran(key):
    """The study's runs at the chosen settings: their config equals the default one but for the
    study's common options (memory, components, threads, epochs) and seeds."""
    _, scenario, strategy = key.split("/")
    ran = CONTINUAL["runs"][key]["config"]
    common = set(parsed("continual", CONTINUAL["common"])) | {"threads"}
    default = ContinualConfig(scenario=scenario, strategy=strategy).to_dict()
    assert set(common) <= set(HELP) | {"threads"}
    assert {k: v for k, v in ran.items() if k in default and k not in common} == \
        {k: v for k, v in default.items() if k in ran and k not in common}


@pytest.mark.parametrize("strategy", ["mixture", "prototype"])
def test_class_models_default_to_the_k_the_forgetproof_study_chose(strategy):
    """The `mnist` encoder's choice (the encoder the rest of the toolkit's defaults come from)."""
    chosen = FORGETPROOF["chosen"][f"mnist/{strategy}"]
    assert ContinualConfig(strategy=strategy).components == chosen["components"]
    assert parsed("continual", chosen["options"]) == {"components": chosen["components"]}


def test_fed_defaults_are_the_fedtune_choice():
    chosen = FEDTUNE["chosen"]
    given = parsed("fed", shlex.split(chosen["options"]))
    assert set(given) == OPTIMIZERS  # the study decides every optimizer setting
    cfg = FedConfig()
    assert {name: getattr(cfg, name) for name in given} == given
    assert FEDTUNE["candidates"][chosen["name"]] == chosen["options"]
