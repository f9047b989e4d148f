"""LRA Retrieval: do two ACL Anthology Network papers cite each other? Byte level, 4000 tokens per document.

Reads the released ``new_aan_pairs.{train,eval,test}.tsv`` (LRA's ``tsv_data`` folder): no header, five
tab-separated fields ``label, id1, id2, text1, text2`` per line, labels ``0``/``1`` (also ``0.0``/``1.0``).
Tokenization as in the S4 pipeline: characters, vocabulary from both train documents (no minimum count), each
document cut to l_max - 1 characters plus EOS. Batches: x (B, 2, L), lengths (B, 2).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (LRADataError, LRADataModule, RaggedTokens, TokenDataset, Vocab, check_label, collate_pairs,
                     missing_data_error, truncate_tokens)

FILES = {'train': 'new_aan_pairs.train.tsv', 'val': 'new_aan_pairs.eval.tsv', 'test': 'new_aan_pairs.test.tsv'}


def read_aan_tsv(path: Path, bad_rows: str = 'error'):
    """(text1, text2, label) rows; a malformed row raises naming file and line, or is skipped and counted."""
    rows, skipped = [], 0
    with open(path, encoding='utf-8', newline='\n') as f:
        for line, raw in enumerate(f, start=1):
            fields = raw.rstrip('\r\n').split('\t')
            where = f'{path}:{line}'
            try:
                if len(fields) != 5:
                    raise LRADataError(f'{where}: expected 5 tab-separated fields '
                                       f'(label, id1, id2, text1, text2), found {len(fields)}')
                rows.append((fields[3], fields[4], check_label(fields[0], 2, where)))
            except LRADataError:
                if bad_rows != 'skip':
                    raise
                skipped += 1
    return rows, skipped


class AANDataModule(LRADataModule):
    """AAN pairs: 2 classes, x (B, 2, L <= 4000) token ids, lengths (B, 2)."""

    task = 'retrieval'
    num_classes = 2
    collate_fn = staticmethod(collate_pairs)

    def __init__(self, data_dir: str, l_max: int = 4000, append_eos: bool = True, overlength: str = 'truncate',
                 bad_rows: str = 'error', **loader_kw):
        super().__init__(data_dir, **loader_kw)
        if bad_rows not in ('error', 'skip'):
            raise ValueError(f"bad_rows must be 'error' or 'skip', got {bad_rows!r}")
        self.seq_len, self.append_eos, self.overlength, self.bad_rows = l_max, append_eos, overlength, bad_rows
        self.vocab, self.skipped, self.overlong = None, {}, {}

    @property
    def vocab_size(self) -> int:
        self.setup()
        return len(self.vocab)

    def _load(self):
        paths = {s: self.data_dir / name for s, name in FILES.items()}
        if not all(p.is_file() for p in paths.values()):
            raise missing_data_error('retrieval (AAN)', self.data_dir, list(FILES.values()),
                                     'Extract lra_release.gz and point data_dir at lra_release/tsv_data.')
        rows = {}
        for split, path in paths.items():
            rows[split], self.skipped[split] = read_aan_tsv(path, self.bad_rows)
        max_tokens = self.seq_len - int(self.append_eos)
        tokenized = {}
        for split in FILES:
            self.overlong[split] = sum((len(a) > max_tokens) + (len(b) > max_tokens) for a, b, _ in rows[split])
            kept = []
            for line, (a, b, label) in enumerate(rows[split], start=1):
                where = f'{paths[split]}:{line}'
                pair = [truncate_tokens(list(t), max_tokens, self.overlength, where) for t in (a, b)]
                if pair[0] is None or pair[1] is None:
                    self.skipped[split] += 1
                else:
                    kept.append((pair, label))
            tokenized[split] = kept
        # vocabulary from both (already cut) train documents, as the S4 pipeline builds it
        self.vocab = Vocab.build(doc for pair, _ in tokenized['train'] for doc in pair)
        return tuple(
            TokenDataset([RaggedTokens.from_list([self.vocab.encode(pair[k], eos=self.append_eos)
                                                  for pair, _ in tokenized[split]]) for k in range(2)],
                         np.asarray([y for _, y in tokenized[split]], dtype=np.int64))
            for split in FILES)

    def extra_stats(self) -> dict:
        return {'skipped_rows': self.skipped, 'overlong_documents': self.overlong, 'overlength': self.overlength}

