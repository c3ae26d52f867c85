"""Default files that chain: each stage remembers where it wrote, so the next one finds it.

`hybnn pretrain-vae` records its checkpoint and `hybnn extract` its codes file in
`runs/latest.json` (relative to the working folder). A command whose file option is left out
takes the file of that kind written last, if it still exists, else the conventional place
(`runs/vae.pt`, `runs/codes.h5`). So `hybnn pretrain-vae`, `hybnn extract --out codes.h5`,
`hybnn train-bnn --task 3` work as typed, wherever extract wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

from hybnn_cli.errors import HybnnError
from hybnn_cli.fileio import atomic_path

LATEST = Path("runs") / "latest.json"
DEFAULTS = {"vae": Path("runs/vae.pt"), "codes": Path("runs/codes.h5")}
MAKERS = {"vae": "hybnn pretrain-vae", "codes": "hybnn extract"}
HELP = {"vae": "VAE checkpoint (default: the one `hybnn pretrain-vae` last wrote in this folder, "
               "else runs/vae.pt).",
        "codes": "Codes file (default: the one `hybnn extract` last wrote in this folder, else "
                 "runs/codes.h5)."}


def _read() -> dict:
    try:
        data = json.loads(LATEST.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def remember(kind: str, path: Path) -> None:
    """Record `path` as the latest file of `kind` written from this folder."""
    data = _read()
    data[kind] = str(path)
    with atomic_path(LATEST) as tmp:
        tmp.write_text(json.dumps(data, indent=1) + "\n")


def resolve(kind: str, given: Path | None) -> Path:
    """`given` if the user gave one; else the latest file of `kind` that still exists, else the
    conventional place. A default that does not exist is refused with a line saying how to make
    it."""
    if given is not None:
        return given
    recorded = _read().get(kind)
    if recorded and Path(recorded).is_file():
        return Path(recorded)
    path = DEFAULTS[kind]
    if not path.is_file():
        option = "--vae" if kind == "vae" else "--codes"
        raise HybnnError(f"no {kind} file here: {path} does not exist and {MAKERS[kind]} has not "
                         f"written one in this folder; run {MAKERS[kind]} first or give {option}")
    return path
