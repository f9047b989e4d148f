"""The training path: Hydra configs, LitClassifier, DataModules, zoo.train / zoo.evaluate, resume, DDP, loggers."""
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from zoo.lit import LitClassifier, split_optim_groups

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
# `_<family>.yaml` files are the bases experiments build on, not experiments.
EXPERIMENTS = sorted(str(p.relative_to(CONFIGS / 'experiment').with_suffix(''))
                     for p in (CONFIGS / 'experiment').rglob('*.yaml') if not p.name.startswith('_'))
# A tiny InceptionNeXt so a CPU epoch takes seconds.
TINY_MODEL = ['+model.kwargs.depths=[1,1,1,1]', '+model.kwargs.dims=[8,16,32,64]']


def compose_cfg(config_name: str, overrides: list[str], tmp_path: Path, with_hydra: bool = True):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base='1.3'):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=with_hydra)
    if with_hydra:
        # What @hydra.main would set up: the run directory and the runtime choices the configs interpolate.
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(tmp_path / 'run')
            cfg.hydra.job.num = 0
        HydraConfig.instance().set_config(cfg)
    return cfg


def tiny_train_overrides(tmp_path: Path, epochs: int = 1) -> list[str]:
    return [
        f'paths.root={tmp_path}', 'trainer.enable_progress_bar=false', f'trainer.max_epochs={epochs}',
        'trainer.limit_train_batches=3', 'trainer.limit_val_batches=2', 'trainer.limit_test_batches=1',
        'trainer.num_sanity_val_steps=0', 'trainer.log_every_n_steps=1', 'data.batch_size=8', *TINY_MODEL,
    ]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


# ---- configs ----

def test_default_config_is_the_digits_experiment(tmp_path):
    cfg = compose_cfg('train', [], tmp_path)
    assert cfg.model.name == 'inceptionnext_atto'
    assert cfg.data._target_ == 'zoo.data.digits.DigitsDataModule'
    assert cfg.trainer.accelerator == 'cpu'


@pytest.mark.parametrize('experiment', EXPERIMENTS)
def test_every_experiment_composes_with_a_registered_model(experiment, tmp_path):
    cfg = compose_cfg('train', [f'experiment={experiment}'], tmp_path)
    assert timm.is_model(cfg.model.name), f"{experiment}: unknown model {cfg.model.name}"
    module_name, _, cls_name = cfg.data._target_.rpartition('.')
    module = __import__(module_name, fromlist=[cls_name])
    assert hasattr(module, cls_name), f"{experiment}: data target {cfg.data._target_} does not exist"


def test_imagenet_recipe_matches_the_official_one(tmp_path):
    cfg = compose_cfg('train', ['experiment=imagenet/inceptionnext_tiny'], tmp_path)
    assert cfg.model.name == 'inceptionnext_tiny' and cfg.model.kwargs.drop_path_rate == 0.1
    assert cfg.optim.opt == 'adamw' and cfg.optim.base_lr == 4e-3 and cfg.optim.base_batch == 4096
    assert cfg.optim.weight_decay == 0.05
    assert cfg.trainer.max_epochs == 300 and cfg.sched.warmup_epochs == 20
    assert cfg.data.aug.auto_augment == 'rand-m9-mstd0.5-inc1' and cfg.data.aug.re_prob == 0.25
    assert cfg.loss.mixup_alpha == 0.8 and cfg.loss.cutmix_alpha == 1.0 and cfg.loss.label_smoothing == 0.1


# ---- train, resume, evaluate ----

