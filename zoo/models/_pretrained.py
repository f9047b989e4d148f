"""Pretrained weights: read weights files safely, and turn a failed `pretrained=True` into an error that says what is
wrong and how to get working weights.

Every family's `_create_*` builds its model inside `pretrained_weights(variant, pretrained, kwargs)`:
- `pretrained=True` for a model without published weights (and no `pretrained_cfg_overlay` file / state_dict) is an
  error, not timm's warning and a randomly initialised model;
- a download that fails (offline, no route, HTTP error) names the file the model needs, where it comes from, and the
  two ways to get it: `python -m zoo.weights download NAME` or `pretrained_cfg_overlay=dict(file=...)`;
- a file that cannot be read (missing, empty, truncated, not a checkpoint, pickled Python objects: never unpickled)
  or whose tensors do not fit the model (another architecture, other shapes) is named with the reason.
Errors raised while building the model itself (bad arguments), and a family's checkpoint filter's own ValueError
(e.g. a UniRepLKNet checkpoint of another variant), pass through unchanged.
"""
import contextlib
import os
import re
from pathlib import Path
from typing import Dict, Optional

import safetensors.torch
import torch
import torch.nn as nn
from timm.models import resolve_pretrained_cfg

__all__ = ['WeightsError', 'read_weights_file', 'describe_mismatch', 'pretrained_weights', 'download_hint']


