"""LRA Text: IMDB movie-review sentiment at byte (character) level, L = 4096 (S4 pipeline).

Characters are tokens; the vocabulary keeps characters seen at least ``min_freq`` = 15 times in the 25k train reviews
(~135 with specials, as in S4); each review is cut to l_max - 1 characters and gets an EOS. LRA and S4 validate on
the 25k test reviews; here validation is a seeded ``val_split`` (10%) of the train reviews, so the test reviews, and
the test metrics, stay out of checkpoint selection.

Accepted layouts under ``data_dir`` (first match wins):
  * Hugging Face ``imdb`` parquet: ``plain_text/{train,test}-*.parquet`` or ``{train,test}-*.parquet``
    (columns ``text``, ``label``);
  * Hugging Face ``datasets`` arrow shards (``save_to_disk`` or cache): ``**/imdb-{train,test}*.arrow`` or
    ``{train,test}/data-*.arrow``;
  * the original ``aclImdb/{train,test}/{neg,pos}/*.txt`` tree (label 0 = neg, 1 = pos).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from .common import (LRADataError, LRADataModule, RaggedTokens, TokenDataset, Vocab, check_label, collate_tokens,
                     missing_data_error, seeded_split, truncate_tokens)

# One of these layouts (paths relative to data_dir)
EXPECTED = ['plain_text/{train,test}-00000-of-00001.parquet  (Hugging Face imdb parquet)',
            '{train,test}/data-*.arrow  (Hugging Face datasets save_to_disk)',
            'aclImdb/{train,test}/{neg,pos}/*.txt  (aclImdb_v1.tar.gz)']


def _find(root: Path, patterns) -> list[Path]:
    for pattern in patterns:
        found = sorted(root.glob(pattern))
        if found:
            return found
    return []


def read_table_files(files: list[Path], columns: tuple[str, ...]):
    """Rows of parquet / arrow files as dict of lists (pyarrow)."""
    try:
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise LRADataError('reading parquet/arrow files needs pyarrow (pip install pyarrow)') from None
    out = {c: [] for c in columns}
    for f in files:
        try:
            if f.suffix == '.parquet':
                table = pyarrow.parquet.read_table(f, columns=list(columns))
            else:
                with open(f, 'rb') as handle:
                    try:
                        table = pyarrow.ipc.open_stream(handle).read_all()
                    except pyarrow.ArrowInvalid:
                        handle.seek(0)
                        table = pyarrow.ipc.open_file(handle).read_all()
        except Exception as e:  # pyarrow raises several types for damaged files
            raise LRADataError(f'{f}: cannot read table ({type(e).__name__}: {e})') from None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise LRADataError(f'{f}: missing columns {missing}; found {table.column_names}')
        for c in columns:
            out[c].extend(table.column(c).to_pylist())
    return out


def read_imdb_split(root: Path, split: str):
    """(texts, labels, source names) of one split from whichever supported layout is present."""
    tables = _find(root, [f'plain_text/{split}-*.parquet', f'{split}-*.parquet', f'**/imdb/**/{split}-*.parquet'])
    if not tables:
        tables = _find(root, [f'{split}/data-*.arrow', f'**/imdb-{split}*.arrow'])
    if tables:
        cols = read_table_files(tables, ('text', 'label'))
        where = [f'{tables[0]} row {i}' if len(tables) == 1 else f'{root} {split} row {i}'
                 for i in range(len(cols['text']))]
        return cols['text'], [check_label(str(v), 2, w) for v, w in zip(cols['label'], where)], where
    tree = root / 'aclImdb' / split
    if (tree / 'neg').is_dir() and (tree / 'pos').is_dir():
        texts, labels, where = [], [], []
        for label, sub in enumerate(('neg', 'pos')):
            for f in sorted((tree / sub).glob('*.txt')):
                try:
                    texts.append(f.read_text(encoding='utf-8'))
                except UnicodeDecodeError as e:
                    raise LRADataError(f'{f}: not UTF-8 text ({e})') from None
                labels.append(label)
                where.append(str(f))
        return texts, labels, where
    raise missing_data_error('text (IMDB)', root, EXPECTED, 'Any one of these layouts will do: download the Hugging '
                             'Face "imdb" dataset files (or aclImdb_v1.tar.gz) and point data_dir at them.')


class IMDBDataModule(LRADataModule):
    """IMDB bytes: 2 classes, tokens (B, L <= 4096) with lengths; val is a seeded `val_split` of the train reviews
    (`split_seed`), test the 25k test reviews."""

    task = 'text'
    num_classes = 2
    collate_fn = staticmethod(collate_tokens)

    def __init__(self, data_dir: str, l_max: int = 4096, min_freq: int = 15, append_eos: bool = True,
                 overlength: str = 'truncate', val_split: float = 0.1, split_seed: int = 42, **loader_kw):
        super().__init__(data_dir, **loader_kw)
        if not 0 < val_split < 1:
            raise ValueError(f"IMDBDataModule: val_split (the fraction of train reviews held out for validation) must "
                             f"be in (0, 1), got {val_split}")
        self.seq_len, self.min_freq, self.append_eos, self.overlength = l_max, min_freq, append_eos, overlength
        self.val_split, self.split_seed = val_split, split_seed
        self.vocab, self.overlong = None, {}

    @property
    def vocab_size(self) -> int:
        self.setup()
        return len(self.vocab)

    def _load(self):
        max_tokens = self.seq_len - int(self.append_eos)
        tokenized = {}
        for split in ('train', 'test'):
            texts, labels, where = read_imdb_split(self.data_dir, split)
            self.overlong[split] = sum(len(t) > max_tokens for t in texts)
            rows = [(truncate_tokens(list(t), max_tokens, self.overlength, w), y)
                    for t, y, w in zip(texts, labels, where)]
            tokenized[split] = [(tokens, y) for tokens, y in rows if tokens is not None]
        # vocabulary from the (already cut) train tokens, as the S4 pipeline builds it
        self.vocab = Vocab.build((tokens for tokens, _ in tokenized['train']), min_freq=self.min_freq)
        splits = {split: TokenDataset([RaggedTokens.from_list([self.vocab.encode(t, eos=self.append_eos)
                                                               for t, _ in rows])],
                                      np.asarray([y for _, y in rows], dtype=np.int64))
                  for split, rows in tokenized.items()}
        train_idx, val_idx = seeded_split(len(splits['train']), (1 - self.val_split, self.val_split), self.split_seed)
        if len(val_idx) == 0 or len(train_idx) == 0:
            raise LRADataError(f"{self.data_dir}: val_split={self.val_split} of {len(splits['train'])} train reviews "
                               f"leaves an empty train or validation split")
        train = splits['train']
        return Subset(train, np.sort(train_idx)), Subset(train, np.sort(val_idx)), splits['test']

    def extra_stats(self) -> dict:
        return {'overlength': self.overlength, 'overlong_count': self.overlong, 'val_split': self.val_split}
