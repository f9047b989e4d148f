"""Deploy a zoo model: `python -m zoo.export MODEL_OR_CKPT --format onnx|torchscript|exported-program`.

Builds the model (a timm name, with `--pretrained` or `--weights FILE`, or a `zoo.lit.LitClassifier` checkpoint and its
EMA weights when present), turns a copy of it into its inference form, exports that, then runs the exported file on a
seeded batch and compares it with the eager model. The file, and `FILE.json` beside it with the model's
preprocessing, appear only once that check has passed: everything is written inside a temporary folder next to the
target and renamed at the end, so a failed export leaves nothing behind.

Inference form (on a copy; the eager model stays the reference):
* `--reparam` (default: on for models with something to reparameterize, i.e. UniRepLKNet's training form):
  `timm.utils.reparameterize_model`;
* Lie-group models: `LieGroupResNet.freeze_kernels`, the kernels generated once for the fixed evaluation samples and
  kept as plain convs (their generation runs eigendecompositions that ONNX has no operator for);
* S4D: the SSM kernel computed once for the export length (its complex arithmetic has no ONNX form). SGConv's kernel
  is a function of its weights alone, which the ONNX exporter folds into a constant. The FFT long convolution itself
  exports, as ONNX `DFT` ops of a power-of-two size (`kernels.long_conv`). Sequence models are exported for one
  length: `--seq-len` (default: the model's seq_len), or the image size for pixel tasks.

Formats:
* `onnx`: `torch.onnx.export(..., dynamo=True)`, the torch.export-based exporter (the TorchScript-based one,
  `dynamo=False`, has no `fft_rfft` or complex operators and cannot keep the Lie-group models' batch dynamic);
  checked in onnxruntime;
* `torchscript`: `torch.jit.script` for image models; `torch.jit.trace` at the export length for sequence models,
  whose layers are not scriptable; checked after `torch.jit.load`;
* `exported-program`: `torch.export.export` + `torch.export.save` (`.pt2`); checked after `torch.export.load`.
The batch axis is dynamic with `--dynamic-batch` (TorchScript's always is); otherwise the file takes `--batch-size`.

Verification reports the largest absolute difference from the eager model and that difference relative to the
largest eager output (the logit scale), and fails beyond the float32 error budget of `error_budget` (or `--rtol`).

`--bench` times the exported file in its runtime beside the eager inference form and its `torch.compile`, in the same
process, at batch 1 (latency) and 16 (throughput), in interleaved rounds (the median round counts), with timm's
benchmark keys plus `runtime`; one JSON object per runtime and batch size on stdout.

The token ids and lengths that SeqNet checks in eager mode are not checked by an exported graph (a graph cannot branch
on data); onnxruntime still rejects ids outside the vocabulary. docs/deploy.md has the details and measurements.
"""
import argparse
import copy
import dataclasses
import difflib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config
from timm.utils import reparameterize_model

from kernels.long_conv import export_fft_length
from zoo._cli import ModelKwargsAction
from zoo.lit import LitClassifier
from zoo.models.liegroup import LieGroupResNet
from zoo.models.layers import LongConvLayer
from zoo.models.s4d import S4D
from zoo.models.seqnet import SeqNet
from zoo.weights import WeightsError, check_fits, read_checkpoint, read_metadata, read_state_dict, sha256_of

__all__ = ['ExportError', 'ModelInput', 'FixedKernel', 'load_model', 'resolve_input', 'wants_reparam',
           'inference_form', 'error_budget', 'export', 'load_exported', 'verify', 'bench']

FORMATS = {'onnx': '.onnx', 'torchscript': '.pt', 'exported-program': '.pt2'}
RUNTIMES = {'onnx': 'onnxruntime', 'torchscript': 'torchscript', 'exported-program': 'exported-program'}
UNIT_ROUNDOFF = torch.finfo(torch.float32).eps / 2  # u = 2^-24: float32 rounds each result to within u of it


class ExportError(RuntimeError):
    """A model that cannot be exported, or an exported file that does not compute the model; the message says why."""


# ------------------------------------------------------------------------------------------------------ model

