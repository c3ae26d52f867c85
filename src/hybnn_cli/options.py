"""Parsers for option values that several commands share: comma-separated lists and seed lists.
Each raises HybnnError with one line naming the option."""

from __future__ import annotations

from hybnn_cli.errors import HybnnError


def parse_list(value: str, option: str) -> list[str]:
    """The non-empty, stripped items of a comma-separated option value."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise HybnnError(f"{option} is empty")
    return items


def parse_seeds(value: str, option: str = "--seeds") -> list[int]:
    """Distinct integer seeds, comma-separated, e.g. "0,1,2"."""
    try:
        seeds = [int(v) for v in parse_list(value, option)]
    except ValueError:
        raise HybnnError(f"{option} takes integers separated by commas, got '{value}'") from None
    if len(set(seeds)) != len(seeds):
        raise HybnnError(f"{option} lists a seed twice: '{value}'")
    return seeds
