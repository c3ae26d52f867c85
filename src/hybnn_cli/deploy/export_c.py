"""A task head as portable C99 source for any C host (`hybnn export MODEL --c OUT`: OUT.h, OUT.c).

The input is one head: a BNN checkpoint (folded here by `export_head.export_arrays`, which needs
torch) or a deploy file (`hybnn export --out`, or a bundle's ``heads/NAME.h5``: no torch). The
C names come from OUT's file name: ``runs/bnn-task3`` gives the prefix ``hybnn_bnn_task3_`` (and
``HYBNN_BNN_TASK3_`` for macros); a name that makes no C identifier is refused in one line.

What is written, arrays as the deploy file holds them (`hybnn_kernels.runtime` documents them):

- OUT.h: the provenance as a comment (hybnn version, the source file and its SHA-256, the
  encoder's SHA-256, task and classes, seed and config), the input code's bit layout
  (`hybnn_kernels.layout`), the sizes as macros, the class labels and two functions:
  ``int hybnn_NAME_classify(const uint64_t code[N_WORDS])`` → the class index, and
  ``int hybnn_NAME_scores(code, float scores[N_CLASSES])`` → the same, with the scores written.
  Both return −1 for a code whose padding bits are not zero (the runtime refuses it too).
- OUT.c: the packed ±1 weights (``static const uint64_t``), the integer thresholds
  (``int32_t``), the float32 score table as hexadecimal float literals (exact), and the head:
  XNOR-popcount with ``__builtin_popcountll`` under GCC or Clang, a plain bit count elsewhere
  or when ``HYBNN_NO_BUILTIN`` is defined. No allocation, no libc beyond ``stdint.h``, no
  global that is written; ties take the first class, as the runtime and `torch.argmax` do.

Both files are rendered before either is written, then written under temporary names and renamed
together (`write_c_head`): an error leaves neither.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from hybnn_kernels.deploy_file import DeployArrays, DeployFileError, check_arrays, read_deploy
from hybnn_kernels.layout import WORD_BITS, n_words, used_bits_in_last_word
from hybnn_kernels.pipeline import file_sha256

from hybnn_cli import __version__
from hybnn_cli.errors import HybnnError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_INT32 = (-(2 ** 31), 2 ** 31 - 1)


@dataclass(frozen=True)
class CHead:
    """One head ready to render: its checked arrays, its C name and where it came from."""

    arrays: DeployArrays
    name: str  # the C identifier part: hybnn_<name>_classify
    source: dict = field(default_factory=dict)  # kind, path, sha256
    meta: dict = field(default_factory=dict)  # task, classes, encoder_sha256, seed, config, ...

    @property
    def classes(self) -> list[int]:
        return list(self.meta.get("classes") or range(self.arrays.n_classes))


def c_name(out: Path) -> str:
    """The C identifier made from OUT's file name (``-`` → ``_``, lower case), or HybnnError."""
    stem = Path(out).name
    if stem.endswith((".c", ".h")):
        stem = stem[:-2]
    if not NAME.fullmatch(stem):
        raise HybnnError(f"--c {out}: '{stem}' cannot name C functions: the file name must start "
                         f"with a letter and hold at most 64 letters, digits, '_' or '-'")
    return stem.replace("-", "_").lower()


def out_paths(out: Path) -> tuple[Path, Path]:
    """(OUT.h, OUT.c); OUT may be given with or without the suffix .c or .h."""
    out = Path(out)
    if out.suffix in (".c", ".h"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".h"), out.with_name(out.name + ".c")


def load_head(model: Path, name: str) -> CHead:
    """The head of a BNN checkpoint or of a deploy file (told apart by the HDF5 signature)."""
    model = Path(model)
    if not model.is_file():
        raise HybnnError(f"{model}: no such file (give a BNN checkpoint or a deploy file)")
    with open(model, "rb") as f:
        is_deploy = f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE
    if is_deploy:
        try:
            arrays = read_deploy(model)
        except DeployFileError as e:
            raise HybnnError(str(e)) from None
        meta, kind = arrays.meta, "deploy file"
    else:
        from hybnn_cli.deploy.export_head import export_arrays
        from hybnn_cli.models.checkpoint import load_bnn

        torch_model, meta = load_bnn(model)
        a = export_arrays(torch_model)
        arrays = check_arrays(a["fc1/weights"], a["fc1/thresholds"], a["fc2/weights"],
                              a["fc2/score_table"], torch_model.shape.n_bits)
        kind = "BNN checkpoint"
    task = meta.get("task") or {}
    info = {"task": task.get("name"), "classes": task.get("classes"),
            "encoder_sha256": str(meta.get("encoder_sha256", "")), "seed": meta.get("seed"),
            "config": meta.get("config", {}), "trained_with_hybnn": meta.get("hybnn_version")}
    return CHead(arrays, name, {"kind": kind, "path": str(model), "sha256": file_sha256(model)},
                 info)


