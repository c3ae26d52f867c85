"""Benchmarks (layer 7): `hybnn bench`, the XNOR-popcount kernels against the float32 and int8
contenders at their best, each answer checked.

May import: `deploy` and every layer below it.
"""
