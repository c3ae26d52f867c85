"""Data (layer 1): datasets from IDX files, the validation split, tasks (which classes a model
tells apart), image files to classify, the sets a VAE pretrains on, and arrays as tensors.

May import: the top-level modules (`errors`, `fileio`, `sealed`, `options`, …) and `hybnn_kernels`.
"""
