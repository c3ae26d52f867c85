"""`--threads` has one meaning everywhere: CPU threads for torch and the XNOR kernels alike, by
default every core; `threads.using` sets both for a command and restores them."""

from __future__ import annotations

import numba
import pytest
import torch
import typer.main

from hybnn_cli import threads
from hybnn_cli.cli import app
from hybnn_cli.errors import HybnnError

COMPUTING = {"pretrain-vae", "extract", "train-bnn", "evaluate", "export", "predict", "bench",
             "fed", "baseline", "reproduce", "continual", "learn-class"}


def test_using_sets_torch_and_numba_and_restores_both():
    before = (torch.get_num_threads(), numba.get_num_threads())
    with threads.using(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    with pytest.raises(RuntimeError), threads.using(1):
        raise RuntimeError("the command failed")
    assert (torch.get_num_threads(), numba.get_num_threads()) == before


def test_default_is_every_available_core_and_the_limit_is_numbas():
    limit = numba.config.NUMBA_NUM_THREADS
    assert threads.resolve(None) == threads.resolve(0) == min(threads.available_cores(), limit)
    assert threads.resolve(1) == 1
    with pytest.raises(HybnnError, match=rf"^--threads {limit + 1}: at most {limit} here"):
        threads.resolve(limit + 1)


def test_the_default_shares_the_cores_among_torchrun_processes(monkeypatch):
    cores = threads.available_cores()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.default_threads() == max(1, cores // 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores * 4))
    assert threads.default_threads() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert threads.default_threads() == cores


def test_every_computing_command_takes_threads_with_the_same_meaning():
    commands = typer.main.get_command(app).commands
    have = {name for name, c in commands.items()
            if any("--threads" in p.opts for p in c.params)}
    assert have == COMPUTING
    for name in have:
        (opt,) = [p for p in commands[name].params if "--threads" in p.opts]
        assert opt.default is None, name
        assert opt.help.startswith(threads.HELP), name
