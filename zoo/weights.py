"""Pretrained weights of the zoo: `python -m zoo.weights list | download | verify | export`.

- `list`: every zoo `arch.tag` with weights and where they come from (HF hub id and/or URL).
- `download NAME[.TAG]`: fetch through timm's own download paths (`torch.hub` with a progress bar and the hash
  prefix in the file name, or `huggingface_hub.hf_hub_download`, checked against the hub's sha256) into
  `checkpoints/`. The file is written inside a temporary folder there and renamed only once its hash, its loading and
  its fit to the model have been checked, so a failed download leaves nothing behind.
- `verify FILE [--sha256 HEX] [--model NAME]`: the hash, that the file loads (`weights_only=True` / safetensors)
  and, with `--model`, that timm loads it into that model, naming any missing, unexpected or mis-shaped tensors.
- `export CKPT OUT.safetensors [--ema]`: a `zoo.lit.LitClassifier` checkpoint to a plain state dict that
  `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=OUT))` loads.

All loading is `torch.load(..., weights_only=True)` or safetensors.
"""
import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import safetensors.torch
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.models._hub import download_cached_file

from zoo._cli import ModelKwargsAction
from zoo.lit import LitClassifier
from zoo.models import unwrap_state_dict, zoo_model_names
from zoo.models._pretrained import WeightsError, describe_mismatch, read_weights_file

__all__ = ['WeightsError', 'download', 'verify', 'export', 'read_checkpoint', 'read_state_dict', 'check_fits', 'main']

DEFAULT_DIR = Path('checkpoints')


# ---------------------------------------------------------------------------------------------------- reading

