"""LRA Image: CIFAR-10 as 1024-pixel grayscale sequences (S4 pipeline: 45k / 5k / 10k, no augmentation).

Reads the python pickles of ``cifar-10-python.tar.gz`` from ``data_dir/cifar-10-batches-py/``
(``data_batch_1..5``, ``test_batch``; dicts with ``b'data'`` (N, 3072) uint8 and ``b'labels'``). Pixels go to
grayscale as PIL's ``convert('L')`` does (torchvision ``Grayscale``: 0.299 R + 0.587 G + 0.114 B, rounded), then
``(v / 255 - 122.6 / 255) / (61.0 / 255)`` like S4; x is (B, 1024, 1). Validation is a seeded 10% of train
(``random_split`` with seed 42, as S4's ``split_train_val``).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .common import LRADataError, LRADataModule, missing_data_error, seeded_split

TRAIN_FILES = [f'data_batch_{i}' for i in range(1, 6)]
TEST_FILES = ['test_batch']
MEAN, STD = 122.6 / 255.0, 61.0 / 255.0


def read_cifar_batch(path: Path):
    """(grayscale uint8 (N, 32, 32), labels (N,)) of one pickle; errors name the file and the bad row."""
    try:
        with open(path, 'rb') as f:
            batch = pickle.load(f, encoding='bytes')
        data, labels = np.asarray(batch[b'data'], dtype=np.uint8), np.asarray(batch[b'labels'], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise LRADataError(f'{path}: not a CIFAR-10 python batch ({type(e).__name__}: {e})') from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise LRADataError(f'{path}: data {data.shape} / labels {labels.shape}, expected (N, 3072) / (N,)')
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise LRADataError(f'{path}: row {bad[0]} has label {labels[bad[0]]}, outside [0, 10)')
    rgb = data.reshape(-1, 3, 1024).astype(np.int32)
    # PIL's convert('L') (used by torchvision Grayscale): ITU-R 601-2 weights in 16-bit fixed point, rounded
    gray = (rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000) >> 16
    return gray.astype(np.uint8).reshape(-1, 32, 32), labels


class GrayPixels(Dataset):
    def __init__(self, pixels: np.ndarray, labels: np.ndarray):
        self.pixels, self.labels = pixels, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = (torch.from_numpy(self.pixels[i].reshape(-1, 1).astype(np.float32)) / 255.0 - MEAN) / STD
        return x, int(self.labels[i])


class CIFAR10GrayDataModule(LRADataModule):
    """CIFAR-10 grayscale: 10 classes, x (B, 1024, 1) normalized pixels."""

    task = 'image'
    num_classes = 10
    in_chans = 1
    seq_len = 1024

    def __init__(self, data_dir: str, val_split: float = 0.1, split_seed: int = 42, **loader_kw):
        super().__init__(data_dir, **loader_kw)
        self.val_split, self.split_seed = val_split, split_seed

    def _load(self):
        folder = self.data_dir / 'cifar-10-batches-py'
        names = TRAIN_FILES + TEST_FILES
        if not all((folder / n).is_file() for n in names):
            raise missing_data_error('image (CIFAR-10)', folder, names,
                                     'Extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)'
                                     ' into data_dir.')
        train = [read_cifar_batch(folder / n) for n in TRAIN_FILES]
        test_pixels, test_labels = read_cifar_batch(folder / TEST_FILES[0])
        full = GrayPixels(np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train]))
        train_idx, val_idx = seeded_split(len(full), (1 - self.val_split, self.val_split), self.split_seed)
        return Subset(full, train_idx.tolist()), Subset(full, val_idx.tolist()), GrayPixels(test_pixels, test_labels)
