"""The training path shared by every experiment: Hydra config -> DataModule + LitClassifier -> Lightning Trainer.

Faults it survives or reports:
- a run killed at any point (even SIGKILL) resumes with `ckpt_path=last` from the newest `last.ckpt` of its run_name,
  written at the end of every epoch (atomically, by Lightning), and ends with the optimizer steps of an unbroken run;
- a checkpoint that cannot be read (truncated, corrupted, pickled code) is reported before training starts, and
  with `ckpt_path=last` the newest readable checkpoint of the same run_name is named;
- two runs never share a folder (`UniqueRunDir`, a Hydra callback of train.yaml and evaluate.yaml);
- a DataModule without a held-out test split (`has_test_split = False`) gets no `test/*` metrics: its val split
  selects checkpoints, so it is not reported as test.
"""
import difflib
import glob
import itertools
import os
from typing import Any, Optional

import pytorch_lightning as pl
import timm
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, read_write

import zoo  # noqa: F401  (registers the zoo models)
from zoo.lit import LitClassifier
from zoo.models._pretrained import WeightsError, read_weights_file

__all__ = ['run', 'build_datamodule', 'resolve_model_kwargs', 'check_model_name', 'check_checkpoint',
           'find_last_checkpoint', 'CheckpointError', 'UniqueRunDir', 'claim_dir']


class CheckpointError(WeightsError):
    """A training checkpoint that cannot be resumed from or evaluated; the message names the file and why."""


def check_model_name(name: Optional[str]) -> str:
    if not name:
        raise ValueError("no model name: set model.name (a timm model name, e.g. inceptionnext_atto)")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model name {name!r} in config model.name{hint}")
    return name


def build_datamodule(data_cfg: DictConfig) -> pl.LightningDataModule:
    """Instantiate and set up the DataModule, so that the attributes models need (num_classes...) are known."""
    datamodule = instantiate(data_cfg, _convert_='all')
    datamodule.prepare_data()
    datamodule.setup('fit')
    return datamodule


def resolve_model_kwargs(model_cfg: DictConfig, datamodule) -> dict:
    """Model kwargs from the config plus the DataModule attributes listed in `model.data_kwargs`."""
    kwargs = model_cfg.get('kwargs')  # an empty DictConfig is falsy: `or {}` would hand to_container a plain dict
    kwargs = OmegaConf.to_container(kwargs, resolve=True) if kwargs is not None else {}
    for key in model_cfg.get('data_kwargs') or ():
        value = getattr(datamodule, key, None)
        if value is None:
            raise ValueError(f"model.data_kwargs asks for {key!r}, which {type(datamodule).__name__} does not provide")
        if key in kwargs and kwargs[key] != value:
            raise ValueError(f"model.kwargs.{key}={kwargs[key]} contradicts the data ({key}={value})")
        kwargs[key] = value
    return kwargs


def check_checkpoint(path) -> dict:
    """What a Lightning training checkpoint says about itself ({'epoch', 'global_step'}), after reading the whole
    file safely (weights_only=True); CheckpointError naming the file and the reason if it cannot be used."""
    try:
        checkpoint = read_weights_file(path)
    except WeightsError as e:
        raise CheckpointError(str(e)) from None
    if not isinstance(checkpoint.get('state_dict'), dict) or 'global_step' not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning training checkpoint (no state_dict / global_step); plain "
                              f"weights go through model.kwargs.pretrained_cfg_overlay instead")
    return {'epoch': checkpoint.get('epoch'), 'global_step': checkpoint['global_step']}


def find_last_checkpoint(cfg: DictConfig) -> str:
    """`ckpt_path=last`: the newest last.ckpt among earlier runs of the same run_name, checked to be readable.

    If it is not, the error names it and the newest readable checkpoint (any *.ckpt of those runs) to resume from.
    """
    run_root = os.path.join(cfg.paths.root, str(cfg.run_name))
    pattern = os.path.join(run_root, '*', 'checkpoints', 'last.ckpt')
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"ckpt_path=last: no earlier run to resume, nothing matches {pattern}")
    newest = found[-1]
    try:
        check_checkpoint(newest)
        return newest
    except CheckpointError as e:
        problem = str(e)
    others = sorted((p for p in glob.glob(os.path.join(run_root, '*', 'checkpoints', '*.ckpt')) if p != newest),
                    key=os.path.getmtime, reverse=True)
    for candidate in others:
        try:
            info = check_checkpoint(candidate)
        except CheckpointError:
            continue
        raise CheckpointError(
            f"ckpt_path=last: the newest checkpoint cannot be resumed from: {problem}. The previous good one is "
            f"{candidate} (epoch {info['epoch']}, step {info['global_step']}); resume from it with "
            f"ckpt_path={candidate}, or delete the broken file")
    raise CheckpointError(f"ckpt_path=last: the newest checkpoint cannot be resumed from: {problem}. No other "
                          f"checkpoint under {run_root} is readable; start afresh (without ckpt_path)")