def check_head(head: CHead) -> None:
    """What the C source relies on: finite scores, thresholds and labels in int32."""
    a = head.arrays
    if not np.all(np.isfinite(a.score_table)):
        raise HybnnError(f"{head.source.get('path')}: the score table holds non-finite values; "
                         f"C float literals cannot carry them")
    t = a.fc1_thresholds
    if t.size and (t.min() < _INT32[0] or t.max() > _INT32[1]):
        raise HybnnError("a threshold does not fit in int32_t")
    classes = head.classes
    if len(classes) != a.n_classes or any(
            not isinstance(c, (int, np.integer)) or not _INT32[0] <= c <= _INT32[1]
            for c in classes):
        raise HybnnError(f"the head's classes {classes} are not {a.n_classes} integer labels")


# ── rendering ─────────────────────────────────────────────────────────────────────────────────
def _comment(text: str) -> str:
    """Text safe inside a C block comment under -Wall -Werror: ASCII, no comment delimiters, no
    trigraphs."""
    text = text.encode("ascii", "backslashreplace").decode()
    return text.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")


def _float(x: np.float32) -> str:
    """A float32 as an exact C99 hexadecimal float literal (`float.hex`, trailing zeros off)."""
    h = float(x).hex()  # exact: every float32 is a double
    mant, exp = h.split("p")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    return f"{mant}p{exp}f"


def _u64(x) -> str:
    return f"UINT64_C(0x{int(x):016x})"


def _rows(values, fmt, per_line: int, indent: str = "    ") -> str:
    """One C initializer row, wrapped every `per_line` values."""
    items = [fmt(v) for v in values]
    lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "{" + (",\n" + indent + " ").join(lines) + "}"


def _header_comment(head: CHead) -> list[str]:
    a, m, s = head.arrays, head.meta, head.source
    config = json.dumps(m.get("config", {}), sort_keys=True, indent=2, ensure_ascii=True)
    padding = (f"The last word's bits {used_bits_in_last_word(a.n_bits)}..{WORD_BITS - 1} (past "
               f"bit {a.n_bits - 1} of the code) are padding and must be 0: the functions "
               f"return -1 otherwise." if a.n_bits % WORD_BITS else "There are no padding bits.")
    paragraphs = [
        f"hybnn C head '{head.name}': written by hybnn {__version__} (hybnn export --c); do not "
        f"edit.",
        f"Source: {s.get('kind')} {s.get('path')}, SHA-256 {s.get('sha256')}.",
        f"Encoder SHA-256: {m.get('encoder_sha256') or 'not recorded'}. The codes must come from "
        f"this encoder: a code of another one gives labels that mean nothing.",
        f"Task: {m.get('task') or 'not recorded'}; classes (index -> label): "
        + ", ".join(f"{i} -> {c}" for i, c in enumerate(head.classes)) + ".",
        f"Trained with hybnn {m.get('trained_with_hybnn') or '(not recorded)'}, seed "
        f"{m.get('seed')}, config:",
        None,  # the config, as JSON
        f"Network: {a.n_bits} code bits -> {a.hidden} hidden bits (XNOR-popcount, one integer "
        f"threshold per neuron: batch norm and sign folded) -> {a.n_classes} classes "
        f"(XNOR-popcount, then a score table: the output batch norm evaluated by torch for every "
        f"dot value).",
        f"Input: the encoder's code, packed. Bit j of the code is 1 when the encoder's logit j is "
        f">= 0 (the value +1) and 0 otherwise (-1); it lives in word j / {WORD_BITS} at bit "
        f"position j % {WORD_BITS}, least significant bit first, in {n_words(a.n_bits)} uint64_t "
        f"words. " + padding,
        f"Output: the class index (0 .. N_CLASSES - 1; the first class on tied scores); its label "
        f"is hybnn_{head.name}_classes[index]. The scores are float32 and equal the torch "
        f"model's and the Python runtime's bit for bit.",
        f"Call: int index = hybnn_{head.name}_classify(code); then, if index >= 0, "
        f"hybnn_{head.name}_classes[index] is the label.",
        "Pure C99: stdint.h only, no allocation, no global that is written, reentrant. Popcount "
        "is __builtin_popcountll under GCC or Clang; define HYBNN_NO_BUILTIN for the plain C "
        "count.",
    ]
    lines: list[str] = []
    for para in paragraphs:
        if para is None:
            lines += ["  " + line for line in config.splitlines()] + [""]
        else:
            lines += textwrap.wrap(_comment(para), 92, break_on_hyphens=False) or [""]
            lines += [] if para.endswith(":") else [""]
    return [_comment(line) for line in lines[:-1]]


