"""ListOps: generator distribution and reproducibility, released-TSV reader, S4 tokenization, batches, bad input."""
import csv
import json
import random

import numpy as np
import pytest
import torch

from zoo.data.lra import ListOpsDataModule, LRADataError, generate_listops
from zoo.data.lra.__main__ import main as lra_cli
from zoo.data.lra.listops import codes_to_source, evaluate_tokens, random_example, tokenize

SMALL = dict(num_train=40, num_val=5, num_test=5, seed=3)


def _write_tsv(path, rows, header=('Source', 'Target')):
    with open(path, 'w', newline='') as f:
        writer = csv.writer(f, delimiter='\t')
        writer.writerow(header)
        writer.writerows(rows)


def test_released_text_form_and_label():
    # MAX(2, 9, 4) in LRA's fully parenthesised form; `]` is its own token, parentheses vanish
    source = '( ( ( ( [MAX 2 ) 9 ) 4 ) ] )'
    assert tokenize(source) == ['[MAX', '2', '9', '4', 'X']
    assert evaluate_tokens(tokenize(source)) == 9
    codes = bytes([11, 2, 9, 4, 14])
    assert codes_to_source(codes) == source
    # MED floors a .5 median; SM is the sum mod 10
    assert evaluate_tokens(['[MED', '1', '4', 'X']) == 2
    assert evaluate_tokens(['[SM', '7', '8', '[MIN', '3', '5', 'X', 'X']) == 8


def test_generator_distribution():
    rng = random.Random(0)
    lengths, labels = [], []
    for _ in range(60):
        codes, label = random_example(rng)
        tokens = tokenize(codes_to_source(codes))
        assert len(tokens) == len(codes)                  # one token per operator / digit / `]`
        assert evaluate_tokens(tokens) == label
        assert tokens[0] in ('[MIN', '[MAX', '[MED', '[SM')
        lengths.append(len(tokens))
        labels.append(label)
    assert min(lengths) > 500 and max(lengths) < 2000   # strict bounds, as LRA
    assert 700 < np.mean(lengths) < 1400                 # LRA mean is ~1030
    assert set(labels) <= set(range(10))


def test_generation_is_reproducible_and_split_is_order_independent(tmp_path):
    one = generate_listops(tmp_path / 'a', processes=1, chunk_size=7, **SMALL)
    two = generate_listops(tmp_path / 'b', processes=2, chunk_size=7, **SMALL)
    for split in ('train', 'val', 'test'):
        assert (one / f'basic_{split}.tsv').read_bytes() == (two / f'basic_{split}.tsv').read_bytes()
    rows = {s: (one / f'basic_{s}.tsv').read_text().splitlines()[1:] for s in ('train', 'val', 'test')}
    assert [len(rows[s]) for s in ('train', 'val', 'test')] == [40, 5, 5]
    everything = rows['train'] + rows['val'] + rows['test']
    assert len(set(everything)) == 50                     # deduplicated, no leak across splits
    meta = json.loads((one / 'meta.json').read_text())
    assert meta['num_train'] == 40 and meta['seed'] == 3
    other = generate_listops(tmp_path / 'c', processes=1, chunk_size=7, **{**SMALL, 'seed': 4})
    assert (other / 'basic_train.tsv').read_bytes() != (one / 'basic_train.tsv').read_bytes()