def load_model(source: str, pretrained: bool = False, weights: Optional[str] = None,
               model_kwargs: Optional[Dict] = None, ema: Optional[bool] = None) -> Tuple[nn.Module, Dict]:
    """The eager model in eval mode, and where it came from: {model, model_kwargs, weights}.

    `source` is a timm name (random weights, `pretrained` official ones, or the weights file `weights`, loaded as
    `pretrained=True` would through the family's checkpoint filter) or a LitClassifier checkpoint (its network, or
    the EMA of it: by default when the checkpoint has one, `ema=True` requires it, `ema=False` skips it).
    """
    model_kwargs = dict(model_kwargs or {})
    path = Path(source)
    try:
        if path.is_file() or path.suffix == '.ckpt':
            if pretrained or weights:
                raise ExportError(f"{source}: a training checkpoint carries its own weights; --pretrained and "
                                  f"--weights go with a model name")
            model, info = _load_checkpoint(path, model_kwargs, ema)
        else:
            model, info = _load_named(source, pretrained, weights, model_kwargs, ema)
    except (WeightsError, TypeError, ValueError) as e:  # also model arguments the family refuses (named there)
        raise ExportError(str(e)) from None
    return model.eval(), info


def _load_named(name: str, pretrained: bool, weights: Optional[str], model_kwargs: Dict,
                ema: Optional[bool]) -> Tuple[nn.Module, Dict]:
    if ema is not None:
        raise ExportError("--ema / --no-ema choose the weights of a training checkpoint, not of a model name")
    arch = name.split('.')[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ''
        raise ExportError(f"{name}: neither a checkpoint file nor a registered model{hint}")
    if weights:
        if pretrained:
            raise ExportError("give --pretrained or --weights FILE, not both")
        # the model kwargs `zoo.weights export` stored in the file (num_classes, in_chans, ...), then the caller's
        kwargs = {**json.loads(read_metadata(weights).get('model_kwargs', '{}')), **model_kwargs}
        model = check_fits(read_state_dict(weights), name, source=str(weights), **kwargs)
        return model, dict(model=name, model_kwargs=kwargs, weights=str(weights))
    try:
        model = timm.create_model(name, pretrained=pretrained, **model_kwargs)
    except (RuntimeError, OSError) as e:  # a download that failed, a hub that cannot be reached
        if not pretrained:
            raise
        raise ExportError(f"pretrained weights of {name}: {e}") from None
    return model, dict(model=name, model_kwargs=model_kwargs,
                       weights=f"pretrained {name}" if pretrained else 'random initialization')


def _load_checkpoint(path: Path, model_kwargs: Dict, ema: Optional[bool]) -> Tuple[nn.Module, Dict]:
    checkpoint = read_checkpoint(path)  # weights_only=True, with clear errors for truncated or foreign files
    hparams = checkpoint.get('hyper_parameters') or {}
    if not isinstance(checkpoint.get('state_dict'), dict) or not hparams.get('model_name'):
        raise ExportError(f"{path}: not a LitClassifier checkpoint (no state_dict, or no model_name in its "
                          f"hyper_parameters); for a weights file, give the model name and --weights {path}")
    name = hparams['model_name']
    kwargs = {**(hparams.get('model_kwargs') or {}), **model_kwargs}
    has_ema = any(k.startswith(LitClassifier.network_prefix(ema=True)) for k in checkpoint['state_dict'])
    if ema and not has_ema:
        raise ExportError(f"{path}: no EMA weights in this checkpoint (trained without ema_decay)")
    use_ema = has_ema if ema is None else ema
    state_dict = LitClassifier.network_state_dict(checkpoint['state_dict'], ema=use_ema)
    model = check_fits(state_dict, name, source=f"{'EMA of ' if use_ema else ''}{path}", **kwargs)
    return model, dict(model=name, model_kwargs=kwargs, weights=f"{path} ({'EMA' if use_ema else 'network'})")


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """What the exported model takes after the batch axis: a float image (C, H, W), or int64 token ids (L,) / (2, L)
    (`vocab_size` set) with their valid lengths () / (2,), which select the positions SeqNet pools."""
    shape: Tuple[int, ...]
    vocab_size: Optional[int] = None

    @property
    def length(self) -> int:
        """The sequence length a sequence model sees: L, or H * W for an image read in raster order."""
        return self.shape[-1] if self.vocab_size else math.prod(self.shape[1:])

    @property
    def names(self) -> Tuple[str, ...]:
        return ('input_ids', 'lengths') if self.vocab_size else ('input',)

    def make(self, batch_size: int, seed: int = 0) -> Tuple[torch.Tensor, ...]:
        """A seeded batch: standard normal images (the scale of normalized pixels), or uniform ids and lengths."""
        gen = torch.Generator().manual_seed(seed)
        if not self.vocab_size:
            return torch.randn((batch_size,) + self.shape, generator=gen),
        ids = torch.randint(self.vocab_size, (batch_size,) + self.shape, generator=gen)
        lengths = torch.randint(1, self.shape[-1] + 1, (batch_size,) + self.shape[:-1], generator=gen)
        return ids, lengths

    def describe(self, batch) -> List[Dict]:
        shapes = ((batch,) + self.shape, (batch,) + self.shape[:-1])
        dtypes = ('int64', 'int64') if self.vocab_size else ('float32',)
        return [dict(name=n, shape=list(s), dtype=d) for n, s, d in zip(self.names, shapes, dtypes)]


def resolve_input(model: nn.Module, model_kwargs: Optional[Dict] = None, img_size: Optional[int] = None,
                  seq_len: Optional[int] = None) -> Tuple[ModelInput, Dict]:
    """The input the model is exported for, and its preprocessing (what a user must do to raw data)."""
    name = (model.pretrained_cfg or {}).get('architecture', type(model).__name__)
    if isinstance(model, SeqNet):
        if model.vocab_size:
            if img_size:
                raise ExportError(f"{name} takes token ids: set their length with --seq-len, not --img-size")
            length = seq_len or model.seq_len
            if not 1 <= length <= model.seq_len:
                raise ExportError(f"--seq-len {length}: {name} was built for sequences of 1 to {model.seq_len} "
                                  f"tokens (build it longer with --model-kwargs seq_len=N)")
            shape = ((2,) if model.num_docs == 2 else ()) + (length,)
            return ModelInput(shape, model.vocab_size), dict(vocab_size=model.vocab_size, seq_len=length,
                                                             num_docs=model.num_docs)
        if seq_len:
            raise ExportError(f"{name} reads images in raster order: set their size with --img-size, not --seq-len")
    elif seq_len:
        raise ExportError(f"{name} is an image model: set its input size with --img-size, not --seq-len")
    # the channels the model was built with (timm's resolver assumes the cfg's, or 3 when the size is overridden)
    in_chans = (model_kwargs or {}).get('in_chans') or getattr(model, 'in_chans', None) or \
        model.pretrained_cfg['input_size'][0]
    config = resolve_data_config(dict(img_size=img_size, in_chans=in_chans), model=model)
    config['input_size'] = (in_chans,) + tuple(config['input_size'][1:])
    if isinstance(model, SeqNet) and math.prod(config['input_size'][1:]) > model.seq_len:
        raise ExportError(f"{name}: a {config['input_size'][1]}x{config['input_size'][2]} image is longer than the "
                          f"{model.seq_len} positions the model was built for")
    return ModelInput(tuple(config['input_size'])), {k: list(v) if isinstance(v, tuple) else v
                                                     for k, v in config.items()}


# --------------------------------------------------------------------------------------------- inference form

class FixedKernel(nn.Module):
    """Stands in for an S4D kernel generator: the (channels, H, L) kernel computed once, for one length L."""

    def __init__(self, kernel: torch.Tensor):
        super().__init__()
        self.register_buffer('kernel', kernel.detach().clone())

    def forward(self, L: int) -> torch.Tensor:
        if L != self.kernel.shape[-1]:  # e.g. S4D's 'dss' kernel is normalized over its length: no prefix reuse
            raise ValueError(f"this S4D kernel was computed for sequences of length {self.kernel.shape[-1]}, got {L}")
        return self.kernel


def wants_reparam(model: nn.Module) -> bool:
    """Whether `timm.utils.reparameterize_model` changes anything: a module has one of the hooks it calls."""
    return any(hasattr(m, hook) for m in model.modules() for hook in ('fuse', 'reparameterize', 'switch_to_deploy'))


@torch.no_grad()
def inference_form(model: nn.Module, model_input: ModelInput, reparam: bool) -> Tuple[nn.Module, List[str]]:
    """A copy of `model` as it is exported, and the steps that made it (see the module docstring)."""
    model = copy.deepcopy(model).eval()
    steps = []
    if reparam:
        model = reparameterize_model(model, inplace=True)
        steps.append('timm.utils.reparameterize_model')
    if isinstance(model, LieGroupResNet) and model.group != 'none':
        model.freeze_kernels()
        steps.append('LieGroupResNet.freeze_kernels (kernels of the fixed evaluation samples as plain convs)')
    s4d_layers = [m for m in model.modules() if isinstance(m, S4D)]
    for layer in s4d_layers:
        layer.kernel = FixedKernel(layer.compute_kernel(model_input.length))
    if s4d_layers:
        steps.append(f'S4D kernels computed once for L={model_input.length}')
    return model, steps


# ----------------------------------------------------------------------------------------------- tolerance

def _reduction_terms(model: nn.Module, length: int) -> List[float]:
    """sqrt(n) for each layer that sums n products (convs, linears, generated kernels frozen as conv weights), and
    3 log2(n) for each FFT convolution of size n (three transforms of log2(n) butterfly stages)."""
    fft_size = export_fft_length(length)  # the eager one is no larger
    terms = []
    for m in model.modules():
        weight = getattr(m, 'weight', None)
        if isinstance(m, nn.Linear):
            terms.append(math.sqrt(m.in_features))
        elif isinstance(weight, torch.Tensor) and weight.dim() >= 3:  # (C_out, C_in / groups, *kernel)
            terms.append(math.sqrt(weight[0].numel()))
        elif isinstance(m, LongConvLayer):
            terms.append(3 * math.log2(fft_size))
    return terms


def error_budget(model: nn.Module, model_input: ModelInput, num_outputs: int) -> float:
    """How far apart, relative to the largest output, two correct float32 evaluations of `model` may be when they
    round differently (summation order, GEMM blocking, FFT sizes, Winograd vs direct convs, fused operators).

    Rounding model: a sum of n products is off by about sqrt(n) u of its scale (u = 2^-24; independent roundings
    of random sign; n u at worst), an FFT convolution by about 3 log2(n) u. Layer errors add up along the network,
    each of the two evaluations carries its own (x 2), and the largest of `num_outputs` such errors lies about
    sqrt(2 ln(2 N)) standard deviations out. It depends on the architecture and sizes only, not on the machine.
    """
    spread = math.sqrt(2 * math.log(2 * max(1, num_outputs)))
    return 2 * spread * UNIT_ROUNDOFF * sum(_reduction_terms(model, model_input.length))


# ---------------------------------------------------------------------------------------------------- export

def _dynamic_shapes(n_inputs: int, dynamic_batch: bool):
    if not dynamic_batch:
        return None
    batch = torch.export.Dim('batch', min=1)
    return tuple({0: batch} for _ in range(n_inputs))


def _write_onnx(model, inputs, path, model_input, dynamic_batch, opset):
    program = torch.onnx.export(
        model, inputs, dynamo=True, input_names=list(model_input.names), output_names=['logits'],
        opset_version=opset, dynamic_shapes=_dynamic_shapes(len(inputs), dynamic_batch), verbose=False)
    program.save(str(path))  # weights inside the file, or in FILE.data beside it past ONNX's 2 GB limit


def _write_torchscript(model, inputs, path, model_input, dynamic_batch, opset):
    if isinstance(model, SeqNet):  # SeqNet's layers are not scriptable: record one forward at the export length
        with warnings.catch_warnings():
            # the shape checks it warns about hold for every input of this length; `verify` runs other batches
            warnings.simplefilter('ignore', torch.jit.TracerWarning)
            scripted = torch.jit.trace(model, inputs, check_trace=False)
    else:
        scripted = torch.jit.script(model)  # the kernels run their torch references under TorchScript
    torch.jit.save(scripted, str(path))


def _write_exported_program(model, inputs, path, model_input, dynamic_batch, opset):
    program = torch.export.export(model, inputs, dynamic_shapes=_dynamic_shapes(len(inputs), dynamic_batch))
    torch.export.save(program, str(path))


WRITERS = {'onnx': _write_onnx, 'torchscript': _write_torchscript, 'exported-program': _write_exported_program}


def load_exported(path, fmt: str, threads: Optional[int] = None) -> Callable[[Sequence[torch.Tensor]], np.ndarray]:
    """A function that runs the exported file on a batch of inputs and returns its logits as a numpy array."""
    path = Path(path)
    try:
        if fmt == 'onnx':
            import onnxruntime as ort
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or torch.get_num_threads()
            options.log_severity_level = 3  # errors only
            session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
            names = [i.name for i in session.get_inputs()]
            return lambda inputs: session.run(None, {n: t.numpy() for n, t in zip(names, inputs)})[0]
        module = torch.jit.load(str(path), map_location='cpu') if fmt == 'torchscript' else \
            torch.export.load(str(path)).module()
    except Exception as e:
        raise ExportError(f"{path}: cannot be loaded as {fmt} ({_first_line(e)}); the file is damaged or not "
                          f"a {fmt} export") from None

    def run(inputs):
        with torch.inference_mode():
            return module(*inputs).numpy()
    return run


def _first_line(e: BaseException) -> str:
    """The first line of the innermost cause (exporters wrap the error that matters in several of their own)."""
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


@torch.no_grad()
def verify(path, fmt: str, reference: nn.Module, model_input: ModelInput, batch_sizes: Sequence[int],
           rtol: float, seed: int = 0) -> Dict:
    """Run the exported file and the eager `reference` on seeded batches; raise ExportError unless every output
    matches within `rtol` of the largest eager output. Returns the errors."""
    run = load_exported(path, fmt)
    max_abs, max_rel = 0.0, 0.0
    for batch_size in batch_sizes:
        inputs = model_input.make(batch_size, seed)
        expected = reference(*inputs).float()
        try:
            output = torch.from_numpy(np.asarray(run(inputs))).float()
        except Exception as e:
            shapes = ', '.join(str(tuple(t.shape)) for t in inputs)
            raise ExportError(f"{path}: fails on inputs of shape {shapes} ({_first_line(e)}); is it the export of "
                              f"another model or input size?") from None
        if output.shape != expected.shape:
            raise ExportError(f"{path}: output shape {tuple(output.shape)} differs from the eager model's "
                              f"{tuple(expected.shape)}; is it the export of another model?")
        if not torch.isfinite(output).all():
            raise ExportError(f"{path}: non-finite outputs where the eager model's are finite")
        abs_err = (output - expected).abs().max().item()
        scale = expected.abs().max().item()
        rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else math.inf)
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
        if not rel_err <= rtol:
            raise ExportError(f"{path}: differs from the eager model at batch {batch_size}: max abs error "
                              f"{abs_err:.3g}, max rel error {rel_err:.3g} (relative to the largest output, "
                              f"{scale:.3g}), beyond the float32 tolerance {rtol:.3g}")
    return dict(max_abs_error=max_abs, max_rel_error=max_rel, tolerance=rtol, batch_sizes=list(batch_sizes),
                seed=seed)


