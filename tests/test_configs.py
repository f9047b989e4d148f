"""The Hydra configs compose to the same runs as the fixture of their resolved values says.

`tests/fixtures/configs/resolved.json` holds, for the default `train` config, for `evaluate` and for every
experiment under `configs/experiment/` (files whose name starts with `_` are bases, not experiments), the config as
`tests/test_train.py::compose_cfg` composes it, resolved, without the `hydra` node (only `hydra.job.env_set` is kept,
as experiments set environment variables there). Values that depend on the machine are fixed while composing: the run
directory is `/fixture/run` (what compose_cfg makes of a tmp_path of `/fixture`), and the environment variables that
configs read through `${oc.env:...}` are unset, so their defaults are what gets stored; the `${now:...}` timestamps live
only in the dropped `hydra` node. Remake the file, when a recipe is meant to change, with

    python tests/test_configs.py --write-fixture

The comparison accepts two kinds of difference and checks each:
- `run_name`: every experiment's run is `<group>/<name>`, the experiment choice; strings of the old config that
  contained the old run_name are compared with the new name in its place.
- `model.kwargs` keys that are gone (they repeated the registered defaults of the model): the kwargs that remain must
  equal the old ones, and the model built with the old kwargs must be the model built with the new ones (same state
  dict, bit for bit, and the same simple attributes on every module and on the helper objects modules hold).
"""
import argparse
import contextlib
import functools
import json
import os
import random
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

import zoo  # noqa: F401  (registers the zoo models)
from test_train import compose_cfg  # tests/ is on sys.path under pytest, and as the script's own folder

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / 'configs'
FIXTURE = Path(__file__).resolve().parent / 'fixtures' / 'configs' / 'resolved.json'
FIXTURE_ROOT = Path('/fixture')  # stands in for a tmp_path: the run directory becomes /fixture/run


def experiments() -> list[str]:
    """Every selectable experiment, `<group>/<name>`; `_*.yaml` files are bases that experiments build on."""
    root = CONFIGS / 'experiment'
    return sorted(str(p.relative_to(root).with_suffix('')) for p in root.rglob('*.yaml') if not p.name.startswith('_'))


def cases() -> dict[str, tuple[str, list[str]]]:
    """Fixture key -> (config name, overrides)."""
    out = {'train': ('train', []), 'evaluate': ('evaluate', [])}
    out.update({f'experiment={e}': ('train', [f'experiment={e}']) for e in experiments()})
    return out


@contextlib.contextmanager
def without_config_env_vars():
    """Unset every environment variable the configs read with ${oc.env:NAME,...} (their defaults apply)."""
    names = set()
    for path in CONFIGS.rglob('*.yaml'):
        names.update(re.findall(r'oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)', path.read_text()))
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def resolve(config_name: str, overrides: list[str]) -> dict:
    """The composed config, resolved, without `hydra` but with `hydra.job.env_set`."""
    with without_config_env_vars():
        cfg = compose_cfg(config_name, overrides, FIXTURE_ROOT)
        env_set = OmegaConf.to_container(cfg.hydra.job.env_set, resolve=True)
        with open_dict(cfg):
            del cfg['hydra']  # ${hydra:...} still resolves: compose_cfg has set HydraConfig
        resolved = OmegaConf.to_container(cfg, resolve=True)
    GlobalHydra.instance().clear()
    return {'config': resolved, 'hydra.job.env_set': env_set}


@functools.lru_cache(maxsize=None)
def resolve_case(key: str) -> dict:
    """resolve() of a fixture key, once per test session (callers must not change the result)."""
    config_name, overrides = cases()[key]
    return resolve(config_name, overrides)


def write_fixture(path: Path = FIXTURE) -> None:
    data = {key: resolve(*args) for key, args in cases().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n')
    print(f"{path}: {len(data)} configs")


def load_fixture() -> dict:
    return json.loads(FIXTURE.read_text())


# ---- comparing two resolved configs ----

def replace_strings(tree, old: str, new: str):
    if isinstance(tree, dict):
        return {k: replace_strings(v, old, new) for k, v in tree.items()}
    if isinstance(tree, list):
        return [replace_strings(v, old, new) for v in tree]
    return tree.replace(old, new) if isinstance(tree, str) else tree


def differences(a, b, where: str = '') -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f'{where}.{k}' if where else str(k)
            if k not in a:
                out.append(f'{key}: added ({b[k]!r})')
            elif k not in b:
                out.append(f'{key}: removed (was {a[k]!r})')
            else:
                out += differences(a[k], b[k], key)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f'{where}[{i}]')]
    if a != b or type(a) is not type(b):
        return [f'{where}: {a!r} -> {b!r}']
    return []


# ---- building a model both ways ----

# DataModule attributes that are only known after setup() reads the data: what the experiments' data gives.
AFTER_SETUP = {('zoo.data.imagefolder.ImageFolderDataModule', 'num_classes'): 1000}  # ImageNet-1K


