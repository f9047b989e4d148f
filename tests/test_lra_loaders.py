"""Text (IMDB), Retrieval (AAN) and Image (CIFAR-10 gray) loaders on tiny files in the released formats."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.data.lra import AANDataModule, CIFAR10GrayDataModule, IMDBDataModule, LRADataError, collate_pairs

REVIEWS = {'train': [('a good film, good!', 1), ('bad bad film', 0), ('good', 1)],
           'test': [('bad film', 0), ('a good one', 1)]}


# ---------------------------------------------------------------------------------------------------- IMDB

def _parquet(root):
    pa, pq = pytest.importorskip('pyarrow'), pytest.importorskip('pyarrow.parquet')
    (root / 'plain_text').mkdir(parents=True)
    for split, rows in REVIEWS.items():
        table = pa.table({'text': [t for t, _ in rows], 'label': [y for _, y in rows]})
        pq.write_table(table, root / 'plain_text' / f'{split}-00000-of-00001.parquet')


def _arrow(root):
    pa = pytest.importorskip('pyarrow')
    for split, rows in REVIEWS.items():
        (root / split).mkdir(parents=True)
        table = pa.table({'text': [t for t, _ in rows], 'label': [y for _, y in rows]})
        with pa.OSFile(str(root / split / 'data-00000-of-00001.arrow'), 'wb') as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)


def _acl_tree(root):
    for split, rows in REVIEWS.items():
        for k, (text, label) in enumerate(rows):
            folder = root / 'aclImdb' / split / ('pos' if label else 'neg')
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f'{k}_7.txt').write_text(text)


@pytest.mark.parametrize('layout', [_parquet, _arrow, _acl_tree])
def test_imdb_layouts(tmp_path, layout):
    layout(tmp_path)
    dm = IMDBDataModule(str(tmp_path), l_max=8, min_freq=2, batch_size=3, val_split=0.5)
    info = dm.describe()
    assert [info[s]['size'] for s in ('train', 'val', 'test')] == [2, 1, 2]   # val: held out of the 3 train reviews
    assert [a + b for a, b in zip(info['train']['label_counts'], info['val']['label_counts'])] == [1, 2]
    # test stays out of checkpoint selection: val comes from the train reviews, disjoint from the ones trained on
    assert not set(dm.data_val.indices) & set(dm.data_train.indices) and dm.data_test is not dm.data_val.dataset
    assert info['overlong_count']['train'] == 2                             # cut to 7 chars + EOS
    # vocabulary from the cut train reviews ('a good ', 'bad bad', 'good'), chars seen >= 2 times, by count then
    # alphabetically (torchtext order): d 4, o 4, ' ' 3, a 3, b 2, g 2
    assert dm.vocab.itos == ['<pad>', '<unk>', '<eos>', 'd', 'o', ' ', 'a', 'b', 'g']
    assert dm.vocab['f'] == dm.vocab['<unk>']
    x, y, extras = next(iter(dm.train_dataloader()))
    assert x.shape[0] == 2 and x.shape[1] == int(extras['lengths'].max()) <= 8


def test_imdb_missing_lists_expected_files(tmp_path):
    with pytest.raises(LRADataError, match=r'aclImdb/\{train,test\}/\{neg,pos\}') as err:
        IMDBDataModule(str(tmp_path)).setup()
    assert 'parquet' in str(err.value)


def test_imdb_bad_label(tmp_path):
    _acl_tree(tmp_path)
    pa, pq = pytest.importorskip('pyarrow'), pytest.importorskip('pyarrow.parquet')
    pq.write_table(pa.table({'text': ['x'], 'label': [3]}), tmp_path / 'train-00000-of-00001.parquet')
    pq.write_table(pa.table({'text': ['x'], 'label': [0]}), tmp_path / 'test-00000-of-00001.parquet')
    with pytest.raises(LRADataError, match=r'train-00000-of-00001.parquet row 0: label .3.'):
        IMDBDataModule(str(tmp_path)).setup()


# ---------------------------------------------------------------------------------------------------- AAN

def _aan(root, extra_train_line=None):
    rows = {'train': ['1\tid1\tid2\tabc abc\tab', '0.0\tid3\tid4\tzzz\tcab'],
            'eval': ['0\tid5\tid6\tab\tbc'], 'test': ['1\tid7\tid8\tabcabcabc\tc']}
    if extra_train_line is not None:
        rows['train'].append(extra_train_line)
    for split, lines in rows.items():
        (root / f'new_aan_pairs.{split}.tsv').write_text('\n'.join(lines) + '\n')
    return str(root)


def test_aan_pairs_and_batches(tmp_path):
    dm = AANDataModule(_aan(tmp_path), l_max=6, batch_size=2)
    info = dm.describe()
    assert [info[s]['size'] for s in ('train', 'val', 'test')] == [2, 1, 1]
    assert info['train']['label_counts'] == [1, 1]
    assert info['overlong_documents']['test'] == 1
    x, y, extras = next(iter(dm.test_dataloader()))
    assert x.shape == (1, 2, 6) and extras['lengths'].tolist() == [[6, 2]]  # 5 chars + EOS / 'c' + EOS
    assert dm.vocab_size == len(dm.vocab) and 'z' in dm.vocab.stoi


def test_pair_collation_contract():
    batch = [([torch.tensor([3, 4, 2]), torch.tensor([5, 2])], 1), ([torch.tensor([2]), torch.tensor([6, 6, 6, 2])], 0)]
    x, y, extras = collate_pairs(batch)
    assert x.shape == (2, 2, 4) and y.tolist() == [1, 0]
    assert extras['lengths'].tolist() == [[3, 2], [1, 4]]
    assert x[0, 1].tolist() == [5, 2, 0, 0]


@pytest.mark.parametrize('line, message', [
    ('2\tid\tid\tx\ty', r"label '2' is not a class id"),
    ('1\tid\tx\ty', 'expected 5 tab-separated fields'),
])
def test_aan_bad_rows(tmp_path, line, message):
    with pytest.raises(LRADataError, match=message) as err:
        AANDataModule(_aan(tmp_path, line)).setup()
    assert 'new_aan_pairs.train.tsv:3' in str(err.value)
    skipping = AANDataModule(_aan(tmp_path, line), bad_rows='skip')
    assert skipping.describe()['skipped_rows']['train'] == 1


def test_aan_missing(tmp_path):
    with pytest.raises(LRADataError, match='new_aan_pairs.eval.tsv'):
        AANDataModule(str(tmp_path)).setup()


# ---------------------------------------------------------------------------------------------------- CIFAR

def _cifar(root, bad_label=False):
    folder = root / 'cifar-10-batches-py'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        labels = [int(v) for v in rng.integers(0, 10, 4)]
        if bad_label and name == 'data_batch_2':
            labels[1] = 10
        batch = {b'data': rng.integers(0, 256, (4, 3072), dtype=np.uint8), b'labels': labels}
        with open(folder / name, 'wb') as f:
            pickle.dump(batch, f)
    return folder


def test_cifar_gray_splits_and_pixels(tmp_path):
    folder = _cifar(tmp_path)
    dm = CIFAR10GrayDataModule(str(tmp_path), batch_size=5)
    info = dm.describe()
    assert [info[s]['size'] for s in ('train', 'val', 'test')] == [18, 2, 4]
    assert dm.seq_len == 1024 and dm.in_chans == 1 and dm.num_classes == 10
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 1024, 1) and x.dtype == torch.float32
    # grayscale exactly as PIL / torchvision Grayscale, then S4's normalization
    with open(folder / 'test_batch', 'rb') as f:
        first = pickle.load(f)[b'data'][0]
    rgb = first.reshape(3, 32, 32).transpose(1, 2, 0)
    gray = np.asarray(Image.fromarray(rgb, 'RGB').convert('L'), dtype=np.float32).reshape(-1)
    assert torch.allclose(x[0, :, 0], (torch.from_numpy(gray) / 255 - 122.6 / 255) / (61.0 / 255), atol=1e-5)


def test_cifar_bad_label_and_missing(tmp_path):
    _cifar(tmp_path, bad_label=True)
    with pytest.raises(LRADataError, match=r'data_batch_2: row 1 has label 10'):
        CIFAR10GrayDataModule(str(tmp_path)).setup()
    with pytest.raises(LRADataError, match='test_batch'):
        CIFAR10GrayDataModule(str(tmp_path / 'nowhere')).setup()
