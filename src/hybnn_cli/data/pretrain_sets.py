"""The images a VAE is pretrained on: one data set or the union of several, `a+b+…`.

The paper pretrains the encoder once, on a large general set; `mnist+fashion-mnist` is the union
of both training sets (120,000 images; test: 20,000), in the order the names are given. A part is
either a set hybnn knows by name (`data.DATASETS`: found, downloaded and verified by its MD5 sums)
or any other folder of 28×28 unsigned-byte IDX files under the data folders (`--data-dir`,
`$HYBNN_DATA`, the user cache), named like MNIST's (`train-images-idx3-ubyte[.gz]`,
`t10k-images-idx3-ubyte[.gz]`); such a set has no known checksum and is read as found. Only the
images are used: pretraining needs no labels, and the labels of a union would mix meanings.
"""

from __future__ import annotations

import re

import numpy as np

from hybnn_cli.data import datasets as data
from hybnn_cli.errors import HybnnError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parts(dataset: str) -> list[data.DatasetSpec]:
    """The specs of the parts of `dataset` ("mnist", "mnist+fashion-mnist", "mnist+my-set")."""
    names = dataset.split("+")
    if len(set(names)) != len(names):
        raise HybnnError(f"dataset '{dataset}' names a set twice")
    return [_spec(name, dataset) for name in names]


def _spec(name: str, dataset: str) -> data.DatasetSpec:
    if name in data.DATASETS:
        return data.DATASETS[name]
    if not _NAME.match(name):
        raise HybnnError(f"dataset '{dataset}': '{name}' is not a data set name")
    return data.DatasetSpec(name=name, folder=name, files=data.MNIST.files, md5={}, mirrors=(),
                            class_names=())


def check_pretrain_dataset(dataset: str, data_dir=None) -> None:
    """Refuse, before any work, a name that is neither known nor a folder of IDX files."""
    for spec in parts(dataset):
        if spec.name not in data.DATASETS:
            _find_images(spec, "train", data_dir)


def _find_images(spec: data.DatasetSpec, split: str, data_dir):
    name = spec.files[split][0]
    try:
        return data.find_file(spec, name, data_dir, download=False)
    except HybnnError:
        looked = ", ".join(str(r / spec.folder) for r in data.search_dirs(data_dir))
        raise HybnnError(f"unknown dataset '{spec.name}': not one of {', '.join(data.DATASETS)}, "
                         f"and no {name}[.gz] in {looked}") from None


def load_pretrain_images(dataset: str, split: str, data_dir=None) -> np.ndarray:
    """uint8 images (N, 28, 28) of `split` ("train" or "test") of every part, concatenated."""
    if split not in data.SPLITS:
        raise HybnnError(f"unknown split '{split}'; choose train or test")
    arrays = []
    for spec in parts(dataset):
        if spec.name in data.DATASETS:
            arrays.append(data.load_split(spec.name, split, data_dir)[0])
            continue
        images = data.read_idx(_find_images(spec, split, data_dir), ndim=3)
        if images.shape[1:] != (28, 28):
            raise HybnnError(f"{spec.name} {split}: images are {images.shape[1]}×"
                             f"{images.shape[2]}, the VAE takes 28×28")
        arrays.append(images)
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
