"""LRA data <-> model contract: DataModule batches feed the registered s4d/sgconv LRA models; recipes compose."""
import glob
import os

import numpy as np
import pytest
import timm
import torch
from hydra import compose, initialize
from PIL import Image

import zoo  # noqa: F401  (registers the models)
from zoo.data.lra import AANDataModule, ListOpsDataModule, PathfinderDataModule
from zoo.data.lra.pathfinder import DIFFICULTY

TINY = dict(embed_dim=8, depth=1)
CONFIGS = os.path.join(os.path.dirname(__file__), '..', 'configs')


def _model(name, dm, **kw):
    data = {k: getattr(dm, k) for k in ('num_classes', 'seq_len', 'vocab_size', 'in_chans') if hasattr(dm, k)}
    return timm.create_model(name, **data, **TINY, **kw).eval()


def test_listops_batch_feeds_model(tmp_path):
    dm = ListOpsDataModule(str(tmp_path), generate=True, num_train=6, num_val=2, num_test=2, processes=1,
                           batch_size=3)
    dm.setup()
    x, y, extras = next(iter(dm.train_dataloader()))
    for name in ('s4d_lra_listops', 'sgconv_lra_listops'):
        logits = _model(name, dm)(x, **extras)
        assert logits.shape == (3, 10) and torch.isfinite(logits).all()


def test_retrieval_batch_feeds_model(tmp_path):
    lines = ['1\ta\tb\thello world\tworld', '0\tc\td\tfoo\tbar baz']
    for split in ('train', 'eval', 'test'):
        (tmp_path / f'new_aan_pairs.{split}.tsv').write_text('\n'.join(lines) + '\n')
    dm = AANDataModule(str(tmp_path), l_max=16, batch_size=2)
    dm.setup()
    x, y, extras = next(iter(dm.train_dataloader()))
    logits = _model('s4d_lra_retrieval', dm)(x, **extras)
    assert x.shape[:2] == (2, 2) and extras['lengths'].shape == (2, 2) and logits.shape == (2, 2)


def test_pathfinder_batch_feeds_model(tmp_path):
    root = tmp_path / 'pathfinder32' / DIFFICULTY
    (root / 'imgs' / '0').mkdir(parents=True)
    (root / 'metadata').mkdir()
    rows = []
    for k in range(10):
        Image.fromarray(np.full((32, 32), 25 * k, np.uint8)).save(root / 'imgs' / '0' / f'sample_{k}.png')
        rows.append(f'imgs/0 sample_{k}.png {k} {k % 2} 1.0 14 4 2 0.5 1 1\n')
    (root / 'metadata' / '0.npy').write_text(''.join(rows))
    dm = PathfinderDataModule(str(tmp_path), batch_size=4)
    dm.setup()
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1024, 1)
    assert _model('s4d_lra_pathfinder', dm)(x).shape == (4, 2)


@pytest.mark.parametrize('path', sorted(glob.glob(os.path.join(CONFIGS, 'experiment', 'lra', '[!_]*.yaml'))),
                         ids=os.path.basename)  # _*.yaml are the recipes' bases, not experiments
def test_recipes_compose(path):
    name = 'lra/' + os.path.basename(path)[:-5]
    with initialize(version_base='1.3', config_path='../configs'):
        cfg = compose('train', overrides=[f'experiment={name}'])
    assert cfg.data._target_.startswith('zoo.data.lra.')
    assert timm.is_model(cfg.model.name) and cfg.model.name.split('_lra_')[0] in name
    assert cfg.trainer.max_epochs >= 1 and cfg.optim.lr > 0 and cfg.seed == 2222
