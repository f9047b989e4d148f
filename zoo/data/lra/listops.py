"""ListOps (Nangia & Bowman 2018, LRA variant): generator, released-TSV reader, S4-pipeline tokenization.

The generator follows the distribution of LRA's ``lra_benchmarks/data/listops.py``: a node at depth < 10 is an
operator with probability 0.25 (else a digit 0-9); an operator (MIN, MAX, MED = floor of the median, SM = sum mod
10) takes 2-10 arguments, each generated one level deeper; the root is at depth 1; a tree is kept when
500 < tokens < 2000 (strict), where the operator and its closing ``]`` count one token each. Differences from the
original, all on purpose:
  * reproducible: chunk ``i`` draws from its own ``random.Random(f'{seed}:{i}')``, so the samples are the same for
    any number of processes; duplicates are dropped in chunk order;
  * order-independent split: examples are ranked by a keyed hash of their text, then cut into train/val/test
    (the original cut a Python set in hash order, which changes from run to run);
  * a tree that already exceeds the length limit is abandoned while it grows (same accepted distribution,
    ~2x faster).
Files are written in the released layout (``basic_{train,val,test}.tsv`` with a ``Source\tTarget`` header and the
fully parenthesised form, e.g. ``( ( ( [MAX 2 ) 9 ) ] )``), so generated and released data share one reader.
"""
from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing as mp
import random
import time
from pathlib import Path

import numpy as np

from .common import (LRADataError, pool_context, LRADataModule, RaggedTokens, TokenDataset, Vocab, check_label,
                     collate_tokens, missing_data_error, truncate_tokens)

OPERATORS = ('[MIN', '[MAX', '[MED', '[SM')
CLOSE = ']'
OPERATOR_PROB = 0.25
NUM_CLASSES = 10
# Compact code used while generating: 0-9 digits, 10-13 operators, 14 the closing bracket.
_OP0, _CLOSE = 10, 14
SPLITS = ('train', 'val', 'test')


# ----------------------------------------------------------------------------------------------- generation

def _apply(op: int, args: list[int]) -> int:
    if op == 0:
        return min(args)
    if op == 1:
        return max(args)
    if op == 2:  # floor of the median, as int(np.median(...)) on non-negative ints
        s, n = sorted(args), len(args)
        return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) // 2
    return sum(args) % 10


def _grow(rng: random.Random, depth: int, max_depth: int, max_args: int, out: list, limit: int):
    """Append one random subtree's codes to ``out``; return its value, or None once ``len(out) >= limit``."""
    if depth >= max_depth or rng.random() > OPERATOR_PROB:
        value = rng.randrange(10)
        out.append(value)
        return value
    op = rng.randrange(len(OPERATORS))
    out.append(_OP0 + op)
    args = []
    for _ in range(rng.randint(2, max_args)):
        value = _grow(rng, depth + 1, max_depth, max_args, out, limit)
        if value is None or len(out) >= limit:
            return None
        args.append(value)
    out.append(_CLOSE)
    return _apply(op, args)


def random_example(rng: random.Random, min_length=500, max_length=2000, max_depth=10, max_args=10):
    """Draw trees until one has min_length < tokens < max_length; return (codes as bytes, label)."""
    while True:
        codes = []
        value = _grow(rng, 1, max_depth, max_args, codes, max_length)
        if value is not None and min_length < len(codes) < max_length:
            return bytes(codes), value


def _generate_chunk(job):
    seed, index, size, cfg = job
    rng = random.Random(f'{seed}:{index}')
    found = {}
    while len(found) < size:
        codes, label = random_example(rng, **cfg)
        found.setdefault(codes, label)
    return list(found.items())


def codes_to_source(codes: bytes) -> str:
    """Compact codes -> the released text form ``( ( [OP a ) b ) ] )`` (each pair parenthesised)."""
    stack, result = [], None
    for c in codes:
        if c < _OP0:
            text = str(c)
        elif c < _CLOSE:
            stack.append((OPERATORS[c - _OP0], []))
            continue
        else:
            op, kids = stack.pop()
            text = ('( ' * (len(kids) + 1) + op + ' ' + kids[0] + ' )'
                    + ''.join(' ' + k + ' )' for k in kids[1:]) + ' ] )')
        if stack:
            stack[-1][1].append(text)
        else:
            result = text
    return result


def generation_key(num_train, num_val, num_test, seed, min_length, max_length, max_depth, max_args) -> str:
    return (f'seed{seed}_n{num_train}-{num_val}-{num_test}_len{min_length}-{max_length}'
            f'_depth{max_depth}_args{max_args}')


