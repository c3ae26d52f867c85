"""A labelled data set, whatever it comes from: a named one (`--dataset mnist`, IDX files found
and verified by `datasets`) or files (`--data PATH`: an image folder, an NPZ, a folder of IDX
pairs; read by `files`). Every command that reads images with labels opens its data here and gets
the same structure: the class names (label i is `class_names[i]`), the identity of the data (the
SHA-256 that `files` computes; None for a named set, whose identity is its name and verified MD5
sums) and the images and labels of `train` and `test` (the validation slice is cut from `train`
by `splits`, as for every set). The images of a named set or an IDX folder are arrays in memory;
those of an image folder or an NPZ are `image_store.ImageRows`, read by batch on demand
(streaming), which index and slice as the arrays do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hybnn_cli.errors import HybnnError
from hybnn_cli.sealed import guard

TEST_FRACTION = 0.2  # share of each class put in `test` when a folder is not split already
SPLIT_SEED = 0  # fixed, so that pretraining and extraction see the same split


@dataclass
class LabelledSet:
    name: str  # "mnist", or "files:<folder or file name>"
    class_names: tuple[str, ...]
    sha256: str | None  # identity of the data (None: a named set)
    source: dict = field(default_factory=dict)  # how it was read: path, kind, test split, …
    arrays: dict = field(default_factory=dict)  # split → (images uint8 or ImageRows, labels)
    data_dir: str | os.PathLike | None = None  # named sets: where the IDX files are looked for

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images (N, H, W) or (N, H, W, C) uint8 (an array, or `image_store.ImageRows` read
        on demand) and labels (N,) uint8 of `train` or `test` (not test in a sealed run)."""
        if split not in ("train", "test"):
            raise HybnnError(f"unknown split '{split}'; choose train or test")
        guard(split, self.name)
        if self.sha256 is None:
            from hybnn_cli.data.datasets import load_split

            return load_split(self.name, split, self.data_dir)
        return self.arrays[split]

    def record(self) -> dict:
        """What codes files and checkpoints record of the data."""
        out = {"dataset": self.name, "class_names": list(self.class_names)}
        if self.sha256 is not None:
            out.update(dataset_sha256=self.sha256, data_source=dict(self.source))
        return out


def open_labelled(dataset: str | None = None, data: str | os.PathLike | None = None,
                  data_dir=None, test_fraction: float | None = None,
                  on_file=None) -> LabelledSet:
    """The named set `dataset`, or the files at `data` (one of the two). `test_fraction` splits
    a folder of class subfolders that has no train/ and test/ (default `TEST_FRACTION`);
    `on_file(n, stage)` is called as image files are hashed and decoded (a progress bar;
    see `files`)."""
    if data is not None:
        if dataset is not None:
            raise HybnnError("give either --dataset NAME or --data PATH, not both")
        from hybnn_cli.data.files import read_files

        return read_files(Path(data), TEST_FRACTION if test_fraction is None else test_fraction,
                          on_file)
    if test_fraction is not None:
        raise HybnnError("--test-fraction splits the images of --data PATH; a named dataset "
                         "has its own test split")
    from hybnn_cli.data.datasets import get_spec

    spec = get_spec(dataset or "mnist")
    return LabelledSet(spec.name, spec.class_names, None, data_dir=data_dir)


RESIZE = "PIL bilinear, antialiased when shrinking"  # how images are brought to --image-size


def image_shape(images: np.ndarray) -> tuple[int, int, int]:
    """(channels, height, width) of uint8 images (N, H, W) or (N, H, W, C)."""
    return (1 if images.ndim == 3 else images.shape[3], images.shape[1], images.shape[2])


def fit_images(images, where: str, channels: int = 1, image_size: int = 28):
    """The images as the VAE takes them: `channels` (refused when they have others) and square
    image_size × image_size, resized by `RESIZE` when they are square of another size. Images
    read on demand (`image_store.ImageRows`) stay so: each batch read is resized."""
    c, h, w = image_shape(images)
    if c != channels:
        raise HybnnError(f"{where}: the images have {c} channel{'s' * (c > 1)}; the VAE takes "
                         f"{channels} channel{'s' * (channels > 1)} of {image_size}×{image_size}")
    if h != w:
        raise HybnnError(f"{where}: the images are {w}×{h}; the VAE takes square images "
                         f"({image_size}×{image_size}): crop them first")
    if h == image_size:
        return images
    from hybnn_cli.data.image_store import ImageRows

    if isinstance(images, ImageRows):
        item = (image_size, image_size) if c == 1 else (image_size, image_size, c)
        return images.with_transform(lambda batch: resize_images(batch, image_size), item)
    return resize_images(images, image_size)


def resize_images(images: np.ndarray, image_size: int) -> np.ndarray:
    """uint8 images (N, H, W) or (N, H, W, 3) resized to image_size × image_size by `RESIZE`."""
    from PIL import Image

    mode = "L" if images.ndim == 3 else "RGB"
    out = np.empty((len(images), image_size, image_size, *images.shape[3:]), dtype=np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img, mode).resize(
            (image_size, image_size), Image.Resampling.BILINEAR))
    return out
