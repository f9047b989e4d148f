"""ImageNet-1K or any ImageFolder tree (`<root>/<split>/<class>/<image>`), with timm's datasets and transforms.

Input size, crop_pct, interpolation, mean and std are resolved from the model's pretrained cfg
(`timm.data.resolve_data_config`), as timm's train.py and validate.py do.
"""
import os
from typing import Optional

import pytorch_lightning as pl
import timm
from timm.data import create_dataset, create_transform, resolve_data_config
from torch.utils.data import DataLoader

__all__ = ['ImageFolderDataModule']

LAYOUT = "<root>/{split}/<class name>/<image file>"


def _check_split_dir(root: str, split: str) -> str:
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"image folder split {split!r} not found at {path}; expected the layout {LAYOUT.format(split=split)}")
    classes = [d for d in os.scandir(path) if d.is_dir()]
    if not classes:
        raise FileNotFoundError(
            f"{path} has no class sub-directories; expected the layout {LAYOUT.format(split=split)}")
    return path


class ImageFolderDataModule(pl.LightningDataModule):
    """Train / val (/ test) splits of an ImageFolder tree.

    Val selects checkpoints, so it is not a test split: without `test_split` (ImageNet has no labelled test set)
    there is none, `has_test_split` is False and `test_dataloader` refuses; training then reports val metrics only.

    Args:
        root: the dataset root holding one directory per split.
        test_split: a split directory disjoint from train and val, for held-out test metrics (optional).
        model_name: timm model whose pretrained cfg gives the data config (input size, crop, mean/std...).
        img_size: override of the cfg's input size (square).
        aug: timm `create_transform` training arguments (auto_augment, re_prob, re_mode, re_count, hflip,
            color_jitter, scale, ratio...).
    """

    def __init__(
            self,
            root: str,
            model_name: Optional[str] = None,
            train_split: str = 'train',
            val_split: str = 'val',
            test_split: Optional[str] = None,
            img_size: Optional[int] = None,
            batch_size: int = 128,
            num_workers: int = 8,
            aug: Optional[dict] = None,
    ):
        super().__init__()
        if test_split is not None and test_split in (train_split, val_split):
            raise ValueError(f"ImageFolderDataModule: test_split {test_split!r} must be a directory other than "
                             f"train_split {train_split!r} and val_split {val_split!r} (val selects checkpoints)")
        self.save_hyperparameters()
        self.has_test_split = test_split is not None
        self.root = os.path.expanduser(str(root))
        self.batch_size, self.num_workers = batch_size, num_workers
        self.in_chans = 3
        self.num_classes = None
        self.train_set = self.val_set = self.test_set = None

    def data_config(self) -> dict:
        pretrained_cfg = timm.get_pretrained_cfg(self.hparams.model_name).to_dict() if self.hparams.model_name else {}
        args = {'input_size': (3, self.hparams.img_size, self.hparams.img_size)} if self.hparams.img_size else {}
        return resolve_data_config(args, pretrained_cfg=pretrained_cfg)

    def setup(self, stage=None):
        if self.val_set is not None:
            return
        if not os.path.isdir(self.root):
            raise FileNotFoundError(
                f"image folder root {self.root} does not exist; expected the layout {LAYOUT.format(split='train')} "
                f"and {LAYOUT.format(split='val')} (set data.root)")
        cfg = self.data_config()
        eval_tf = create_transform(**cfg, is_training=False)
        self.val_set = create_dataset('', root=_check_split_dir(self.root, self.hparams.val_split), transform=eval_tf)
        if stage in (None, 'fit'):
            train_tf = create_transform(**cfg, is_training=True, **(self.hparams.aug or {}))
            train_dir = _check_split_dir(self.root, self.hparams.train_split)
            self.train_set = create_dataset('', root=train_dir, transform=train_tf)
            train_classes = self.train_set.reader.class_to_idx
            if train_classes != self.val_set.reader.class_to_idx:
                raise ValueError(f"{self.root}: the train and val splits have different class directories")
        if self.hparams.test_split:
            test_dir = _check_split_dir(self.root, self.hparams.test_split)
            self.test_set = create_dataset('', root=test_dir, transform=eval_tf)
        self.num_classes = len(self.val_set.reader.class_to_idx)

    def _loader(self, dataset, train=False):
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train, drop_last=train,
                          num_workers=self.num_workers, pin_memory=True, persistent_workers=self.num_workers > 0)

    def train_dataloader(self):
        return self._loader(self.train_set, train=True)

    def val_dataloader(self):
        return self._loader(self.val_set)

    def test_dataloader(self):
        if not self.has_test_split:
            raise ValueError(f"ImageFolderDataModule: no test split under {self.root} (data.test_split is not set); "
                             f"the val split selects checkpoints, so it is not reported as test. Set data.test_split "
                             f"to a directory laid out as {LAYOUT.format(split='<test_split>')}, or evaluate with "
                             f"split=val")
        if self.test_set is None:
            self.setup('test')
        return self._loader(self.test_set)