def sha256_of(path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def check_sha256(path, expected: str):
    """`expected` may be a full hex digest or a prefix of one (as in timm/torch.hub file names)."""
    expected = expected.lower()
    actual = sha256_of(path)
    if not expected or not actual.startswith(expected):
        raise WeightsError(f"{path}: sha256 mismatch: expected {expected}, got {actual}")


def read_checkpoint(path) -> Dict:
    """The raw object in a checkpoint file, loaded safely; a clear error for anything that is not a checkpoint
    (missing, empty, truncated, random bytes, pickled Python objects: refused without running them)."""
    return read_weights_file(path)


def _is_lightning(checkpoint: Dict) -> bool:
    return 'pytorch-lightning_version' in checkpoint or 'hyper_parameters' in checkpoint


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """A plain {name: tensor} dict from a weights file (unwrapping `state_dict` / `model` like timm does)."""
    checkpoint = read_checkpoint(path)
    if _is_lightning(checkpoint):
        raise WeightsError(f"{path}: a Lightning checkpoint; turn it into weights first with "
                           f"`python -m zoo.weights export {path} OUT.safetensors`")
    state_dict = {k: v for k, v in unwrap_state_dict(checkpoint).items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise WeightsError(f"{path}: contains no tensors")
    return state_dict


def read_metadata(path) -> Dict[str, str]:
    if Path(path).suffix != '.safetensors':
        return {}
    with safetensors.safe_open(str(path), framework='pt') as f:
        return dict(f.metadata() or {})


# ---------------------------------------------------------------------------------------------- model fit

def check_fits(state_dict: Dict[str, torch.Tensor], model_name: str, source='checkpoint', **model_kwargs):
    """Load `state_dict` into `model_name` the way `pretrained=True` does (the family's checkpoint filter, strict);
    raise WeightsError naming what does not fit. Returns the loaded model."""
    if not timm.is_model(model_name.split('.')[0]):
        raise WeightsError(f"unknown model {model_name!r}")
    cfg = get_pretrained_cfg(model_name)
    overlay = dict(state_dict=dict(state_dict))  # timm may pop entries from the dict it is given
    num_classes = model_kwargs.get('num_classes', cfg.num_classes if cfg else None)
    if num_classes is not None:
        overlay['num_classes'] = num_classes  # else timm drops a classifier whose size differs from the cfg's
    stem = state_dict.get(f'{cfg.first_conv}.weight') if cfg and isinstance(cfg.first_conv, str) else None
    if stem is not None and stem.ndim == 4 and stem.shape[1] == model_kwargs.get('in_chans', 3):
        overlay['input_size'] = (stem.shape[1],) + tuple(cfg.input_size[1:])  # trained on this many channels
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)
    except (RuntimeError, KeyError, ValueError) as e:
        model = timm.create_model(model_name, **model_kwargs)
        detail = describe_mismatch(state_dict, model) or str(e).strip().splitlines()[0]
        with_kwargs = f" with {model_kwargs}" if model_kwargs else ''
        raise WeightsError(f"{source} does not fit {model_name}{with_kwargs}: {detail}") from None
    model.pretrained_cfg.pop('state_dict', None)  # the overlay's weights: the model holds them, no second copy
    return model


# ----------------------------------------------------------------------------------------------------- list

def zoo_pretrained() -> List[Tuple[str, object]]:
    """(arch.tag, PretrainedCfg) for every zoo-registered architecture with weights."""
    zoo_names = set(zoo_model_names())
    return [(name, get_pretrained_cfg(name)) for name in timm.list_pretrained() if name.split('.')[0] in zoo_names]


def cmd_list(args) -> int:
    rows = zoo_pretrained()
    if args.filter:
        import fnmatch
        rows = [(n, c) for n, c in rows if fnmatch.fnmatch(n, args.filter)]
    if args.json:
        print(json.dumps([dict(name=n, hf_hub_id=c.hf_hub_id, url=c.url, input_size=c.input_size,
                               num_classes=c.num_classes, license=c.license) for n, c in rows], indent=2))
        return 0
    width = max([len(n) for n, _ in rows] + [4])
    print(f"{'name':<{width}}  {'input':>7}  sources")
    for name, cfg in rows:
        sources = [f"hf-hub:{cfg.hf_hub_id}"] if cfg.hf_hub_id else []
        sources += [cfg.url] if cfg.url else []
        print(f"{name:<{width}}  {cfg.input_size[-1]:>7}  {'  '.join(sources)}")
    return 0


# ------------------------------------------------------------------------------------------------- download

def _resolve_pretrained(name: str):
    arch, _, tag = name.partition('.')
    if not timm.is_model(arch):
        raise WeightsError(f"unknown model {arch!r}; see `python -m zoo.weights list`")
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        tags = timm.list_pretrained(f'{arch}.*')
        raise WeightsError(f"{name}: no such pretrained tag; available: {', '.join(tags) or 'none'}") from None
    if not cfg.has_weights:
        raise WeightsError(f"{name}: no pretrained weights are published")
    return f"{arch}.{cfg.tag}" if cfg.tag else arch, cfg


def _download_url(url: str, work_dir: Path, sha256: Optional[str], progress: bool) -> Path:
    # timm's cached download: torch.hub with a progress bar, hash-checked when the file name carries a hash prefix
    path = Path(download_cached_file(url, check_hash=True, progress=progress, cache_dir=str(work_dir)))
    if sha256:
        check_sha256(path, sha256)
    return path


def _download_hf(hub_id: str, filename: Optional[str], work_dir: Path, sha256: Optional[str],
                 endpoint: Optional[str]) -> Path:
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models._hub import hf_split

    repo_id, revision = hf_split(hub_id)
    candidates = [filename] if filename else ['model.safetensors', 'pytorch_model.bin']
    for candidate in candidates:
        try:
            path = Path(hf_hub_download(repo_id, candidate, revision=revision, local_dir=work_dir,
                                        endpoint=endpoint, library_name='timm', library_version=timm.__version__))
        except EntryNotFoundError:
            continue
        # the hub's etag of an LFS file is its sha256: check the bytes against it
        etag = get_hf_file_metadata(hf_hub_url(repo_id, candidate, revision=revision, endpoint=endpoint)).etag
        expected = sha256 or (etag if etag and len(etag) == 64 else None)
        if expected:
            check_sha256(path, expected)
        return path
    raise WeightsError(f"hf-hub:{hub_id} has none of {', '.join(candidates)}")


def download(name: str, out_dir=DEFAULT_DIR, source: Optional[str] = None, sha256: Optional[str] = None,
             progress: bool = True, check: bool = True, url: Optional[str] = None,
             endpoint: Optional[str] = None) -> Path:
    """Download NAME[.TAG] into `out_dir` as `<arch>.<tag><suffix>`; returns the path. Nothing is left in
    `out_dir` unless every check passed. `url` replaces the cfg's URL (a mirror), `endpoint` the HF hub's."""
    full_name, cfg = _resolve_pretrained(name)
    if url:
        cfg, source = dataclasses.replace(cfg, url=url), 'url'
    if source is None:
        source = 'hf-hub' if cfg.hf_hub_id else 'url'
    if source == 'hf-hub' and not cfg.hf_hub_id or source == 'url' and not cfg.url:
        raise WeightsError(f"{full_name}: no {source} source in its pretrained cfg")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix='.download-', dir=out_dir))
    try:
        try:
            if source == 'url':
                fetched = _download_url(cfg.url, work_dir, sha256, progress)
            else:
                fetched = _download_hf(cfg.hf_hub_id, cfg.hf_hub_filename, work_dir, sha256, endpoint)
        except WeightsError:
            raise
        except Exception as e:  # network, HTTP status, torch.hub hash check
            where = cfg.url if source == 'url' else f"hf-hub:{cfg.hf_hub_id}"
            raise WeightsError(f"{full_name}: download from {where} failed: {e}") from None
        state_dict = read_state_dict(fetched)
        if check:
            check_fits(state_dict, full_name, source=f"downloaded file for {full_name}")
        suffix = '.safetensors' if fetched.suffix == '.safetensors' else '.pth'
        target = out_dir / f"{full_name}{suffix}"
        os.replace(fetched, target)
        return target
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def cmd_download(args) -> int:
    path = download(args.name, args.dir, args.source, args.sha256, progress=not args.no_progress,
                    check=not args.no_check, url=args.url, endpoint=args.hf_endpoint)
    print(f"{path}  sha256={sha256_of(path)}")
    return 0