def test_last_checkpoint_is_the_last_epoch_even_without_a_new_best(tmp_path):
    from zoo.train import run as train

    # save_top_k=0 keeps no best checkpoint at all; last.ckpt must still hold the final epoch (PL 2.6's own
    # save_last only writes it when a best checkpoint was saved, so resuming went back to the best epoch).
    cfg = compose_cfg('train', tiny_train_overrides(tmp_path, epochs=2) + ['+callbacks.model_checkpoint.save_top_k=0'],
                      tmp_path)
    train(cfg)
    last = torch.load(tmp_path / 'run' / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert last['epoch'] == 1 and last['global_step'] == 6
    assert sorted(p.name for p in (tmp_path / 'run' / 'checkpoints').iterdir()) == ['last.ckpt']

def test_train_resume_and_evaluate(tmp_path):
    from zoo.evaluate import RESULT_COLUMNS
    from zoo.evaluate import run as evaluate
    from zoo.train import run as train

    cfg = compose_cfg('train', tiny_train_overrides(tmp_path) + ['run_name=tiny'], tmp_path)
    metrics = train(cfg)
    assert {'val/acc', 'train/loss', 'test/acc'} <= set(metrics)
    run_dir = tmp_path / 'run'
    assert (run_dir / 'checkpoints' / 'last.ckpt').is_file()
    rows = list(csv.DictReader(open(run_dir / 'csv' / 'metrics.csv')))
    assert any(r.get('val/acc') for r in rows)

    # ckpt_path=last continues the newest run of this run_name: one more epoch, global step carries on.
    os.makedirs(tmp_path / 'tiny' / 'earlier' / 'checkpoints')
    os.replace(run_dir / 'checkpoints' / 'last.ckpt', tmp_path / 'tiny' / 'earlier' / 'checkpoints' / 'last.ckpt')
    cfg = compose_cfg('train', tiny_train_overrides(tmp_path, epochs=2) + ['run_name=tiny', 'ckpt_path=last'],
                      tmp_path)
    train(cfg)
    resumed = torch.load(run_dir / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert resumed['global_step'] == 6  # 3 batches in each of 2 epochs: the first epoch was not redone

    # The checkpoint alone rebuilds the model (hyperparameters are a name plus kwargs).
    module = LitClassifier.load_from_checkpoint(run_dir / 'checkpoints' / 'last.ckpt', weights_only=True)
    assert module.hparams.model_name == 'inceptionnext_atto' and module.model.num_classes == 10

    ecfg = compose_cfg('evaluate', [f'ckpt={run_dir / "checkpoints" / "last.ckpt"}', f'paths.root={tmp_path}',
                                    'trainer.enable_progress_bar=false', 'trainer.limit_test_batches=2'], tmp_path)
    row = evaluate(ecfg)
    assert tuple(row) == RESULT_COLUMNS
    assert 0 <= row['top1'] <= 100 and row['top1_err'] == pytest.approx(100 - row['top1'])
    assert json.load(open(run_dir / 'results.json'))['model'] == 'inceptionnext_atto'
    assert next(csv.reader(open(run_dir / 'results.csv'))) == list(RESULT_COLUMNS)


def test_evaluate_a_timm_name_with_pretrained_weights_from_a_file(tmp_path):
    from safetensors.torch import save_file

    from zoo.evaluate import run as evaluate
    model = timm.create_model('inceptionnext_atto', num_classes=10, in_chans=1, depths=(1, 1, 1, 1),
                              dims=(8, 16, 32, 64))
    weights = tmp_path / 'w.safetensors'
    save_file(model.state_dict(), str(weights))
    cfg = compose_cfg('evaluate', [
        'model.name=inceptionnext_atto', 'model.data_kwargs=[num_classes,in_chans]', *TINY_MODEL,
        f'+model.kwargs.pretrained_cfg_overlay={{file:{weights}}}', f'paths.root={tmp_path}',
        'trainer.enable_progress_bar=false', 'trainer.limit_test_batches=1'], tmp_path)
    row = evaluate(cfg)
    assert row['model'] == 'inceptionnext_atto' and row['img_size'] == 32


def test_unknown_model_name_is_a_clear_error(tmp_path):
    from zoo.train import run as train
    cfg = compose_cfg('train', tiny_train_overrides(tmp_path)[:-2] + ['model.name=inceptionnext_atoo'], tmp_path)
    with pytest.raises(ValueError, match="unknown model name 'inceptionnext_atoo'.*inceptionnext_atto"):
        train(cfg)


def test_evaluate_needs_a_checkpoint_or_a_name(tmp_path):
    from zoo.evaluate import run as evaluate
    with pytest.raises(ValueError, match='nothing to evaluate'):
        evaluate(compose_cfg('evaluate', [f'paths.root={tmp_path}'], tmp_path))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        evaluate(compose_cfg('evaluate', [f'ckpt={tmp_path}/nope.ckpt', f'paths.root={tmp_path}'], tmp_path))


# ---- optimizer, schedule, loss, EMA ----

class TinyNet(nn.Module):
    """A model that asks for its own optimizer settings on one parameter (the s4 `_optim` convention)."""

    def __init__(self, num_classes=3, **kwargs):
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(4, num_classes)
        self.ssm = nn.Parameter(torch.zeros(4))
        self.ssm._optim = {'lr': 1e-3, 'weight_decay': 0.0}

    def no_weight_decay(self):
        return {'fc.bias'}

    def forward(self, x):
        return self.fc(x + self.ssm)


@pytest.fixture
def tiny_net_registered(monkeypatch):
    is_model = timm.is_model
    monkeypatch.setattr(timm, 'is_model', lambda name: name == 'tiny' or is_model(name))  # LitClassifier checks it
    monkeypatch.setattr(timm, 'create_model', lambda name, pretrained=False, **kw: TinyNet(**kw))


def attach_trainer(module, max_epochs=2, batches=5):
    class _Trainer:  # the few Trainer attributes configure_optimizers reads
        datamodule = type('DM', (), {'batch_size': 64})()
        world_size, accumulate_grad_batches = 2, 1
        estimated_stepping_batches = max_epochs * batches
    _Trainer.max_epochs = max_epochs
    module._trainer = _Trainer()
    return module


def test_parameters_with_their_own_settings_get_their_own_group(tiny_net_registered):
    module = attach_trainer(LitClassifier('tiny', {'num_classes': 3}, optim={'opt': 'adamw', 'lr': 0.1,
                                                                             'weight_decay': 0.05}))
    opt = module.configure_optimizers()
    groups = {(g['lr'], g['weight_decay']): sum(p.numel() for p in g['params']) for g in opt.param_groups}
    assert groups == {(0.1, 0.05): 12, (0.1, 0.0): 3, (1e-3, 0.0): 4}


def test_split_optim_groups_keeps_plain_groups():
    a, b = nn.Parameter(torch.ones(2)), nn.Parameter(torch.ones(3))
    b._optim = {'lr': 0.5}
    assert split_optim_groups([{'params': [a, b], 'weight_decay': 0.1}]) == [
        {'params': [a], 'weight_decay': 0.1}, {'params': [b], 'lr': 0.5}]


def test_lr_scales_with_the_global_batch_and_warms_up_per_step(tiny_net_registered):
    module = attach_trainer(LitClassifier(
        'tiny', {'num_classes': 3}, optim={'opt': 'adamw', 'base_lr': 4e-3, 'base_batch': 4096, 'weight_decay': 0},
        sched={'sched': 'cosine', 'warmup_epochs': 1, 'warmup_lr': 1e-6, 'min_lr': 0.0}), max_epochs=4)
    out = module.configure_optimizers()
    opt, sched = out['optimizer'], out['lr_scheduler']['scheduler']
    peak = 4e-3 * (64 * 2) / 4096  # batch 64 on each of 2 processes
    assert opt.param_groups[0]['lr'] == pytest.approx(1e-6)  # warmup starts at warmup_lr
    lrs = []
    for step in range(1, 20):
        sched.step_update(num_updates=step)
        lrs.append(opt.param_groups[0]['lr'])
    # Update 5 ends the one-epoch (5-update) warmup; timm's cosine spans all 20 updates, warmup included.
    assert lrs[4] == pytest.approx(0.5 * peak * (1 + math.cos(math.pi * 5 / 20)))
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4:] == sorted(lrs[4:], reverse=True)


def test_layer_decay_uses_the_models_group_matcher():
    module = LitClassifier('inceptionnext_atto', {'num_classes': 10, 'depths': (1, 1, 1, 1), 'dims': (8, 16, 32, 64)},
                           optim={'opt': 'adamw', 'lr': 1e-3, 'weight_decay': 0.05, 'layer_decay': 0.5})
    opt = attach_trainer(module).configure_optimizers()
    scales = sorted({g['lr_scale'] for g in opt.param_groups})
    assert len(scales) > 3 and scales[-1] == 1.0 and scales[0] < 0.1


def test_mixup_label_smoothing_and_ema_steps():
    module = LitClassifier('inceptionnext_atto', {'num_classes': 10, 'in_chans': 1, 'depths': (1, 1, 1, 1),
                                                  'dims': (8, 16, 32, 64)},
                           loss={'mixup_alpha': 0.8, 'cutmix_alpha': 1.0, 'label_smoothing': 0.1}, ema_decay=0.9)
    module.log = lambda *a, **k: None
    x, y = torch.randn(4, 1, 32, 32), torch.randint(0, 10, (4,))
    loss = module.training_step((x, y), 0)
    assert torch.isfinite(loss) and type(module.train_criterion).__name__ == 'SoftTargetCrossEntropy'
    with pytest.raises(ValueError, match='even batch size'):
        module.training_step((x[:3], y[:3]), 0)
    assert any(k.startswith('model_ema.module.') for k in module.state_dict())


# ---- data ----

def test_digits_split_is_fixed_and_stratified():
    from zoo.data.digits import DigitsDataModule
    a, b = DigitsDataModule(img_size=32), DigitsDataModule(img_size=32)
    stats = a.describe()
    assert (stats['train'], stats['val'], stats['test']) == (4000, 500, 500)
    assert set(stats['val_per_class']) == set(stats['test_per_class']) == {50}
    b.setup()
    assert torch.equal(a.val_set.images, b.val_set.images) and torch.equal(a.test_set.images, b.test_set.images)
    # The held-out test images were neither trained on nor used to select checkpoints.
    train, val, test = (set(a.split_indices[s].tolist()) for s in ('train', 'val', 'test'))
    assert not (test & val) and not (test & train) and not (val & train) and len(train | val | test) == 5000
    x, y = a.train_set[0]
    assert x.shape == (1, 32, 32) and 0 <= int(y) < 10
    with pytest.raises(ValueError, match='in_chans'):
        DigitsDataModule(in_chans=2)


def make_image_tree(root: Path, splits=('train', 'val'), classes=('cat', 'dog'), n=2):
    from PIL import Image
    for split in splits:
        for c in classes:
            os.makedirs(root / split / c)
            for i in range(n):
                Image.new('RGB', (40, 30), color=(i * 60, 10, 200)).save(root / split / c / f'{i}.png')


def test_imagefolder_datamodule_uses_the_models_data_config(tmp_path):
    from zoo.data.imagefolder import ImageFolderDataModule
    make_image_tree(tmp_path)
    dm = ImageFolderDataModule(tmp_path, model_name='inceptionnext_atto', img_size=32, batch_size=2, num_workers=0)
    dm.setup('fit')
    assert dm.num_classes == 2 and dm.data_config()['interpolation'] == 'bicubic'
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 32, 32)


