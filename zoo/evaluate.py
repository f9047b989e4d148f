"""Evaluate a training checkpoint or a pretrained timm model on a DataModule; write timm validate.py columns."""
import csv
import json
import os
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from zoo.lit import LitClassifier, check_model_spec
from zoo.models._pretrained import read_weights_file
from zoo.train import build_datamodule, check_model_name, resolve_model_kwargs

__all__ = ['run', 'RESULT_COLUMNS']

RESULT_COLUMNS = ('model', 'top1', 'top1_err', 'top5', 'top5_err', 'param_count', 'img_size', 'crop_pct',
                  'interpolation')


def _load_module(cfg: DictConfig, datamodule) -> LitClassifier:
    if cfg.get('ckpt'):
        if not os.path.isfile(cfg.ckpt):
            raise FileNotFoundError(f"checkpoint {cfg.ckpt} does not exist")
        # pretrained=False: the checkpoint has the weights, nothing is downloaded again.
        module = LitClassifier.load_from_checkpoint(cfg.ckpt, map_location='cpu', pretrained=False, weights_only=True)
        if not cfg.get('use_ema', True) and module.model_ema is not None:
            module.model_ema = None
        return module
    name = check_model_name(cfg.model.name)
    return LitClassifier(name, resolve_model_kwargs(cfg.model, datamodule), pretrained=cfg.model.pretrained)


def run(cfg: DictConfig) -> dict[str, Any]:
    if not cfg.get('ckpt') and not cfg.model.get('name'):
        raise ValueError("nothing to evaluate: give ckpt=<file.ckpt> or model.name=<timm name>")
    if cfg.get('ckpt') and os.path.isfile(cfg.ckpt):
        # The data config may interpolate ${model.name} (e.g. for the pretrained cfg's transforms). The file is read
        # safely (a clear error if it is truncated or holds pickled objects) and must name a registered model.
        hparams = read_weights_file(cfg.ckpt).get('hyper_parameters') or {}
        check_model_spec(hparams.get('model_name'), hparams.get('model_kwargs'))
        with open_dict(cfg):
            cfg.model.name = hparams['model_name']
    datamodule = build_datamodule(cfg.data)
    module = _load_module(cfg, datamodule)
    trainer: pl.Trainer = instantiate(cfg.trainer, _convert_='all')
    loader = datamodule.val_dataloader() if cfg.split == 'val' else datamodule.test_dataloader()
    metrics = trainer.test(module, dataloaders=loader, verbose=False)[0]

    model = module.model
    pretrained_cfg = getattr(model, 'pretrained_cfg', {}) or {}
    top1, top5 = 100 * metrics['test/acc'], 100 * metrics['test/acc5']
    img_size = getattr(datamodule, 'img_size', None) or pretrained_cfg.get('input_size', (None, None))[-1]
    if hasattr(datamodule, 'data_config'):
        data_cfg = datamodule.data_config()
        img_size, crop_pct, interpolation = data_cfg['input_size'][-1], data_cfg['crop_pct'], data_cfg['interpolation']
    else:
        crop_pct, interpolation = pretrained_cfg.get('crop_pct'), pretrained_cfg.get('interpolation')
    row = {
        'model': module.hparams.model_name,
        'top1': round(top1, 4), 'top1_err': round(100 - top1, 4),
        'top5': round(top5, 4), 'top5_err': round(100 - top5, 4),
        'param_count': round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        'img_size': img_size, 'crop_pct': crop_pct, 'interpolation': interpolation,
    }
    os.makedirs(cfg.paths.output_dir, exist_ok=True)
    base = os.path.join(cfg.paths.output_dir, cfg.results_name)
    with open(base + '.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS)
        writer.writeheader()
        writer.writerow(row)
    with open(base + '.json', 'w') as f:
        json.dump(row, f, indent=2)
    print(json.dumps(row, indent=2))
    print(f"results: {base}.csv, {base}.json")
    return row
