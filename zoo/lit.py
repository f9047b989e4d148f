"""The one LightningModule: image and sequence classification around any timm model.

The network is built from its timm name plus keyword arguments, so the hyperparameters saved in a checkpoint are a
few strings and numbers and `LitClassifier.load_from_checkpoint(path)` rebuilds the exact model. Everything that
timm already does (optimizer factory, layer decay, schedulers, Mixup/CutMix, soft-target losses, weight EMA) is
used from timm rather than written again here.

Batches are `(x, y)` or `(x, y, extras)`; `extras` is a dict of keyword arguments for `model.forward`
(e.g. `lengths` for padded token sequences).

Only registered timm / zoo models are built: a checkpoint whose hyperparameters name anything else (a module path, a
class, an `hf-hub:` or `local-dir:` source) is refused before anything is instantiated or downloaded, and
`load_from_checkpoint` reads files with `weights_only=True` and builds the model with `pretrained=False` (the weights
come from the checkpoint).
"""
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2, param_groups_layer_decay, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from zoo.models._pretrained import WeightsError, read_weights_file

__all__ = ['LitClassifier', 'split_optim_groups', 'check_model_spec']


def check_model_spec(model_name, model_kwargs) -> None:
    """Refuse (ValueError) anything but a registered timm / zoo model name with a dict of keyword arguments."""
    if not isinstance(model_name, str) or ':' in model_name or not timm.is_model(model_name):
        raise ValueError(f"LitClassifier: model_name must be a registered timm or zoo model name (see "
                         f"timm.list_models()), got {model_name!r}; nothing else is instantiated (a checkpoint's "
                         f"hyperparameters cannot name other classes or model sources)")
    if model_kwargs is not None and not (isinstance(model_kwargs, dict) and all(isinstance(k, str)
                                                                               for k in model_kwargs)):
        raise ValueError(f"LitClassifier: model_kwargs must be a dict of keyword arguments for "
                         f"timm.create_model({model_name!r}, ...), got {type(model_kwargs).__name__}")


def split_optim_groups(param_groups: list[dict]) -> list[dict]:
    """Move parameters carrying an `_optim` dict (s4 convention, e.g. SSM lr / no decay) into their own groups.

    The remaining groups keep timm's weight-decay / layer-decay settings; each distinct `_optim` setting becomes one
    extra group with its own absolute lr / weight decay, which the scheduler then shapes like every other group.
    """
    out, extra = [], {}
    for group in param_groups:
        plain = [p for p in group['params'] if not hasattr(p, '_optim')]
        for p in group['params']:
            if hasattr(p, '_optim'):
                key = tuple(sorted(p._optim.items()))
                extra.setdefault(key, []).append(p)
        if plain:
            out.append({**group, 'params': plain})
    for key, params in extra.items():
        out.append({'params': params, **dict(key)})
    return out


