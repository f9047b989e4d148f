"""The training path shared by every experiment: Hydra config -> DataModule + LitClassifier -> Lightning Trainer."""
import difflib
import glob
import os
from typing import Any, Optional

import pytorch_lightning as pl
import timm
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import zoo  # noqa: F401  (registers the zoo models)
from zoo.lit import LitClassifier

__all__ = ['run', 'build_datamodule', 'resolve_model_kwargs', 'check_model_name']


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


def find_last_checkpoint(cfg: DictConfig) -> str:
    """`ckpt_path=last`: the newest last.ckpt among earlier runs of the same run_name."""
    pattern = os.path.join(cfg.paths.root, str(cfg.run_name), '*', 'checkpoints', 'last.ckpt')
    found = sorted(glob.glob(pattern), key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"ckpt_path=last: no earlier run to resume, nothing matches {pattern}")
    return found[-1]


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
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ''
        if cfg.get('test') and hasattr(datamodule, 'test_dataloader'):
            test_metrics = trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            metrics.update({k: float(v) for k, v in test_metrics[0].items()})
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