def render_header(head: CHead) -> str:
    """The text of OUT.h."""
    a, n, up = head.arrays, head.name, head.name.upper()
    guard = f"HYBNN_{up}_H"
    comment = "\n".join(f" * {line}".rstrip() for line in _header_comment(head))
    return f"""/*
{comment}
 */
#ifndef {guard}
#define {guard}

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define HYBNN_{up}_N_BITS {a.n_bits}
#define HYBNN_{up}_N_WORDS {n_words(a.n_bits)}
#define HYBNN_{up}_HIDDEN {a.hidden}
#define HYBNN_{up}_HIDDEN_WORDS {n_words(a.hidden)}
#define HYBNN_{up}_N_CLASSES {a.n_classes}

/* The label of each class index. */
extern const int32_t hybnn_{n}_classes[HYBNN_{up}_N_CLASSES];

/* The class index of a packed code, or -1 if its padding bits are not 0. */
int hybnn_{n}_classify(const uint64_t code[HYBNN_{up}_N_WORDS]);

/* The same, with every class's score written to scores (the caller's buffer). */
int hybnn_{n}_scores(const uint64_t code[HYBNN_{up}_N_WORDS],
{" " * len(f"int hybnn_{n}_scores(")}float scores[HYBNN_{up}_N_CLASSES]);

#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""


def _arrays_text(head: CHead) -> str:
    a, n, up = head.arrays, head.name, head.name.upper()
    w1 = ",\n    ".join(_rows(r, _u64, 2) for r in a.fc1_weights)
    w2 = ",\n    ".join(_rows(r, _u64, 2) for r in a.fc2_weights)
    table = ",\n    ".join(_rows(r, _float, 4) for r in a.score_table)
    classes = _rows(head.classes, str, 16)
    return f"""const int32_t hybnn_{n}_classes[HYBNN_{up}_N_CLASSES] = {classes};

/* Hidden layer: sign(W) bits, one row per neuron (bits of a neuron with a negative batch-norm
 * scale flipped); hidden bit j is 1 iff N_BITS - 2 * popcount(code ^ row j) >= threshold j. */
static const uint64_t hybnn_{n}_fc1_weights[HYBNN_{up}_HIDDEN][HYBNN_{up}_N_WORDS] = {{
    {w1}
}};

static const int32_t hybnn_{n}_fc1_thresholds[HYBNN_{up}_HIDDEN] =
    {_rows(a.fc1_thresholds, str, 12)};

/* Output layer: sign(W) bits, one row per class. */
static const uint64_t hybnn_{n}_fc2_weights[HYBNN_{up}_N_CLASSES][HYBNN_{up}_HIDDEN_WORDS] = {{
    {w2}
}};

/* Class c's score for the output dot value d = HIDDEN - 2 * m (m mismatching bits) is at
 * column HIDDEN - m, i.e. (d + HIDDEN) / 2. */
static const float hybnn_{n}_score_table[HYBNN_{up}_N_CLASSES][HYBNN_{up}_HIDDEN + 1] = {{
    {table}
}};
"""


def _code_text(head: CHead) -> str:
    a, n, up = head.arrays, head.name, head.name.upper()
    used = used_bits_in_last_word(a.n_bits)
    padding = "" if used == WORD_BITS else (
        f"    if (code[HYBNN_{up}_N_WORDS - 1] & {_u64(~np.uint64((1 << used) - 1))}) {{\n"
        f"        return -1; /* padding bits past bit {a.n_bits - 1} are set */\n    }}\n")
    return f"""
