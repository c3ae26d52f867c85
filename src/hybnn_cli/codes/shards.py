"""Sharded extraction: encode the K-th of N slices of a data set (`extract --shard K/N`), and
join the slices into one codes file (`merge-codes`).

Shard K of N (0 ≤ K < N) of a split of n images holds the indices [⌊K·n/N⌋, ⌊(K+1)·n/N⌋): the
slices are contiguous, in order, and cover every index once. A shard is an ordinary codes file
whose config records `shard`: {index, count, ranges: {split: [start, stop, total]}}.

`merge_codes` refuses, with one line, shards of different encoders (SHA-256 of the encoder
weights), of different data sets, bit counts or shard counts, a shard given twice or overlapping
another, and a missing one; then it copies the shards in order, `CHUNK` codes at a time, so
memory stays flat however large the data set. The merged file equals a single `extract` of the
whole set bit for bit (codes and labels, in the same order).

Under torchrun, `train.stages.extract_parallel` has every process encode its own shard (rank K
of N → shard K/N, written beside the output), then rank 0 merges them and removes the shard
files. On several machines the output folder must be one shared file system; otherwise run
`extract --shard K/N` on each and `merge-codes` where the shards meet.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py

from hybnn_cli.codes.store import codes_writer, data_record, read_attrs
from hybnn_cli.errors import HybnnError

CHUNK = 65536  # codes copied at a time: 2 MiB of 200-bit codes
SPLITS = ("train", "test")


def parse_shard(text: str) -> tuple[int, int]:
    """"K/N" → (K, N) with 0 ≤ K < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise HybnnError(f"--shard {text}: write K/N, e.g. 0/4 for the first of four slices")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or k >= n:
        raise HybnnError(f"--shard {text}: K counts from 0, so K/N needs 0 ≤ K < N")
    return k, n


def shard_range(n: int, k: int, count: int) -> tuple[int, int]:
    """The indices [start, stop) of shard k of `count` in a split of n items."""
    return n * k // count, n * (k + 1) // count


def shard_path(out: Path, k: int, count: int) -> Path:
    """Where shard k/count of `out` is written under torchrun."""
    return out.with_name(f"{out.stem}.shard{k}of{count}{out.suffix}")


def _shard_info(path: Path) -> tuple[dict, dict]:
    attrs = read_attrs(path)
    config = attrs.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("shard"), dict):
        raise HybnnError(f"{path}: not a shard (it was written by extract without --shard)")
    return attrs, config["shard"]


def _same(key: str, what: str, paths, infos) -> None:
    first_path, (first, _) = paths[0], infos[0]
    for path, (attrs, _) in zip(paths[1:], infos[1:], strict=True):
        if attrs.get(key) != first.get(key):
            a, b = str(attrs.get(key)), str(first.get(key))
            if key == "encoder_sha256":
                a, b = a[:12] + "…", b[:12] + "…"
            raise HybnnError(f"{path} was made {what} {a} but {first_path} {what} {b}; "
                             f"shards must come from one extraction")


def check_cover(paths: list[Path], infos: list[tuple[dict, dict]]) -> dict[str, int]:
    """Check that the shards cover each split's indices exactly once; returns the split sizes."""
    count = infos[0][1]["count"]
    by_index: dict[int, Path] = {}
    for path, (_, sh) in zip(paths, infos, strict=True):
        if sh["count"] != count:
            raise HybnnError(f"{path} is shard {sh['index']}/{sh['count']} but {paths[0]} is one "
                             f"of {count}; shards must come from one extraction")
        if sh["index"] in by_index:
            raise HybnnError(f"{by_index[sh['index']]} and {path} are both shard "
                             f"{sh['index']}/{count}: they overlap")
        by_index[sh["index"]] = path
    missing = sorted(set(range(count)) - set(by_index))
    if missing:
        raise HybnnError(f"shard {', '.join(f'{k}/{count}' for k in missing)} is missing: "
                         f"{len(missing)} of {count} shards not given")
    totals = {}
    for split in SPLITS:
        pos, prev = 0, None
        for k in range(count):
            path = by_index[k]
            start, stop, total = infos[paths.index(path)][1]["ranges"][split]
            totals.setdefault(split, total)
            if total != totals[split]:
                raise HybnnError(f"{path}: /{split} has {total} images in all, {paths[0]} "
                                 f"{totals[split]}; shards must come from one extraction")
            if start < pos:
                raise HybnnError(f"{prev} and {path} overlap: both hold /{split} indices "
                                 f"{start}..{pos - 1}")
            if start > pos:
                raise HybnnError(f"/{split} indices {pos}..{start - 1} are in no shard "
                                 f"(between {prev} and {path})")
            pos, prev = stop, path
        if pos != totals[split]:
            raise HybnnError(f"/{split} indices {pos}..{totals[split] - 1} are in no shard")
    return totals


def merge_codes(paths: list[Path], out: Path, on_rows=None) -> dict:
    """Join shards into one codes file at `out` (written atomically); returns a summary."""
    if not paths:
        raise HybnnError("give the shard files to merge")
    paths = [Path(p) for p in paths]
    if Path(out).resolve() in {p.resolve() for p in paths}:
        raise HybnnError(f"{out} is one of the shards; write the merged file elsewhere")
    infos = [_shard_info(p) for p in paths]
    _same("encoder_sha256", "by encoder", paths, infos)
    _same("dataset", "from data set", paths, infos)
    _same("dataset_sha256", "from data of identity", paths, infos)
    _same("n_bits", "with n_bits", paths, infos)
    totals = check_cover(paths, infos)
    order = sorted(range(len(paths)), key=lambda i: infos[i][1]["index"])
    attrs = infos[0][0]
    config = {k: v for k, v in attrs["config"].items() if k != "shard"}
    config["merged_from"] = [str(paths[i]) for i in order]
    n_bits = int(attrs["n_bits"])
    with codes_writer(out, n_bits, totals, attrs["dataset"], attrs["encoder_sha256"], config,
                      int(attrs["seed"]), data=data_record(attrs)) as write:
        for i in order:
            _copy_shard(paths[i], infos[i][1], n_bits, write, on_rows)
    return {"out": str(out), "shards": len(paths), "n_bits": n_bits,
            "encoder_sha256": attrs["encoder_sha256"],
            **{f"n_{s}": n for s, n in totals.items()}}


def _copy_shard(path: Path, shard: dict, n_bits: int, write, on_rows) -> None:
    with h5py.File(path, "r") as f:
        for split in SPLITS:
            start, stop, _ = shard["ranges"][split]
            codes, labels = f[split]["codes"], f[split]["labels"]
            if codes.shape[0] != stop - start or labels.shape != (stop - start,):
                raise HybnnError(f"{path}: /{split} holds {codes.shape[0]} codes and "
                                 f"{labels.shape[0]} labels, its shard record says "
                                 f"{stop - start}")
            for a in range(0, stop - start, CHUNK):
                b = min(a + CHUNK, stop - start)
                write(split, start + a, codes[a:b], labels[a:b])
                if on_rows:
                    on_rows(b - a)