class LitClassifier(pl.LightningModule):
    """Classification with a timm model.

    Args:
        model_name: any name `timm.create_model` knows (zoo models once `zoo` is imported).
        model_kwargs: keyword arguments for `timm.create_model` (num_classes, in_chans, drop_path_rate, ...).
        pretrained: load the model's pretrained weights when building it.
        optim: opt, lr (absolute) or base_lr + base_batch (scaled linearly to the global batch), weight_decay,
            momentum, layer_decay, opt_kwargs (betas, eps, ...).
        sched: timm scheduler name `sched` plus warmup_epochs, warmup_lr, min_lr, ...; stepped every optimizer step.
        loss: label_smoothing, and mixup / cutmix settings (timm Mixup arguments; images only).
        ema_decay: keep an EMA of the weights (timm ModelEmaV3) and validate it separately.
        compile: torch.compile the model.
    """

    def __init__(
            self,
            model_name: str,
            model_kwargs: Optional[dict] = None,
            pretrained: bool = False,
            optim: Optional[dict] = None,
            sched: Optional[dict] = None,
            loss: Optional[dict] = None,
            ema_decay: Optional[float] = None,
            compile: bool = False,
    ):
        super().__init__()
        check_model_spec(model_name, model_kwargs)
        self.save_hyperparameters()
        self.model = timm.create_model(model_name, pretrained=pretrained, **(model_kwargs or {}))
        self.num_classes = self.model.num_classes
        if self.num_classes < 2:
            raise ValueError(f"{model_name}: a classifier needs num_classes >= 2, got {self.num_classes}")
        self.model_ema = ModelEmaV3(self.model, decay=ema_decay) if ema_decay else None
        if compile:
            self.model = torch.compile(self.model)

        loss = dict(loss or {})
        smoothing = loss.pop('label_smoothing', 0.0)
        self.mixup = None
        if loss.get('mixup_alpha', 0) > 0 or loss.get('cutmix_alpha', 0) > 0 or loss.get('cutmix_minmax'):
            self.mixup = Mixup(label_smoothing=smoothing, num_classes=self.num_classes, **loss)
            self.train_criterion = SoftTargetCrossEntropy()
        elif smoothing > 0:
            self.train_criterion = LabelSmoothingCrossEntropy(smoothing=smoothing)
        else:
            self.train_criterion = nn.CrossEntropyLoss()

        top5 = min(5, self.num_classes)
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(self.num_classes, average='micro')
        self.val_acc = MulticlassAccuracy(self.num_classes, average='micro')
        self.val_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average='micro')
        self.val_acc_best = MaxMetric()
        self.val_ema_acc = MulticlassAccuracy(self.num_classes, average='micro')
        self.test_acc = MulticlassAccuracy(self.num_classes, average='micro')
        self.test_acc5 = MulticlassAccuracy(self.num_classes, top_k=top5, average='micro')

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's loader with safe defaults: `weights_only=True`, and `pretrained=False` (the checkpoint holds
        the weights, nothing is downloaded). A file that cannot be read raises zoo's WeightsError naming the reason;
        hyperparameters naming anything but a registered model are refused (`check_model_spec`)."""
        kwargs.setdefault('weights_only', True)
        kwargs.setdefault('pretrained', False)
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except Exception:
            if not isinstance(checkpoint_path, (str, Path)):
                raise
            try:
                read_weights_file(checkpoint_path)
            except WeightsError as reason:  # the file itself is the problem: say so instead of torch's message
                raise WeightsError(f"LitClassifier.load_from_checkpoint: {reason}") from None
            raise

    @staticmethod
    def network_prefix(ema: bool = False) -> str:
        """Where the network's (or its EMA's) tensors sit in this module's state dict."""
        return 'model_ema.module.' if ema else 'model.'

    @staticmethod
    def network_state_dict(checkpoint_state_dict: dict, ema: bool = False) -> dict:
        """The timm model's own state dict (or its EMA's) inside a LitClassifier checkpoint's `state_dict`.

        Names lose the module's attribute prefix (`model.` / `model_ema.module.`) and torch.compile's `_orig_mod.`,
        so `timm.create_model(name).load_state_dict(...)` takes the result. Empty if the checkpoint has no such part.
        """
        prefix = LitClassifier.network_prefix(ema)
        return {k[len(prefix):].removeprefix('_orig_mod.'): v
                for k, v in checkpoint_state_dict.items() if k.startswith(prefix)}

    # ---- forward ----

    @staticmethod
    def unpack(batch):
        x, y, *rest = batch
        extras = rest[0] if rest else {}
        return x, y, extras

    def forward(self, x, **extras):
        return self.model(x, **extras)

    # ---- steps ----

    def training_step(self, batch, batch_idx):
        x, y, extras = self.unpack(batch)
        target = y
        if self.mixup is not None:
            if x.shape[0] % 2:
                raise ValueError("Mixup/CutMix needs an even batch size (use drop_last=True for training)")
            x, target = self.mixup(x, y)
        logits = self(x, **extras)
        loss = self.train_criterion(logits, target)
        self.train_loss(loss.detach())
        self.train_acc(logits.detach(), y)
        self.log('train/loss', self.train_loss, on_step=True, on_epoch=True, prog_bar=True)
        self.log('train/acc', self.train_acc, on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def validation_step(self, batch, batch_idx):
        x, y, extras = self.unpack(batch)
        logits = self(x, **extras)
        self.log('val/loss', F.cross_entropy(logits, y), on_epoch=True, prog_bar=True, sync_dist=True)
        self.val_acc(logits, y)
        self.val_acc5(logits, y)
        self.log('val/acc', self.val_acc, on_epoch=True, prog_bar=True)
        self.log('val/acc5', self.val_acc5, on_epoch=True)
        if self.model_ema is not None:
            self.val_ema_acc(self.model_ema(x, **extras), y)
            self.log('val_ema/acc', self.val_ema_acc, on_epoch=True)

    def on_validation_epoch_end(self):
        if not self.trainer.sanity_checking:
            self.val_acc_best(self.val_acc.compute())
            self.log('val/acc_best', self.val_acc_best.compute(), prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        x, y, extras = self.unpack(batch)
        model = self.model_ema if self.model_ema is not None else self.model
        logits = model(x, **extras)
        self.log('test/loss', F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.test_acc(logits, y)
        self.test_acc5(logits, y)
        self.log('test/acc', self.test_acc, on_epoch=True)
        self.log('test/acc5', self.test_acc5, on_epoch=True)

    # ---- optimization ----

    def global_batch_size(self) -> Optional[int]:
        batch_size = getattr(self.trainer.datamodule, 'batch_size', None) if self.trainer.datamodule else None
        if batch_size is None:
            return None
        return batch_size * self.trainer.world_size * self.trainer.accumulate_grad_batches

    def resolve_lr(self, optim: dict) -> float:
        if optim.get('lr') is not None:
            return float(optim['lr'])
        global_batch = self.global_batch_size()
        if global_batch is None:
            raise ValueError("optim.base_lr needs the datamodule's batch_size to scale the lr; set optim.lr instead")
        # Linear scaling rule, as in the official recipes: lr = base_lr * global_batch / base_batch.
        return float(optim['base_lr']) * global_batch / float(optim.get('base_batch', 256))

    def configure_optimizers(self):
        optim = dict(self.hparams.optim or {})
        lr = self.resolve_lr(optim)
        weight_decay = optim.get('weight_decay', 0.0)
        layer_decay = optim.get('layer_decay')
        no_decay = set(self.model.no_weight_decay()) if hasattr(self.model, 'no_weight_decay') else set()

        def group_fn(model):
            # timm's own weight-decay / layer-decay grouping, then parameters that ask for their own settings.
            if layer_decay is not None:
                groups = param_groups_layer_decay(
                    model, weight_decay=weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay)
            else:
                groups = param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=no_decay)
            return split_optim_groups(groups)

        optimizer = create_optimizer_v2(
            self.model, opt=optim.get('opt', 'adamw'), lr=lr, weight_decay=weight_decay,
            momentum=optim.get('momentum', 0.9), param_group_fn=group_fn, **optim.get('opt_kwargs', {}))

        sched = dict(self.hparams.sched or {})
        if not sched or sched.get('sched') in (None, 'none'):
            return optimizer
        epochs = self.trainer.max_epochs
        if epochs is None or epochs < 1:
            raise ValueError("a learning-rate schedule needs trainer.max_epochs")
        updates_per_epoch = max(1, int(self.trainer.estimated_stepping_batches) // epochs)
        scheduler, _ = create_scheduler_v2(
            optimizer, num_epochs=epochs, step_on_epochs=False, updates_per_epoch=updates_per_epoch, **sched)
        return {'optimizer': optimizer, 'lr_scheduler': {'scheduler': scheduler, 'interval': 'step'}}

    def lr_scheduler_step(self, scheduler, metric: Any):
        # timm schedulers are driven by the number of optimizer updates, not by torch's LRScheduler API.
        scheduler.step_update(num_updates=self.global_step)

    def on_train_epoch_end(self):
        for i, group in enumerate(self.optimizers().param_groups):
            self.log(f'lr/group{i}', group['lr'], on_epoch=True)
