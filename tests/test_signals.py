"""SIGTERM and SIGINT during a real `hybnn extract` process: the command unwinds, removes its
temporary file, leaves no output file, prints one line and exits 143 or 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from hybnn_cli.data import datasets as data

# A `hybnn` entry point for the child: registers the generated `fake` dataset (the parent's
# fixture made it) and slows encoding to 20 ms per batch, so the signal surely lands mid-write.
LAUNCHER = """
import json, sys, time
from hybnn_cli.data import datasets as data
from hybnn_cli.train import stages
spec = json.loads(sys.argv.pop(1))
data.DATASETS["fake"] = data.DatasetSpec(name="fake", folder="fake", files=data.MNIST.files,
                                         md5=spec, mirrors=(), class_names=data.MNIST.class_names)
encode = stages.encode_batches
def slow(*args, **kwargs):
    for item in encode(*args, **kwargs):
        time.sleep(0.02)
        yield item
stages.encode_batches = slow
from hybnn_cli.cli import main
main()
"""


@pytest.mark.parametrize("sig, code, message", [
    (signal.SIGTERM, 143, "Terminated (SIGTERM)."),
    (signal.SIGINT, 130, "Interrupted (SIGINT)."),
])
def test_extract_cleans_up_on_signal(tiny_pipeline, tmp_path, sig, code, message):
    launcher = tmp_path / "hybnn_child.py"
    launcher.write_text(textwrap.dedent(LAUNCHER))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "codes.h5"
    args = [sys.executable, str(launcher), json.dumps(data.DATASETS["fake"].md5), "extract",
            "--vae", str(tiny_pipeline["vae"]), "--dataset", "fake",
            "--data-dir", str(tiny_pipeline["root"]), "--batch-size", "4", "--out", str(out),
            "--json"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=as_a_foreground_job)
    try:
        deadline = time.monotonic() + 60
        while not list(out_dir.glob(".codes.h5.*.tmp")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the temporary file never appeared"
            time.sleep(0.05)
        time.sleep(0.2)  # well inside the 160 batches × 20 ms of writing
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, stderr
    assert stderr.strip() == message
    assert stdout == ""
    assert list(out_dir.iterdir()) == []  # no .codes.h5.*.tmp and no codes.h5



def as_a_foreground_job() -> None:
    """Start a child with SIGINT at its default, as a shell's foreground job has it (a suite run in
    the background, `pytest &`, would otherwise hand it down ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)

def test_a_signal_swallowed_in_a_c_callback_is_delivered_again():
    """Python only prints a KeyboardInterrupt raised inside a ctypes callback ("Exception
    ignored"); the CLI's hook raises the signal again so the command still stops."""

    code = (
        "import ctypes, os, signal, time\n"
        "from hybnn_cli import cli\n"
        "signal.signal(signal.SIGTERM, cli._on_sigterm)\n"
        "import sys; sys.unraisablehook = cli._on_unraisable\n"
        "CB = ctypes.CFUNCTYPE(None)\n"
        "def cb():\n"
        "    os.kill(os.getpid(), signal.SIGINT); time.sleep(0.1)\n"
        "try:\n"
        "    CB(cb)()\n"
        "    time.sleep(2)\n"
        "    print('lost')\n"
        "except KeyboardInterrupt:\n"
        "    print('delivered')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, preexec_fn=as_a_foreground_job)
    assert out.stdout.strip() == "delivered", out.stdout + out.stderr


def test_bench_stops_its_child_process_on_sigterm(tmp_path):
    """`hybnn bench` runs in a child process; a SIGTERM to hybnn ends both, and writes nothing."""
    import os

    out = tmp_path / "bench.json"
    proc = subprocess.Popen([sys.executable, "-m", "hybnn_cli", "bench", "--quick", "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        child = None
        deadline = time.monotonic() + 60
        while child is None and time.monotonic() < deadline:
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        stat = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if int(stat[1]) == proc.pid:
                        child = int(d)
            time.sleep(0.1)
        assert child is not None, "the benchmark's child process never started"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 143 and err.strip().endswith("Terminated (SIGTERM).")
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{child}") or \
            open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
        assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    finally:
        if proc.poll() is None:
            proc.kill()
