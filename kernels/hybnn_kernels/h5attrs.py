"""HDF5 attributes as hybnn's files store them (codes files, deploy files): scalars and strings
as they are, dicts and lists as JSON text. One encoder and one decoder, so a value reads back as it
was written. h5py itself is not imported here: callers pass an open object's `.attrs`."""

from __future__ import annotations

import json

import numpy as np


def write_attrs(attrs, meta: dict) -> None:
    """Store every item of `meta` on an h5py AttributeManager (dicts and lists as JSON)."""
    for key, value in meta.items():
        attrs[key] = json.dumps(value) if isinstance(value, dict | list | tuple) else value


def read_attrs(attrs) -> dict:
    """Every attribute of an h5py AttributeManager, decoded as `decode` says."""
    return {key: decode(value) for key, value in attrs.items()}


def decode(value):
    """bytes → str, numpy scalars → Python scalars, JSON objects and arrays → dict / list (text
    that only looks like JSON stays text)."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