def test_datamodule_batches_and_describe(tmp_path, capsys):
    dm = ListOpsDataModule(str(tmp_path), generate=True, processes=1, batch_size=4, **SMALL)
    dm.prepare_data()
    dm.setup()
    assert dm.num_classes == 10 and dm.seq_len == 2048
    assert dm.vocab_size == 18                            # <pad> <unk> <eos> + 10 digits + 4 operators + X
    assert dm.vocab.itos[:3] == ['<pad>', '<unk>', '<eos>']
    x, y, extras = next(iter(dm.train_dataloader()))
    lengths = extras['lengths']
    assert x.dtype == torch.long and x.shape == (4, int(lengths.max()))
    assert y.shape == (4,) and lengths.shape == (4,)
    for row, n in zip(x, lengths):
        assert row[n - 1] == dm.vocab['<eos>'] and (row[n:] == 0).all() and (row[:n - 1] > 2).all()
    info = dm.describe()
    assert [info[s]['size'] for s in ('train', 'val', 'test')] == [40, 5, 5]
    assert sum(info['train']['label_counts']) == 40
    assert 0 < info['train']['majority_acc'] <= 1
    # the cached tokens give the same data on a second setup
    again = ListOpsDataModule(str(tmp_path), generate=True, processes=1, batch_size=4, **SMALL)
    again.setup()
    assert np.array_equal(again.data_train.tokens[0].flat, dm.data_train.tokens[0].flat)
    lra_cli(['describe', 'listops', f'data_dir={tmp_path}', 'generate=true', 'num_train=40', 'num_val=5',
             'num_test=5', 'seed=3'])
    assert json.loads(capsys.readouterr().out)['train']['size'] == 40


def _released_dir(tmp_path, train_rows, test_rows=None):
    good = [('( ( ( [MAX 2 ) 9 ) ] )', 9), ('( ( ( [MIN 2 ) 9 ) ] )', 2), ('( ( ( [SM 3 ) 9 ) ] )', 2)]
    _write_tsv(tmp_path / 'basic_train.tsv', train_rows)
    _write_tsv(tmp_path / 'basic_val.tsv', good)
    _write_tsv(tmp_path / 'basic_test.tsv', test_rows or good)
    return str(tmp_path)


def test_released_tsv_reader(tmp_path):
    rows = [('( ( ( [MAX 2 ) 9 ) ] )', 9), ('( ( ( ( [MED 1 ) 4 ) 8 ) ] )', 4)]
    dm = ListOpsDataModule(_released_dir(tmp_path, rows), batch_size=2)
    dm.setup()
    assert len(dm.data_train) == 2 and dm.split_labels('train').tolist() == [9, 4]
    x, y, extras = next(iter(dm.train_dataloader()))
    assert extras['lengths'].sort().values.tolist() == [5, 6]   # tokens + EOS


@pytest.mark.parametrize('row, message', [
    (('( ( ( [MAX 2 ) 9 ) ] )', 12), 'not a class id'),
    (('( ( ( [MAX 2 ) 9 ) ] )', 'nine'), 'not a number'),
    (('( ( ( [MAX 2 ) 9 ) ] )', 3), 'evaluates to 9'),
    (('( ( ( [MAX 2 ) 9 ) ] )',), 'expected 2 tab-separated fields'),
    (('( ( ( [POW 2 ) 9 ) ] )', 3), 'malformed expression'),
])
def test_bad_rows_name_file_and_line(tmp_path, row, message):
    dm = ListOpsDataModule(_released_dir(tmp_path, [('( ( ( [MAX 2 ) 9 ) ] )', 9), row]))
    with pytest.raises(LRADataError, match=message) as err:
        dm.setup()
    assert 'basic_train.tsv:3' in str(err.value)


def test_overlength_policies(tmp_path):
    long_row = ('( ( ( ( ( [SM 1 ) 2 ) 3 ) 4 ) ] )', 0)
    rows = [('( ( ( [MAX 2 ) 9 ) ] )', 9), long_row]
    with pytest.raises(LRADataError, match=r'basic_train.tsv:3: 6 tokens'):
        ListOpsDataModule(_released_dir(tmp_path, rows), l_max=6).setup()
    skipped = ListOpsDataModule(_released_dir(tmp_path, rows), l_max=6, overlength='skip')
    assert skipped.describe()['skipped_overlength']['train'] == 1 and len(skipped.data_train) == 1
    cut = ListOpsDataModule(_released_dir(tmp_path, rows), l_max=6, overlength='truncate')
    cut.setup()
    assert cut.data_train.tokens[0].lengths().max() == 6


def test_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(LRADataError, match='basic_train.tsv') as err:
        ListOpsDataModule(str(tmp_path)).setup()
    assert 'generate=true' in str(err.value)