# --------------------------------------------------------------------------------------------------- verify

def verify(path, sha256: Optional[str] = None, model_name: Optional[str] = None, model_kwargs=None) -> Dict:
    """Check a weights file; returns a summary dict, raises WeightsError on the first problem."""
    if sha256:
        check_sha256(path, sha256)
    state_dict = read_state_dict(path)
    summary = dict(file=str(path), sha256=sha256_of(path), tensors=len(state_dict),
                   numel=sum(v.numel() for v in state_dict.values()))  # parameters and buffers
    if model_name:
        kwargs = json.loads(read_metadata(path).get('model_kwargs', '{}'))
        kwargs.update(model_kwargs or {})
        check_fits(state_dict, model_name, source=str(path), **kwargs)
        summary['fits'] = model_name
    return summary


def cmd_verify(args) -> int:
    print(json.dumps(verify(args.file, args.sha256, args.model, args.model_kwargs)))
    return 0


# --------------------------------------------------------------------------------------------------- export

def _plain_kwargs(kwargs) -> Dict:
    """JSON-able model kwargs from the checkpoint's hyper-parameters (drops what is not plain data)."""
    out = {}
    for key, value in dict(kwargs or {}).items():
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out


def export(ckpt_path, out_path, ema: bool = False, model_name: Optional[str] = None, check: bool = True) -> Dict:
    """Write the network (or its EMA) of a LitClassifier checkpoint as a plain safetensors state dict."""
    out_path = Path(out_path)
    if out_path.suffix != '.safetensors':
        raise WeightsError(f"{out_path}: the output must end in .safetensors (timm picks the loader by suffix)")
    checkpoint = read_checkpoint(ckpt_path)
    if not isinstance(checkpoint.get('state_dict'), dict):
        raise WeightsError(f"{ckpt_path}: not a Lightning checkpoint (no 'state_dict')")
    hparams = checkpoint.get('hyper_parameters') or {}
    model_name = model_name or hparams.get('model_name')
    if not model_name:
        raise WeightsError(f"{ckpt_path}: no model_name in its hyper_parameters; pass --model NAME")
    state_dict = LitClassifier.network_state_dict(checkpoint['state_dict'], ema=ema)
    if not state_dict:
        what = 'EMA weights' if ema else 'network weights'
        raise WeightsError(f"{ckpt_path}: no {what} ({LitClassifier.network_prefix(ema)}*) in its state_dict")
    # safetensors refuses tensors sharing storage: give each its own contiguous copy
    state_dict = {k: v.detach().clone().contiguous() for k, v in state_dict.items()}

    # num_classes / in_chans as trained, read from the tensors themselves, plus the plain model kwargs
    model_kwargs = _plain_kwargs(hparams.get('model_kwargs'))
    cfg = get_pretrained_cfg(model_name)
    if cfg and cfg.classifier and f'{cfg.classifier}.weight' in state_dict:
        model_kwargs['num_classes'] = state_dict[f'{cfg.classifier}.weight'].shape[0]
    if cfg and cfg.first_conv and f'{cfg.first_conv}.weight' in state_dict:
        model_kwargs['in_chans'] = state_dict[f'{cfg.first_conv}.weight'].shape[1]
    if check:
        check_fits(state_dict, model_name, source=f"{'EMA of ' if ema else ''}{ckpt_path}", **model_kwargs)

    metadata = dict(format='pt', model_name=model_name, model_kwargs=json.dumps(model_kwargs), ema=str(ema).lower(),
                    source=Path(ckpt_path).name)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{out_path.name}.', suffix='.partial', dir=out_path.parent)
    os.close(fd)
    try:
        safetensors.torch.save_file(state_dict, tmp, metadata=metadata)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dict(file=str(out_path), model_name=model_name, model_kwargs=model_kwargs, tensors=len(state_dict),
                ema=ema, load=load_snippet(out_path, model_name, model_kwargs))


