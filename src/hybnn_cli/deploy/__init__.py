"""Deployment (layer 5): export a trained BNN to a deploy file and an encoder with heads to a
deploy bundle, and predict with them (the bundle path never imports torch).

May import: `train`, `codes`, `models`, `data`, the top-level modules and `hybnn_kernels`.
"""
