"""Pieces shared by the Long Range Arena DataModules: vocabulary, token datasets, collation, the base module.

Batch contract (what `zoo.lit` and the sequence models consume):
  * pixel tasks (image, pathfinder, pathx): ``(x, y)`` with x (B, L, 1) float, y (B,) int64;
  * token tasks (listops, text):            ``(x, y, {'lengths': lengths})`` with x (B, L) int64 padded with
    ``<pad>`` = 0, lengths (B,) int64 counting real tokens (EOS included);
  * retrieval:                              ``(x, y, {'lengths': lengths})`` with x (B, 2, L), lengths (B, 2).
"""
from __future__ import annotations

import json
import multiprocessing as mp
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

PAD, UNK, EOS = '<pad>', '<unk>', '<eos>'


class LRADataError(ValueError):
    """Bad or missing input data; the message names the file (and row) to look at."""


def missing_data_error(task: str, root: Path, expected: Sequence[str], how: str) -> LRADataError:
    listing = '\n'.join(f'  {root / name}' for name in expected)
    return LRADataError(f'{task}: data not found. Expected these files:\n{listing}\n{how}')


class Vocab:
    """Token -> id map built from training tokens, ordered like torchtext's ``build_vocab_from_iterator``:
    specials first, then tokens by descending count, ties alphabetical. Unknown tokens map to ``<unk>``."""

    def __init__(self, itos: Sequence[str]):
        self.itos = list(itos)
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError('vocabulary has duplicate tokens')
        self.unk_id = self.stoi[UNK]

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_freq: int = 1, specials=(PAD, UNK, EOS)) -> 'Vocab':
        counts = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        ordered = sorted(((t, c) for t, c in counts.items() if c >= min_freq and t not in specials),
                         key=lambda tc: (-tc[1], tc[0]))
        return cls(list(specials) + [t for t, _ in ordered])

    def __len__(self) -> int:
        return len(self.itos)

    def __getitem__(self, token: str) -> int:
        return self.stoi.get(token, self.unk_id)

    def encode(self, tokens: Iterable[str], eos: bool = True) -> np.ndarray:
        ids = [self.stoi.get(t, self.unk_id) for t in tokens]
        if eos:
            ids.append(self.stoi[EOS])
        return np.asarray(ids, dtype=np.int16)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.itos))

    @classmethod
    def load(cls, path: Path) -> 'Vocab':
        return cls(json.loads(Path(path).read_text()))