#if (defined(__GNUC__) || defined(__clang__)) && !defined(HYBNN_NO_BUILTIN)
#define HYBNN_{up}_POPCOUNT(x) ((int32_t)__builtin_popcountll((unsigned long long)(x)))
#else
static int32_t hybnn_{n}_popcount(uint64_t x)
{{
    x = x - ((x >> 1) & UINT64_C(0x5555555555555555));
    x = (x & UINT64_C(0x3333333333333333)) + ((x >> 2) & UINT64_C(0x3333333333333333));
    x = (x + (x >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (int32_t)((x * UINT64_C(0x0101010101010101)) >> 56);
}}
#define HYBNN_{up}_POPCOUNT(x) hybnn_{n}_popcount(x)
#endif

int hybnn_{n}_scores(const uint64_t code[HYBNN_{up}_N_WORDS],
{" " * len(f"int hybnn_{n}_scores(")}float scores[HYBNN_{up}_N_CLASSES])
{{
    uint64_t hidden[HYBNN_{up}_HIDDEN_WORDS];
    int32_t j, w, c, best = 0;

{padding}    for (w = 0; w < HYBNN_{up}_HIDDEN_WORDS; ++w) {{
        hidden[w] = 0;
    }}
    for (j = 0; j < HYBNN_{up}_HIDDEN; ++j) {{
        int32_t mismatches = 0;
        for (w = 0; w < HYBNN_{up}_N_WORDS; ++w) {{
            mismatches += HYBNN_{up}_POPCOUNT(code[w] ^ hybnn_{n}_fc1_weights[j][w]);
        }}
        /* without a branch: the bit is as likely 0 as 1, and a mispredicted branch per
           neuron would cost more than the neuron's arithmetic */
        hidden[j / 64] |= (uint64_t)(HYBNN_{up}_N_BITS - 2 * mismatches
                                     >= hybnn_{n}_fc1_thresholds[j]) << (j % 64);
    }}
    for (c = 0; c < HYBNN_{up}_N_CLASSES; ++c) {{
        int32_t mismatches = 0;
        for (w = 0; w < HYBNN_{up}_HIDDEN_WORDS; ++w) {{
            mismatches += HYBNN_{up}_POPCOUNT(hidden[w] ^ hybnn_{n}_fc2_weights[c][w]);
        }}
        scores[c] = hybnn_{n}_score_table[c][HYBNN_{up}_HIDDEN - mismatches];
        if (scores[c] > scores[best]) {{
            best = c;
        }}
    }}
    return (int)best;
}}

int hybnn_{n}_classify(const uint64_t code[HYBNN_{up}_N_WORDS])
{{
    float scores[HYBNN_{up}_N_CLASSES];
    return hybnn_{n}_scores(code, scores);
}}
"""


def render_source(head: CHead, header_name: str) -> str:
    """The text of OUT.c (it includes `header_name`, OUT.h's file name)."""
    return (f"/* hybnn C head '{head.name}': see {_comment(header_name)} for where it came from "
            f"and how to call it. */\n#include \"{header_name}\"\n\n" + _arrays_text(head)
            + _code_text(head))


# ── writing ───────────────────────────────────────────────────────────────────────────────────
def _write_both(files: dict[Path, str]) -> None:
    """Write every file under a temporary name beside it, then rename them all; on an error
    none is left (files renamed already are removed again)."""
    tmps, done = {}, []
    try:
        for path, text in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmps[path] = Path(tmp)
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(text)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        for path, tmp in tmps.items():
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for path in done:
            path.unlink(missing_ok=True)
        raise
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)


def write_c_head(model: Path, out: Path) -> dict:
    """Write OUT.h and OUT.c for the head in `model` (checkpoint or deploy file); a summary."""
    name = c_name(out)
    h_path, c_path = out_paths(out)
    for p in (h_path, c_path):
        if p.is_dir():
            raise HybnnError(f"{p} is a folder; --c names the files OUT.h and OUT.c")
    head = load_head(model, name)
    check_head(head)
    header = render_header(head)
    source = render_source(head, h_path.name)
    _write_both({h_path: header, c_path: source})
    a = head.arrays
    const_bytes = (a.fc1_weights.nbytes + 4 * a.hidden + a.fc2_weights.nbytes
                   + a.score_table.nbytes + 4 * a.n_classes)
    return {"header": str(h_path), "source": str(c_path), "name": name,
            "functions": [f"hybnn_{name}_classify", f"hybnn_{name}_scores"],
            "n_bits": a.n_bits, "n_words": n_words(a.n_bits), "hidden": a.hidden,
            "n_classes": a.n_classes, "classes": head.classes, "const_bytes": int(const_bytes),
            "model": head.source, "encoder_sha256": head.meta["encoder_sha256"]}