def test_imagefolder_missing_or_malformed_root_names_path_and_layout(tmp_path):
    from zoo.data.imagefolder import ImageFolderDataModule
    with pytest.raises(FileNotFoundError, match=f'{tmp_path}/nope does not exist.*<root>/train/<class name>'):
        ImageFolderDataModule(tmp_path / 'nope', model_name='inceptionnext_atto').setup('fit')
    make_image_tree(tmp_path, splits=('train',))
    with pytest.raises(FileNotFoundError, match="split 'val' not found"):
        ImageFolderDataModule(tmp_path, model_name='inceptionnext_atto').setup('fit')


# ---- bad input to the model ----

def test_model_input_errors_are_clear():
    model = timm.create_model('inceptionnext_atto', num_classes=10, in_chans=1).eval()
    with pytest.raises(ValueError, match='expected 1 input channels, got 3'):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='smaller than the minimum 32x32'):
        model(torch.randn(1, 1, 16, 16))


# ---- loggers and scale-out ----

def test_wandb_logger_runs_offline(tmp_path, monkeypatch):
    pytest.importorskip('wandb')
    from zoo.train import run as train
    monkeypatch.setenv('WANDB_MODE', 'offline')
    monkeypatch.setenv('WANDB_SILENT', 'true')
    monkeypatch.setenv('WANDB_DIR', str(tmp_path))
    cfg = compose_cfg('train', tiny_train_overrides(tmp_path) + ['logger=wandb', 'test=false'], tmp_path)
    train(cfg)
    assert list((tmp_path / 'run' / 'wandb').glob('offline-run-*'))


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    """trainer=ddp through the real entry point: Lightning launches a second process, gloo on the CPU."""
    # SyncBatchNorm is for GPUs; on CPU processes plain BatchNorm is what DDP can run.
    cmd = [sys.executable, str(REPO / 'train.py'), 'trainer=ddp', 'trainer.accelerator=cpu', 'trainer.devices=2',
           'trainer.sync_batchnorm=false',
           'test=false', 'logger=csv', f'hydra.run.dir={tmp_path / "ddp"}',
           *tiny_train_overrides(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS='1', PL_DISABLE_FORK='1')
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2' in proc.stdout + proc.stderr
    assert (tmp_path / 'ddp' / 'checkpoints' / 'last.ckpt').is_file()