def data_kwargs(config: dict) -> dict:
    """The `model.data_kwargs` values the experiment's DataModule hands the model (no data is read)."""
    keys = config['model'].get('data_kwargs') or []
    if not keys:
        return {}
    datamodule = instantiate(OmegaConf.create(config['data']), _convert_='all')
    out = {}
    for key in keys:
        value = getattr(datamodule, key, None)
        if value is None:
            value = AFTER_SETUP[(config['data']['_target_'], key)]
        out[key] = value
    return out


def build(name: str, kwargs: dict) -> nn.Module:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


_SIMPLE = (bool, int, float, str, type(None))


def settings(obj, depth: int = 0):
    """The attributes of a module or helper object that fix its behaviour, as comparable plain values.

    Simple values (and tuples / lists / sets / dicts of them) as they are; classes and functions by qualified name;
    plain tensor attributes (not parameters or buffers) by dtype, shape and values; other non-module objects (e.g. the
    Lie-group sampler) by their own settings, recursively. Submodules, parameters and buffers are left to the caller
    (named_modules and the state dict).
    """
    if isinstance(obj, _SIMPLE):
        return obj
    if isinstance(obj, (tuple, list)):
        return [type(obj).__name__, [settings(v, depth + 1) for v in obj]]
    if isinstance(obj, (set, frozenset)):
        return ['set', sorted(map(repr, obj))]
    if isinstance(obj, dict):
        return {repr(k): settings(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        return ['tensor', str(obj.dtype), list(obj.shape), obj.detach().cpu().flatten().tolist()]
    if isinstance(obj, functools.partial):
        return ['partial', settings(obj.func, depth + 1), settings(obj.args, depth + 1),
                settings(obj.keywords, depth + 1)]
    if isinstance(obj, type) or (callable(obj) and not isinstance(obj, nn.Module) and hasattr(obj, '__qualname__')):
        return ['callable', f'{getattr(obj, "__module__", "")}.{obj.__qualname__}']
    if isinstance(obj, nn.Module) and depth > 0:
        return ['module', type(obj).__qualname__]  # a submodule held as an attribute: compared in its own right
    if hasattr(obj, '__dict__') and depth < 6:
        skip = ('_parameters', '_buffers', '_modules') if isinstance(obj, nn.Module) else ()
        return [type(obj).__qualname__, {k: settings(v, depth + 1) for k, v in sorted(vars(obj).items())
                                         if k not in skip}]
    return ['object', type(obj).__qualname__]


def module_settings(model: nn.Module) -> dict:
    return {name: settings(m) for name, m in model.named_modules()}


def assert_same_model(old: nn.Module, new: nn.Module, dropped: dict) -> None:
    """`old` was built with the keyword arguments `dropped` on top of those `new` was built with."""
    sa, sb = old.state_dict(), new.state_dict()
    assert list(sa) == list(sb), "state dict keys differ"
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), f"state dict {key} differs"
    # timm keeps the keyword arguments of the create_model call in `_model_args` (to rebuild the model elsewhere):
    # there the two builds differ by exactly the dropped arguments, by construction.
    assert getattr(old, '_model_args', {}) == {**getattr(new, '_model_args', {}), **dropped}
    a, b = module_settings(old), module_settings(new)
    a[''][1].pop('_model_args', None), b[''][1].pop('_model_args', None)
    diff = differences(a, b)
    assert not diff, "module attributes differ:\n" + '\n'.join(diff[:20])


# ---- the tests ----

if FIXTURE.exists():
    FIXTURE_DATA = load_fixture()
else:  # only while the fixture is being written
    FIXTURE_DATA = {}

# Models above 15M parameters: seconds per build on a busy 2-core CPU. The same dropped kwargs are also checked on
# the smaller variants of their family, which run by default.
SLOW_MODELS = {'unireplknet_n', 'unireplknet_t', 'unireplknet_s', 'inceptionnext_tiny'}


def _param(key):
    name = FIXTURE_DATA.get(key, {}).get('config', {}).get('model', {}).get('name')
    return pytest.param(key, marks=pytest.mark.slow) if name in SLOW_MODELS else key


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def test_fixture_covers_every_experiment():
    assert sorted(FIXTURE_DATA) == sorted(cases()), "experiments added or removed: remake the fixture"


@pytest.mark.parametrize('key', sorted(FIXTURE_DATA))
def test_config_resolves_as_the_fixture_says(key):
    old = FIXTURE_DATA[key]
    new = resolve_case(key)
    old_cfg, new_cfg = old['config'], new['config']
    if key.startswith('experiment=') or key == 'train':
        expected = key.removeprefix('experiment=') if key != 'train' else 'digits/inceptionnext_atto'
        assert new_cfg['run_name'] == expected, "run_name is <group>/<name>, the experiment choice"
        old_cfg = replace_strings(old_cfg, old_cfg['run_name'], expected)
    if 'model' in old_cfg and old_cfg['model'].get('kwargs') != new_cfg['model'].get('kwargs'):
        old_kwargs, new_kwargs = old_cfg['model']['kwargs'], new_cfg['model']['kwargs']
        kept = {k: old_kwargs[k] for k in new_kwargs if k in old_kwargs}
        assert new_kwargs == kept, f"model.kwargs may only lose keys: {differences(old_kwargs, new_kwargs)}"
        old_cfg = dict(old_cfg, model=dict(old_cfg['model'], kwargs=new_kwargs))  # the builds check the rest
    diff = differences(old_cfg, new_cfg)
    assert not diff, '\n'.join(diff)
    assert new['hydra.job.env_set'] == old['hydra.job.env_set']


@pytest.mark.parametrize('key', [_param(k) for k in sorted(FIXTURE_DATA) if 'model' in FIXTURE_DATA[k]['config']
                                 and FIXTURE_DATA[k]['config']['model'].get('name')])
def test_dropped_model_kwargs_build_the_same_model(key):
    old = FIXTURE_DATA[key]['config']['model']
    new = resolve_case(key)['config']
    if new['model']['kwargs'] == old['kwargs']:
        return  # nothing dropped: test_config_resolves_as_the_fixture_says compares the kwargs
    assert new['model']['name'] == old['name']
    extra = data_kwargs(new)
    dropped = {k: v for k, v in old['kwargs'].items() if k not in new['model']['kwargs']}
    assert_same_model(build(old['name'], {**old['kwargs'], **extra}),
                      build(new['model']['name'], {**new['model']['kwargs'], **extra}), dropped)


@pytest.mark.parametrize('name,changed', [('liegroup_gl2_small', {'rotation_range': 0.25}),  # a sampler setting
                                           ('liegroup_gl2_small', {'eval_seed': 1}),  # a model attribute
                                           ('unireplknet_a', {'kernel_backend': 'torch'})])  # a block attribute
def test_the_model_comparison_sees_a_changed_setting(name, changed):
    with pytest.raises(AssertionError, match='module attributes differ'):
        assert_same_model(build(name, changed), build(name, {}), changed)


def test_run_name_is_the_experiment_choice_and_can_be_overridden(tmp_path):
    for path in (CONFIGS / 'experiment').rglob('*.yaml'):
        assert 'run_name' not in OmegaConf.load(path), f"{path.name} sets its own run_name"
    cfg = compose_cfg('train', ['experiment=lra/s4d_listops'], tmp_path)
    assert cfg.run_name == 'lra/s4d_listops'
    assert cfg.hydra.run.dir.startswith(f'{cfg.paths.root}/lra/s4d_listops/')
    cfg = compose_cfg('train', ['experiment=lra/s4d_listops', 'run_name=mine'], tmp_path)
    assert cfg.run_name == 'mine' and cfg.hydra.run.dir.startswith(f'{cfg.paths.root}/mine/')


def test_last_checkpoint_is_found_under_a_run_name_with_a_group(tmp_path):
    from zoo.train import find_last_checkpoint
    for run, mtime in (('lra/s4d_listops/2020-01-01_00-00-00', 1), ('lra/s4d_listops/2020-01-02_00-00-00', 2),
                       ('lra/s4d_listops_cpu/2020-01-03_00-00-00', 3)):
        ckpt = tmp_path / run / 'checkpoints' / 'last.ckpt'
        ckpt.parent.mkdir(parents=True)
        torch.save({'state_dict': {}, 'epoch': 0, 'global_step': mtime}, ckpt)  # find_last_checkpoint reads it
        os.utime(ckpt, (mtime, mtime))
    cfg = compose_cfg('train', ['experiment=lra/s4d_listops', f'paths.root={tmp_path}', 'ckpt_path=last'], tmp_path)
    assert find_last_checkpoint(cfg) == str(tmp_path / 'lra/s4d_listops/2020-01-02_00-00-00/checkpoints/last.ckpt')


def test_wandb_logger_is_named_after_the_run(tmp_path):
    cfg = compose_cfg('train', ['experiment=imagenet/unireplknet_a', 'logger=wandb'], tmp_path)
    assert cfg.logger.wandb.name == 'imagenet/unireplknet_a'
    assert cfg.logger.wandb.save_dir == str(tmp_path / 'run')


def test_empty_model_kwargs_give_the_model_its_data_kwargs_only(tmp_path):
    from zoo.train import resolve_model_kwargs
    data = SimpleNamespace(num_classes=10, in_chans=1)
    cfg = compose_cfg('train', [], tmp_path)
    assert resolve_model_kwargs(cfg.model, data) == {'num_classes': 10, 'in_chans': 1}
    cfg = compose_cfg('evaluate', ['model.name=inceptionnext_atto', 'model.data_kwargs=[num_classes]'], tmp_path)
    assert resolve_model_kwargs(cfg.model, data) == {'num_classes': 10}


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--write-fixture', action='store_true', help=f'write {FIXTURE.relative_to(REPO)}')
    if parser.parse_args().write_fixture:
        write_fixture()