def load_snippet(path, model_name: str, model_kwargs: Dict) -> str:
    """The create_model call that reloads an exported file, classifier included."""
    overlay = f"dict(file={str(path)!r}"
    if 'num_classes' in model_kwargs:
        overlay += f", num_classes={model_kwargs['num_classes']}"  # else timm drops a non-1000-class head
    if 'in_chans' in model_kwargs:
        cfg = get_pretrained_cfg(model_name)
        size = (model_kwargs['in_chans'],) + tuple(cfg.input_size[1:]) if cfg else None
        overlay += f", input_size={size}" if size else ''
    overlay += ')'
    kwargs = ''.join(f", {k}={v!r}" for k, v in model_kwargs.items())
    return f"timm.create_model({model_name!r}, pretrained=True, pretrained_cfg_overlay={overlay}{kwargs})"


def cmd_export(args) -> int:
    summary = export(args.ckpt, args.out, ema=args.ema, model_name=args.model, check=not args.no_check)
    print(json.dumps(summary))
    return 0


# ------------------------------------------------------------------------------------------------------ cli

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m zoo.weights', description=__doc__.split('\n')[0])
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser('list', help="the zoo's pretrained tags and their sources")
    p.add_argument('filter', nargs='?', default='', help='wildcard, e.g. "inceptionnext_*"')
    p.add_argument('--json', action='store_true')
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser('download', help='fetch NAME[.TAG] into checkpoints/')
    p.add_argument('name')
    p.add_argument('--dir', default=str(DEFAULT_DIR), help='target folder (default checkpoints/)')
    p.add_argument('--source', choices=('hf-hub', 'url'), default=None,
                   help="which pretrained-cfg source to use (default: hf-hub when set, as timm does)")
    p.add_argument('--sha256', default=None, help='expected sha256 (or a prefix of it)')
    p.add_argument('--url', default=None, help="download from this URL (a mirror) instead of the cfg's")
    p.add_argument('--hf-endpoint', default=None, help='Hugging Face hub endpoint (default: HF_ENDPOINT or hub)')
    p.add_argument('--no-progress', action='store_true')
    p.add_argument('--no-check', action='store_true', help='skip loading the file into the model')
    p.set_defaults(fn=cmd_download)

    p = sub.add_parser('verify', help='check a weights file: hash, loads safely, fits a model')
    p.add_argument('file')
    p.add_argument('--sha256', default=None, help='expected sha256 (or a prefix of it)')
    p.add_argument('--model', default=None, help='timm/zoo model the weights must fit')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargsAction, metavar='KEY=VALUE')
    p.set_defaults(fn=cmd_verify)

    p = sub.add_parser('export', help='Lightning checkpoint -> plain safetensors state dict')
    p.add_argument('ckpt')
    p.add_argument('out', help='OUT.safetensors')
    p.add_argument('--ema', action='store_true', help='export the EMA weights (model_ema.module.*)')
    p.add_argument('--model', default=None, help="model name when the checkpoint's hparams lack model_name")
    p.add_argument('--no-check', action='store_true', help='skip loading the result into the model')
    p.set_defaults(fn=cmd_export)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except WeightsError as e:
        print(f"zoo.weights {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