def generate_listops(out_dir, num_train=96000, num_val=2000, num_test=2000, seed=0, min_length=500,
                     max_length=2000, max_depth=10, max_args=10, processes=None, chunk_size=500,
                     verbose=False) -> Path:
    """Generate (or find cached) ListOps TSVs under ``out_dir/<key>/``; returns that folder."""
    folder = Path(out_dir) / generation_key(num_train, num_val, num_test, seed, min_length, max_length,
                                            max_depth, max_args)
    if (folder / 'meta.json').is_file():
        return folder
    cfg = dict(min_length=min_length, max_length=max_length, max_depth=max_depth, max_args=max_args)
    total = num_train + num_val + num_test
    processes = processes or max(1, mp.cpu_count())
    start = time.time()
    examples, duplicates, next_chunk = {}, 0, 0
    while len(examples) < total:
        missing = total - len(examples)
        jobs = [(seed, next_chunk + i, chunk_size, cfg) for i in range(-(-missing // chunk_size))]
        next_chunk += len(jobs)
        if processes > 1 and len(jobs) > 1:
            with pool_context().Pool(min(processes, len(jobs))) as pool:
                results = pool.imap(_generate_chunk, jobs)  # ordered: dedup stays deterministic
                duplicates += _merge(results, examples, total, verbose)
        else:
            duplicates += _merge(map(_generate_chunk, jobs), examples, total, verbose)
    # Rank by a keyed hash of the text: the split does not depend on generation order or process count.
    salt = str(seed).encode()
    ranked = sorted(examples.items(), key=lambda kv: hashlib.blake2b(kv[0], key=salt, digest_size=16).digest())
    folder.mkdir(parents=True, exist_ok=True)
    bounds = {'train': (0, num_train), 'val': (num_train, num_train + num_val),
              'test': (num_train + num_val, total)}
    for split, (lo, hi) in bounds.items():
        with open(folder / f'basic_{split}.tsv.tmp', 'w', newline='') as f:
            writer = csv.writer(f, delimiter='\t')
            writer.writerow(['Source', 'Target'])
            writer.writerows((codes_to_source(codes), label) for codes, label in ranked[lo:hi])
        (folder / f'basic_{split}.tsv.tmp').rename(folder / f'basic_{split}.tsv')
    meta = dict(cfg, num_train=num_train, num_val=num_val, num_test=num_test, seed=seed,
                duplicates_dropped=duplicates, processes=processes, seconds=round(time.time() - start, 1))
    (folder / 'meta.json').write_text(json.dumps(meta, indent=1))
    return folder


def _merge(results, examples: dict, total: int, verbose: bool) -> int:
    duplicates = 0
    for chunk in results:
        for codes, label in chunk:
            if len(examples) >= total:
                break
            if codes in examples:
                duplicates += 1
            else:
                examples[codes] = label
        if verbose:
            print(f'listops: {len(examples)}/{total}', flush=True)
    return duplicates


# --------------------------------------------------------------------------------------------- reading

def tokenize(source: str) -> list[str]:
    """S4 / LRA tokenization: ``]`` becomes the token ``X``, parentheses vanish, split on whitespace."""
    return source.translate({ord(']'): 'X', ord('('): None, ord(')'): None}).split()


def evaluate_tokens(tokens: list[str]) -> int:
    """Value of a tokenized expression (used to check labels); raises ValueError when malformed."""
    stack = [[]]
    ops = []
    for tok in tokens:
        if tok in ('X', CLOSE):
            args = stack.pop()
            if not ops or len(args) < 1:
                raise ValueError('unbalanced ]')
            stack[-1].append(_apply(OPERATORS.index(ops.pop()), args))
        elif tok in OPERATORS:
            ops.append(tok)
            stack.append([])
        elif len(tok) == 1 and tok.isdigit():
            stack[-1].append(int(tok))
        else:
            raise ValueError(f'unknown token {tok!r}')
    if ops or len(stack) != 1 or len(stack[0]) != 1:
        raise ValueError('unbalanced expression')
    return stack[0][0]


def read_listops_tsv(path: Path, check_labels: bool = True):
    """Rows of a ``Source\\tTarget`` TSV as (tokens, label); errors name the file and the 1-based line."""
    rows = []
    with open(path, newline='') as f:
        reader = csv.reader(f, delimiter='\t')
        header = next(reader, None)
        if header != ['Source', 'Target']:
            raise LRADataError(f'{path}:1: expected header Source<TAB>Target, found {header!r}')
        for line, row in enumerate(reader, start=2):
            where = f'{path}:{line}'
            if len(row) != 2:
                raise LRADataError(f'{where}: expected 2 tab-separated fields, found {len(row)}')
            tokens = tokenize(row[0])
            label = check_label(row[1], NUM_CLASSES, where)
            if check_labels:
                try:
                    value = evaluate_tokens(tokens)
                except ValueError as e:
                    raise LRADataError(f'{where}: malformed expression ({e})') from None
                if value != label:
                    raise LRADataError(f'{where}: label {label} but the expression evaluates to {value}')
            rows.append((tokens, label))
    return rows


class ListOpsDataModule(LRADataModule):
    """ListOps: 10 classes, tokens (B, L) with lengths; ``seq_len`` = l_max (2048 in the S4 pipeline).

    Data come from ``data_dir/basic_{train,val,test}.tsv`` (the released ``listops-1000`` folder) or, with
    ``generate=True``, from our generator, cached under ``data_dir/generated/<key>/``. ``overlength`` decides
    what happens to a sequence longer than l_max - 1 (+EOS): 'error' (default), 'truncate' (S4) or 'skip'.
    """

    task = 'listops'
    num_classes = NUM_CLASSES
    collate_fn = staticmethod(collate_tokens)

    def __init__(self, data_dir: str, generate: bool = False, num_train: int = 96000, num_val: int = 2000,
                 num_test: int = 2000, seed: int = 0, min_length: int = 500, max_length: int = 2000,
                 max_depth: int = 10, max_args: int = 10, processes: int | None = None, l_max: int = 2048,
                 append_eos: bool = True, overlength: str = 'error', check_labels: bool = True, **loader_kw):
        super().__init__(data_dir, **loader_kw)
        if overlength not in ('error', 'truncate', 'skip'):
            raise ValueError(f"overlength must be 'error', 'truncate' or 'skip', got {overlength!r}")
        self.generate = generate
        self.gen_cfg = dict(num_train=num_train, num_val=num_val, num_test=num_test, seed=seed,
                            min_length=min_length, max_length=max_length, max_depth=max_depth, max_args=max_args)
        self.processes = processes
        self.seq_len = l_max
        self.append_eos = append_eos
        self.overlength = overlength
        self.check_labels = check_labels
        self.vocab = None
        self.skipped = {}

    @property
    def vocab_size(self) -> int:
        self.setup()
        return len(self.vocab)

    def tsv_dir(self) -> Path:
        if self.generate:
            return generate_listops(self.data_dir / 'generated', processes=self.processes, **self.gen_cfg)
        return self.data_dir

    def prepare_data(self) -> None:
        self.tsv_dir()

    def _load(self):
        folder = self.tsv_dir()
        paths = {s: folder / f'basic_{s}.tsv' for s in SPLITS}
        if not all(p.is_file() for p in paths.values()):
            raise missing_data_error(
                'listops', folder, [p.name for p in paths.values()],
                'Extract lra_release.gz (https://github.com/google-research/long-range-arena) and point data_dir '
                'at lra_release/listops-1000, or set generate=true to build the data offline.')
        cache = folder / f'tokens_lmax{self.seq_len}_eos{int(self.append_eos)}_{self.overlength}.npz'
        if cache.is_file():
            return self._from_cache(cache)
        rows = {s: read_listops_tsv(p, self.check_labels) for s, p in paths.items()}
        self.vocab = Vocab.build(tokens for tokens, _ in rows['train'])
        arrays, splits = {}, []
        max_tokens = self.seq_len - int(self.append_eos)
        for split in SPLITS:
            seqs, labels, skipped = [], [], 0
            for line, (tokens, label) in enumerate(rows[split], start=2):
                tokens = truncate_tokens(tokens, max_tokens, self.overlength, f'{paths[split]}:{line}')
                if tokens is None:
                    skipped += 1
                    continue
                seqs.append(self.vocab.encode(tokens, eos=self.append_eos))
                labels.append(label)
            ragged = RaggedTokens.from_list(seqs)
            arrays.update({f'{split}_flat': ragged.flat, f'{split}_offsets': ragged.offsets,
                           f'{split}_labels': np.asarray(labels, np.int64)})
            self.skipped[split] = skipped
            splits.append(TokenDataset([ragged], labels))
        np.savez(cache.with_suffix('.tmp.npz'), itos=np.array(self.vocab.itos), **arrays,
                 skipped=np.array([self.skipped[s] for s in SPLITS]))
        cache.with_suffix('.tmp.npz').rename(cache)
        return tuple(splits)

    def _from_cache(self, cache: Path):
        z = np.load(cache)
        self.vocab = Vocab([str(t) for t in z['itos']])
        self.skipped = dict(zip(SPLITS, z['skipped'].tolist()))
        return tuple(TokenDataset([RaggedTokens(z[f'{s}_flat'], z[f'{s}_offsets'])], z[f'{s}_labels'])
                     for s in SPLITS)

    def extra_stats(self) -> dict:
        lengths = self.data_train.tokens[0].lengths()
        return {'skipped_overlength': self.skipped, 'vocab': self.vocab.itos,
                'train_length': {'mean': float(lengths.mean()), 'min': int(lengths.min()),
                                 'max': int(lengths.max())},
                'source': str(self.tsv_dir())}
