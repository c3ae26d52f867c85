"""Codes (layer 3): the codes file (HDF5, packed bits with labels), encoding images into codes
with a frozen encoder, and shards of a codes file.

May import: `models`, `data` and the top-level modules.
"""