class RaggedTokens:
    """Variable-length int16 sequences stored as one flat array plus offsets (cheap to cache and to index)."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_list(cls, seqs: Sequence[np.ndarray]) -> 'RaggedTokens':
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(seqs).astype(np.int16) if len(seqs) else np.zeros(0, np.int16)
        return cls(flat, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def truncate_tokens(tokens: list, max_tokens: int, policy: str, where: str) -> list | None:
    """Apply the over-length policy: 'truncate' (the S4 pipeline), 'skip' (caller counts) or 'error'."""
    if len(tokens) <= max_tokens:
        return tokens
    if policy == 'truncate':
        return tokens[:max_tokens]
    if policy == 'skip':
        return None
    raise LRADataError(f'{where}: {len(tokens)} tokens (+EOS) exceed l_max; '
                       f"set overlength='truncate' or 'skip', or raise l_max")


def check_label(value: str, num_classes: int, where: str) -> int:
    """Parse a label ('3', '1.0') and insist it is an integer class id in range."""
    try:
        as_float = float(value)
    except ValueError:
        raise LRADataError(f'{where}: label {value!r} is not a number') from None
    label = int(as_float)
    if label != as_float or not 0 <= label < num_classes:
        raise LRADataError(f'{where}: label {value!r} is not a class id in [0, {num_classes})')
    return label


class TokenDataset(Dataset):
    """One sequence (or a pair, retrieval) of token ids per example, with an int label."""

    def __init__(self, tokens: Sequence[RaggedTokens], labels: np.ndarray):
        self.tokens, self.labels = list(tokens), np.asarray(labels, dtype=np.int64)
        if any(len(t) != len(self.labels) for t in self.tokens):
            raise ValueError('token and label counts differ')

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        seqs = [torch.from_numpy(t[i].astype(np.int64)) for t in self.tokens]
        return (seqs[0] if len(seqs) == 1 else seqs), int(self.labels[i])


def pad_stack(seqs: Sequence[torch.Tensor], length: int, pad_id: int = 0) -> torch.Tensor:
    out = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, :len(seq)] = seq
    return out


def collate_tokens(batch):
    """[(seq (L_i,), y)] -> x (B, max L_i), y (B,), {'lengths': (B,)}."""
    seqs, ys = zip(*batch)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    return pad_stack(seqs, int(lengths.max())), torch.tensor(ys, dtype=torch.long), {'lengths': lengths}


def collate_pairs(batch):
    """[([doc1, doc2], y)] -> x (B, 2, L), y (B,), {'lengths': (B, 2)}; both documents padded to one L."""
    pairs, ys = zip(*batch)
    lengths = torch.tensor([[len(a), len(b)] for a, b in pairs], dtype=torch.long)
    length = int(lengths.max())
    x = torch.stack([pad_stack(pair, length) for pair in pairs])
    return x, torch.tensor(ys, dtype=torch.long), {'lengths': lengths}


class LRADataModule(pl.LightningDataModule):
    """Base: holds the three splits, builds loaders, reports sizes and label balance.

    Subclasses set ``num_classes``, ``seq_len`` and either ``vocab_size`` (tokens) or ``in_chans`` (pixels) and
    implement ``_load() -> (train, val, test)``.
    """

    task = 'lra'
    collate_fn = None

    def __init__(self, data_dir: str, batch_size: int = 32, eval_batch_size: int | None = None,
                 num_workers: int = 0, pin_memory: bool = False):
        super().__init__()
        self.data_dir = Path(data_dir).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_train = self.data_val = self.data_test = None

    def _load(self):
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.data_train is None:
            self.data_train, self.data_val, self.data_test = self._load()

    def _loader(self, dataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          pin_memory=self.pin_memory, collate_fn=self.collate_fn,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.data_train, True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.data_val, False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.data_test, False, self.eval_batch_size)

    def split_labels(self, split: str) -> np.ndarray:
        """Labels of one split as an int array (without decoding inputs)."""
        dataset = {'train': self.data_train, 'val': self.data_val, 'test': self.data_test}[split]
        return labels_of(dataset)

    def describe(self) -> dict:
        """Split sizes, label balance, shapes the model config reads; also used by ``python -m zoo.data.lra``."""
        self.setup()
        info = {'task': self.task, 'num_classes': self.num_classes, 'seq_len': self.seq_len}
        for attr in ('vocab_size', 'in_chans'):
            if getattr(self, attr, None) is not None:
                info[attr] = getattr(self, attr)
        for split in ('train', 'val', 'test'):
            labels = self.split_labels(split)
            counts = np.bincount(labels, minlength=self.num_classes)
            info[split] = {'size': int(len(labels)),
                           'label_counts': counts.tolist(),
                           'majority_acc': float(counts.max() / max(len(labels), 1))}
        info.update(self.extra_stats())
        return info

    def extra_stats(self) -> dict:
        return {}


def labels_of(dataset) -> np.ndarray:
    if isinstance(dataset, torch.utils.data.Subset):
        return labels_of(dataset.dataset)[np.asarray(dataset.indices, dtype=np.int64)]
    return np.asarray(dataset.labels, dtype=np.int64)


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index split as ``torch.utils.data.random_split`` does it (randperm with a seeded generator), so a split
    of the same ordered sample list matches the S4 pipeline's. The last split takes the rounding remainder
    of the first in S4's convention: val = int(f_val n), test = int(f_test n), train = the rest."""
    sizes = [int(f * n) for f in fractions[1:]]
    sizes = [n - sum(sizes)] + sizes
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    bounds = np.cumsum([0] + sizes)
    return [perm[bounds[i]:bounds[i + 1]] for i in range(len(sizes))]


def pool_context():
    """Process pool context for the generators: fork where available, so workers do not re-import the package
    (importing timm and Lightning costs seconds per worker)."""
    return mp.get_context('fork' if 'fork' in mp.get_all_start_methods() else 'spawn')