def _runtime_version(fmt: str) -> str:
    if fmt == 'onnx':
        import onnxruntime
        return f"onnxruntime {onnxruntime.__version__}"
    return f"torch {torch.__version__}"


def export(model: nn.Module, info: Dict, out, fmt: str = 'onnx', model_input: Optional[ModelInput] = None,
           preprocessing: Optional[Dict] = None, reparam: Optional[bool] = None, dynamic_batch: bool = False,
           batch_size: int = 1, opset: Optional[int] = None, rtol: Optional[float] = None,
           seed: int = 0) -> Dict:
    """Export the eager `model` (with `info` from `load_model`) to `out` and verify it; returns the sidecar dict.

    Nothing appears at `out` unless the verification passed.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if opset is not None and fmt != 'onnx':
        raise ExportError("--opset applies to --format onnx only")
    if batch_size < 1:
        raise ExportError(f"--batch-size must be >= 1, got {batch_size}")
    if model_input is None:
        model_input, preprocessing = resolve_input(model, info.get('model_kwargs'))
    reparam = wants_reparam(model) if reparam is None else reparam
    model.eval()
    deploy, steps = inference_form(model, model_input, reparam)
    # A traced batch of 1 would be specialized into the graph; a dynamic batch is traced at 2 and checked at 1 and 3.
    dynamic = dynamic_batch or fmt == 'torchscript' and not isinstance(deploy, SeqNet)
    trace_batch = 2 if dynamic_batch else batch_size
    check_batches = (1, 3) if dynamic else (batch_size,)
    with torch.no_grad():
        out_shape = list(model(*model_input.make(1, seed)).shape[1:])  # per sample: (num_classes,) or features
    if rtol is None:
        rtol = error_budget(deploy, model_input, sum(check_batches) * math.prod(out_shape))

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', suffix='.partial', dir=out.parent))
    try:
        staged = work / out.name
        try:
            WRITERS[fmt](deploy, model_input.make(trace_batch, seed), staged, model_input, dynamic_batch, opset)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"{info['model']}: {fmt} export failed: {_first_line(e)}") from e
        check = verify(staged, fmt, model, model_input, check_batches, rtol, seed)
        check['runtime'] = _runtime_version(fmt)
        batch = 'batch' if dynamic else batch_size
        sidecar = dict(
            info, format=fmt, file=out.name, sha256=sha256_of(staged),
            exporter=_exporter_name(fmt, deploy), opset=_onnx_opset(staged) if fmt == 'onnx' else None,
            reparameterized=reparam, inference_form=steps, inputs=model_input.describe(batch),
            outputs=[dict(name='logits', shape=[batch] + out_shape, dtype='float32')],
            preprocessing=preprocessing, verification=check, torch=torch.__version__, timm=timm.__version__)
        staged.with_name(out.name + '.json').write_text(json.dumps(sidecar, indent=2, default=str) + '\n')
        # weights files (FILE.data past 2 GB) first, the model file next, its JSON last
        order = sorted(work.iterdir(), key=lambda p: 2 if p.suffix == '.json' else int(p.name == out.name))
        for item in order:
            os.replace(item, out.parent / item.name)
        return sidecar
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _exporter_name(fmt: str, model: nn.Module) -> str:
    if fmt == 'onnx':
        return 'torch.onnx.export(dynamo=True)'
    if fmt == 'torchscript':
        return 'torch.jit.trace' if isinstance(model, SeqNet) else 'torch.jit.script'
    return 'torch.export.export'


def _onnx_opset(path) -> Optional[int]:
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')), None)


# ----------------------------------------------------------------------------------------------------- bench

def _timed_loop(step: Callable[[], object], num_bench: int) -> Tuple[float, float]:
    """(wall seconds of the timed loop, summed step seconds), as timm's benchmark and zoo.bench time a loop."""
    total_step = 0.
    t_start = time.perf_counter()
    for _ in range(num_bench):
        t0 = time.perf_counter()
        step()
        total_step += time.perf_counter() - t0
    return time.perf_counter() - t_start, total_step