def claim_dir(base: str) -> str:
    """Create and return `base`, or `base_1`, `base_2`, ... if taken: the first name nobody else has created. mkdir
    is atomic, so processes that race for the same name each get their own folder."""
    parent = os.path.dirname(base)
    if parent:
        os.makedirs(parent, exist_ok=True)
    for i in itertools.count():
        path = base if i == 0 else f"{base}_{i}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue


class UniqueRunDir(Callback):
    """Hydra callback: every run (and every multirun sweep) gets a folder of its own.

    The default folders carry a timestamp to the second (`outputs/<run_name>/<date>_<time>`), so two runs of the
    same run_name started in the same second would share one. This claims the folder before Hydra uses it, adding
    `_1`, `_2`, ... when it exists. Folders given literally (`hydra.run.dir=...`, as Lightning's DDP launcher does for
    its worker processes) are used as given.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        self._claim(config, 'run')

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        path = self._claim(config, 'sweep')
        if path is not None:
            # Each job's config is composed again from the overrides: pass the claimed folder on to them.
            quoted = "'" + path.replace('\\', '\\\\').replace("'", "\\'") + "'"
            with read_write(config.hydra):
                config.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted}")

    @staticmethod
    def _claim(config: DictConfig, mode: str) -> Optional[str]:
        node = config.hydra[mode]
        if '${now:' not in str(OmegaConf.to_container(node, resolve=False).get('dir')):
            return None
        HydraConfig.instance().set_config(config)  # for ${hydra:...} in the folder name (Hydra sets it again later)
        path = claim_dir(str(node.dir))
        with read_write(config.hydra):
            node.dir = path
        return path


def _instantiate_group(group_cfg: Optional[DictConfig]) -> list:
    if not group_cfg:
        return []
    return [instantiate(c, _convert_='all') for c in group_cfg.values() if c is not None and '_target_' in c]


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) one experiment; returns the final metrics as plain floats."""
    pl.seed_everything(cfg.seed, workers=True)
    check_model_name(cfg.model.name)
    datamodule = build_datamodule(cfg.data)
    model_kwargs = resolve_model_kwargs(cfg.model, datamodule)
    module = LitClassifier(
        model_name=cfg.model.name,
        model_kwargs=model_kwargs,
        pretrained=bool(cfg.model.get('pretrained', False)),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        sched=OmegaConf.to_container(cfg.sched, resolve=True),
        loss=OmegaConf.to_container(cfg.loss, resolve=True),
        ema_decay=cfg.get('ema_decay'),
        compile=bool(cfg.get('compile', False)),
    )
    callbacks = _instantiate_group(cfg.get('callbacks'))
    loggers = _instantiate_group(cfg.get('logger'))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_='all')

    ckpt_path = cfg.get('ckpt_path')
    if ckpt_path == 'last':
        ckpt_path = find_last_checkpoint(cfg)
    elif ckpt_path:
        check_checkpoint(ckpt_path)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ''
        if cfg.get('test') and hasattr(datamodule, 'test_dataloader'):
            if getattr(datamodule, 'has_test_split', True):
                test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False,
                                            weights_only=True)
                metrics.update({k: float(v) for k, v in test_metrics[0].items()})
            elif trainer.is_global_zero:
                print(f"no test metrics: {type(datamodule).__name__} has no held-out test split (its val split "
                      f"selects checkpoints); see its data.test_* option")
    finally:
        if any(type(lg).__name__ == 'WandbLogger' for lg in loggers):
            import wandb
            wandb.finish()  # one wandb run per job, also in multiruns

    if trainer.is_global_zero:
        _report(metrics, best, loggers, trainer)
    return metrics


def _report(metrics: dict, best_ckpt: str, loggers: list, trainer: pl.Trainer) -> None:
    print("\nfinal metrics:")
    for key in sorted(metrics):
        print(f"  {key:<20s} {metrics[key]:.4g}")
    if best_ckpt:
        print(f"best checkpoint:  {best_ckpt}")
    if trainer.checkpoint_callback and trainer.checkpoint_callback.last_model_path:
        print(f"last checkpoint:  {trainer.checkpoint_callback.last_model_path}")
    for lg in loggers:
        if type(lg).__name__ == 'CSVLogger':
            print(f"metrics CSV:      {os.path.join(lg.log_dir, 'metrics.csv')}")