class WeightsError(RuntimeError):
    """A weights file, a download or a checkpoint that cannot be used; the message says why and what to do."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def read_weights_file(path) -> Dict:
    """The object in a .pth / .pt / .bin / .ckpt (torch.load with weights_only=True) or .safetensors file.

    Raises WeightsError for a missing or empty file, one that is truncated or not a checkpoint at all, one that
    holds pickled Python objects besides tensors (refused; nothing in it is run) and one that holds no dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: empty file")
    try:
        if path.suffix == '.safetensors':
            return safetensors.torch.load_file(str(path), device='cpu')
        obj = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        if 'Unsupported global' in str(e):  # torch's weights-only unpickler met a class or function to call
            raise WeightsError(
                f"{path}: holds Python objects besides tensors, so it is refused (read with weights_only=True: no "
                f"pickled code in it was run); save a plain state_dict or a safetensors file instead") from None
        detail = re.search(r'WeightsUnpickler error:\s*(.+)', str(e))  # e.g. garbage read as pickle opcodes
        raise WeightsError(f"{path}: not a readable checkpoint (truncated, corrupted or not a PyTorch/safetensors "
                           f"file): {detail.group(1).strip() if detail else _first_line(e)}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    return obj


def describe_mismatch(state_dict: Dict[str, torch.Tensor], model: nn.Module, limit: int = 5) -> str:
    """Which tensors keep `state_dict` from loading into `model`, with a hint for the stem and the classifier."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [k for k in expected if k in state_dict and hasattr(state_dict[k], 'shape')
                  and state_dict[k].shape != expected[k].shape]

    def listing(kind, keys, fmt=str):
        more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ''
        return f"{len(keys)} {kind}: {', '.join(fmt(k) for k in keys[:limit])}{more}"

    problems = []
    if mismatched:
        problems.append(listing('with a different shape', mismatched, lambda k: (
            f"{k} checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}")))
    if missing:
        problems.append(listing('missing from the checkpoint', missing))
    if unexpected:
        problems.append(listing('unexpected in the checkpoint', unexpected))
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    first_conv, classifier = cfg.get('first_conv'), cfg.get('classifier')
    hints = []
    if isinstance(first_conv, str) and f'{first_conv}.weight' in mismatched:
        hints.append(f"the checkpoint's stem takes in_chans={state_dict[first_conv + '.weight'].shape[1]}")
    if isinstance(classifier, str) and f'{classifier}.weight' in mismatched:
        hints.append(f"the checkpoint's classifier has num_classes={state_dict[classifier + '.weight'].shape[0]}")
    if missing and len(unexpected) > len(state_dict) // 2:
        hints.append("most of its names are unknown to the model: the file looks like weights of another "
                     "architecture")
    hint = f" ({'; '.join(hints)})" if hints else ''
    return '; '.join(problems) + hint


def _source(cfg: Dict) -> Optional[str]:
    """Where timm would take the weights from, in its order of priority (None: nowhere)."""
    if cfg.get('state_dict') is not None:
        return 'state_dict'
    if cfg.get('file'):
        return 'file'
    if cfg.get('hf_hub_id'):
        return 'hf-hub'
    if cfg.get('url'):
        return 'url'
    return None


def _local_name(full_name: str, cfg: Dict) -> str:
    """The file `python -m zoo.weights download` writes: checkpoints/<arch>.<tag> with the source file's suffix."""
    hub_file = cfg.get('hf_hub_filename') or ('model.safetensors' if cfg.get('hf_hub_id') else '')
    source_file = hub_file or os.path.basename(cfg.get('url') or '')
    suffix = '.safetensors' if source_file.endswith('.safetensors') else '.pth'
    return os.path.join('checkpoints', full_name + suffix)


def download_hint(full_name: str, cfg: Dict) -> str:
    """The file a pretrained model needs, where it comes from, and the two ways to get it."""
    arch = full_name.split('.')[0]
    where = []
    if cfg.get('hf_hub_id'):
        hub_file = cfg.get('hf_hub_filename') or 'model.safetensors'
        where.append(f"{hub_file} of hf-hub:{cfg['hf_hub_id']}")
    if cfg.get('url'):
        where.append(cfg['url'])
    local = _local_name(full_name, cfg)
    return (f"It needs the file {' or '.join(where)}. Two ways to get it: (1) `python -m zoo.weights download "
            f"{full_name}` where the network is reachable (hash-checked, into checkpoints/; --url / --hf-endpoint "
            f"for a mirror), then timm.create_model({arch!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file={local!r})); or (2) copy that file here by any means and pass its "
            f"path the same way: pretrained_cfg_overlay=dict(file='/path/to/the/file').")


def _frames(tb):
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


@contextlib.contextmanager
def pretrained_weights(variant: str, pretrained: bool, kwargs: Dict):
    """Build a model inside this context to get the errors described in the module docstring. `kwargs` are the
    model factory's keyword arguments (read, not changed: `pretrained_cfg` and `pretrained_cfg_overlay`)."""
    if not pretrained:
        yield
        return
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=kwargs.get('pretrained_cfg'),
                                 pretrained_cfg_overlay=kwargs.get('pretrained_cfg_overlay')).to_dict()
    full_name = f"{variant}.{cfg['tag']}" if cfg.get('tag') else variant
    source = _source(cfg)
    if source is None:
        raise WeightsError(
            f"No pretrained weights are published for {full_name} (pretrained=True): train it (the README's Train "
            f"section) or load your own file with pretrained_cfg_overlay=dict(file='/path/to/weights.safetensors')")
    try:
        yield
    except Exception as e:
        loader = next((f for f in _frames(e.__traceback__) if f.f_code.co_name == 'load_pretrained'
                       and 'timm' in f.f_code.co_filename), None)
        if loader is None:
            raise  # not raised while loading weights: a bad model argument, reported as it is
        where = {'state_dict': 'the given state_dict', 'file': cfg.get('file'),
                 'hf-hub': f"hf-hub:{cfg.get('hf_hub_id')}", 'url': cfg.get('url')}[source]
        state_dict, model = loader.f_locals.get('state_dict'), loader.f_locals.get('model')
        if isinstance(state_dict, dict) and model is not None:
            # The weights were read but do not fit. A family's checkpoint filter explains itself (ValueError).
            if isinstance(e, ValueError):
                raise
            detail = describe_mismatch(state_dict, model) or _first_line(e)
            raise WeightsError(f"{full_name}: the pretrained weights from {where} do not fit this model: "
                               f"{detail}") from None
        if source == 'file':
            try:
                read_weights_file(cfg['file'])
            except WeightsError as reason:
                raise WeightsError(f"{full_name}: pretrained_cfg_overlay file {reason}") from None
            raise WeightsError(f"{full_name}: cannot load {cfg['file']}: {_first_line(e)}") from e
        if source == 'state_dict':
            raise
        raise WeightsError(f"{full_name}: the pretrained weights could not be downloaded ({type(e).__name__}: "
                           f"{_first_line(e)}). {download_hint(full_name, cfg)}") from e