def bench(deploy: nn.Module, path, fmt: str, model_input: ModelInput, model_name: str, param_count: int,
          batch_sizes: Sequence[int] = (1, 16), threads: Optional[int] = None, num_warm: int = 5,
          num_bench: int = 10, rounds: int = 3, compile: bool = True) -> List[Dict]:
    """Inference speed of the exported file in its runtime beside eager PyTorch and torch.compile of the same
    inference form, in this process, on the CPU. One dict per runtime and batch size, with timm's benchmark keys.

    Per batch size, every runtime is warmed up, then timed in `rounds` interleaved rounds of `num_bench` steps
    (eager, compile, export, eager, ...), and the median round is reported: load from other processes then falls on
    all runtimes alike instead of on whichever ran at the time.
    """
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    deploy = deploy.eval()
    runtimes = [('eager', deploy)]
    if compile:
        runtimes.append(('torch.compile', torch.compile(deploy)))
    run_exported = load_exported(path, fmt, threads)
    runtimes.append((RUNTIMES[fmt], run_exported))
    rows = []
    for batch_size in batch_sizes:
        inputs = model_input.make(batch_size)
        steps = {runtime: (lambda fn=fn: fn(inputs)) if fn is run_exported else (lambda fn=fn: fn(*inputs))
                 for runtime, fn in runtimes}
        timings = {runtime: [] for runtime in steps}
        with torch.inference_mode():
            for step in steps.values():
                for _ in range(num_warm):
                    step()
            for _ in range(rounds):
                for runtime, step in steps.items():
                    timings[runtime].append(_timed_loop(step, num_bench))
        for runtime, loops in timings.items():
            elapsed, total_step = sorted(loops)[len(loops) // 2]
            row = dict(model=model_name, runtime=runtime,
                       infer_samples_per_sec=round(batch_size * num_bench / elapsed, 2),
                       infer_step_time=round(1000 * total_step / num_bench, 3), infer_batch_size=batch_size,
                       infer_img_size=model_input.shape[-1], param_count=round(param_count / 1e6, 2),
                       threads=threads)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------------- cli

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m zoo.export', description=__doc__.split('\n')[0])
    parser.add_argument('source', metavar='MODEL_OR_CKPT',
                        help='timm / zoo model name (optionally name.tag with --pretrained), or a LitClassifier .ckpt')
    parser.add_argument('--format', default='onnx', choices=tuple(FORMATS))
    parser.add_argument('--out', '-o', default=None, metavar='FILE',
                        help='output file (default: MODEL.onnx / .pt / .pt2 in the current folder)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--pretrained', action='store_true', help="the model's official weights")
    weights.add_argument('--weights', default=None, metavar='FILE', help='a weights file (.safetensors / .pth)')
    parser.add_argument('--ema', action=argparse.BooleanOptionalAction, default=None,
                        help='checkpoint: export the EMA weights (default: when the checkpoint has them)')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargsAction, metavar='KEY=VALUE',
                        help='extra keyword arguments for timm.create_model')
    parser.add_argument('--reparam', action=argparse.BooleanOptionalAction, default=None,
                        help='timm.utils.reparameterize_model before export (default: when the model has '
                             'something to reparameterize, e.g. UniRepLKNet)')
    parser.add_argument('--img-size', type=int, default=None, metavar='N', help='square input size (image models)')
    parser.add_argument('--seq-len', type=int, default=None, metavar='L',
                        help="sequence length for token models (default: the model's seq_len)")
    parser.add_argument('--dynamic-batch', action='store_true', help='export with a dynamic batch axis')
    parser.add_argument('--batch-size', '-b', type=int, default=1, metavar='N',
                        help='the batch a static export takes, and is verified with (default 1)')
    parser.add_argument('--opset', type=int, default=None, metavar='N', help="ONNX opset (default: the exporter's)")
    parser.add_argument('--rtol', type=float, default=None,
                        help='verification tolerance, relative to the largest output (default: float32 error budget)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the verification batch (and of random weights)')
    bench_group = parser.add_argument_group('deploy benchmark')
    bench_group.add_argument('--bench', action='store_true',
                             help='time the export beside eager PyTorch and torch.compile (implies --dynamic-batch)')
    bench_group.add_argument('--bench-batch-sizes', type=int, nargs='+', default=[1, 16], metavar='N')
    bench_group.add_argument('--threads', type=int, default=None,
                             help='intra-op threads for every runtime (default: torch.get_num_threads())')
    bench_group.add_argument('--num-warm-iter', type=int, default=5, metavar='N', help='untimed steps per runtime')
    bench_group.add_argument('--num-bench-iter', type=int, default=10, metavar='N', help='timed steps per round')
    bench_group.add_argument('--bench-rounds', type=int, default=3, metavar='R',
                             help='interleaved timed rounds per runtime; the median round is reported')
    bench_group.add_argument('--no-compile', action='store_true', help='leave torch.compile out of the benchmark')
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)  # reproducible random weights when neither --pretrained nor --weights is given
        model, info = load_model(args.source, args.pretrained, args.weights, args.model_kwargs, args.ema)
        model_input, preprocessing = resolve_input(model, info['model_kwargs'], args.img_size, args.seq_len)
        out = Path(args.out or f"{info['model']}{FORMATS[args.format]}")
        dynamic_batch = args.dynamic_batch or args.bench
        result = export(model, info, out, args.format, model_input, preprocessing, args.reparam, dynamic_batch,
                        args.batch_size, args.opset, args.rtol, args.seed)
        check = result['verification']
        form = ', '.join(result['inference_form']) or 'as built'
        print(f"zoo.export: {info['model']} -> {out} ({args.format}, {result['exporter']}"
              f"{', opset %d' % result['opset'] if result['opset'] else ''}; {form})")
        print(f"zoo.export: verified with {check['runtime']} at batch {', '.join(map(str, check['batch_sizes']))}: "
              f"max abs error {check['max_abs_error']:.3g}, max rel error {check['max_rel_error']:.3g} "
              f"(tolerance {check['tolerance']:.3g})")
        print(f"zoo.export: preprocessing and model description in {out}.json")
        if args.bench:
            deploy, _ = inference_form(model, model_input, result['reparameterized'])
            bench(deploy, out, args.format, model_input, info['model'], sum(p.numel() for p in model.parameters()),
                  args.bench_batch_sizes, args.threads, args.num_warm_iter, args.num_bench_iter,
                  args.bench_rounds, compile=not args.no_compile)
    except ExportError as e:
        print(f"zoo.export: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
