"""Inference and training throughput of zoo and timm models: `python -m zoo.bench --model NAME [--model NAME ...]`.

With `--kernel OP` it micro-benchmarks one op of `kernels` instead (`kernels/bench.py`), at the shapes one forward of
the model makes (`--model`, default: the model the op serves) or at the one shape `--channels` and friends give.

Flags and output keys follow timm's `benchmark.py`: each model gets `infer_samples_per_sec`, `infer_step_time` (ms),
`infer_batch_size`, `infer_img_size`, `infer_gmacs` (per sample, from `torch.utils.flop_counter`), the same `train_*`
keys and `param_count` (millions). One JSON object per model goes to stdout, logs to stderr.

Timing as in timm: warm-up steps, then timed steps measured with `time.perf_counter()` (with a CUDA sync after each
step on a GPU); `samples_per_sec` = samples / wall time of the timed loop, `step_time` = mean milliseconds per step.
A train step is zero_grad, forward, cross-entropy on random targets, backward, SGD step.

`--suite gpu [--out DIR] [--dry-run]` runs the GPU tests, the kernel micro-benchmarks and the model throughputs with
the kernels on and off in one budgeted run and writes tables, CSV / JSON and a plot (zoo/gpu_suite.py, docs/gpu.md).

Sequence models (registered from `zoo.models.seqnet`) take token ids when they expose `vocab_size` (cfg input_size
`(L,)`, or `(2, L)` for retrieval) and images otherwise; they also report `*_tokens_per_sec`.
"""
import argparse
import contextlib
import csv
import difflib
import json
import logging
import math
import sys
import time
from functools import partial
from typing import Dict, List, Optional

import timm
import torch
import torch.nn as nn
from timm.data import resolve_data_config
from timm.optim import create_optimizer_v2
from timm.utils import reparameterize_model
from torch.utils.flop_counter import FlopCounterMode

import kernels
from kernels import bench as kernel_bench
from zoo._cli import ModelKwargsAction
from zoo.models import sequence_model_names

_logger = logging.getLogger('zoo.bench')

# precision -> (autocast dtype, dtype of model and inputs); 'float16'/'bfloat16' cast the model like timm does.
PRECISIONS = {
    'float32': (None, torch.float32),
    'amp': (torch.float16, torch.float32),
    'amp_bfloat16': (torch.bfloat16, torch.float32),
    'float16': (None, torch.float16),
    'bfloat16': (None, torch.bfloat16),
}
# The model whose shapes `--kernel OP` uses when no --model is given.
KERNEL_MODELS = {'dwconv2d': 'unireplknet_t', 'inception_dw': 'inceptionnext_tiny', 'longconv': 's4d_lra_pathx',
                 'winograd': 'liegroup_sl2'}
KERNEL_BATCH = {'dwconv2d': 64, 'inception_dw': 64, 'longconv': 16, 'winograd': 8}
KERNEL_DTYPES = {'float32': torch.float32, 'amp': torch.float16, 'float16': torch.float16,
                 'amp_bfloat16': torch.bfloat16, 'bfloat16': torch.bfloat16}
# Column order of the results file: timm's published order first, then the rest.
RESULT_KEYS = (
    'model', 'infer_img_size', 'infer_samples_per_sec', 'infer_step_time', 'infer_batch_size', 'param_count',
    'infer_gmacs', 'infer_tokens_per_sec', 'train_img_size', 'train_samples_per_sec', 'train_step_time',
    'train_batch_size', 'train_tokens_per_sec', 'error',
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m zoo.bench', description=__doc__.split('\n')[0])
    parser.add_argument('--model', '-m', action='append', default=[], metavar='NAME',
                        help='timm / zoo model name or wildcard; repeat for several models')
    parser.add_argument('--bench', default='both', choices=('inference', 'train', 'both'),
                        help='with --kernel: inference times the forward, train the forward + backward')
    parser.add_argument('--batch-size', '-b', type=int, default=None, metavar='N',
                        help='default 256; with --kernel: 64 (dwconv2d, inception_dw), 16 (longconv), 8 (winograd)')
    parser.add_argument('--img-size', type=int, default=None, metavar='N', help='square input size (model default)')
    parser.add_argument('--seq-len', type=int, default=None, metavar='L',
                        help='sequence length for token models (model default); also passed as the `seq_len` '
                             'model kwarg when the model accepts one')
    parser.add_argument('--use-train-size', action='store_true', help="use cfg input_size, not test_input_size")
    parser.add_argument('--num-classes', type=int, default=None, help='classifier size (model default)')
    parser.add_argument('--precision', default=None, choices=tuple(PRECISIONS),
                        help='default float32; with --kernel the dtype of the inputs, default bfloat16 (float32 for '
                             'winograd)')
    parser.add_argument('--channels-last', action='store_true', help='channels_last memory format for 4-D inputs')
    parser.add_argument('--torchcompile', nargs='?', const='inductor', default=None, metavar='BACKEND',
                        help='torch.compile the model (default backend inductor); with --kernel, also time '
                             'torch.compile of the fastest PyTorch implementation')
    parser.add_argument('--torchcompile-mode', default=None, help='torch.compile mode')
    parser.add_argument('--reparam', action='store_true', help='timm.utils.reparameterize_model before timing')
    parser.add_argument('--grad-checkpointing', action='store_true', help='model.set_grad_checkpointing()')
    parser.add_argument('--model-kwargs', nargs='*', default={}, action=ModelKwargsAction, metavar='KEY=VALUE',
                        help='extra keyword arguments for timm.create_model')
    parser.add_argument('--kernel-backend', default=None, choices=('auto', 'torch', 'triton'),
                        help='passed as the kernel_backend model kwarg (error for models without one)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--num-warm-iter', type=int, default=10, metavar='N')
    parser.add_argument('--num-bench-iter', type=int, default=40, metavar='N')
    parser.add_argument('--no-retry', action='store_true', help='do not halve the batch size after CUDA OOM')
    parser.add_argument('--profile', action='store_true',
                        help='after timing, profile a few more steps and add `{infer,train}_profile`: the share of '
                             'time (percent) per kind of operation (dwconv, conv, matmul, fft, norm, copy, other), '
                             'so one sees which lever matters')
    parser.add_argument('--results-file', default='', metavar='FILE', help='also write all results to FILE')
    parser.add_argument('--results-format', default='csv', choices=('csv', 'json'))
    parser.add_argument('--plot', default='', metavar='FILE.png', help='scatter of throughput vs parameters')
    kernel = parser.add_argument_group('kernel micro-benchmark')
    kernel.add_argument('--kernel', default=None, choices=tuple(kernel_bench.OPS),
                        help='time this op of `kernels` at the shapes of --model (default: ' +
                             ', '.join(f'{op}: {m}' for op, m in KERNEL_MODELS.items()) + ')')
    kernel.add_argument('--channels', type=int, default=None, metavar='C',
                        help='one shape instead of a model\'s: C channels (with --img-size / --seq-len)')
    kernel.add_argument('--kernel-size', type=_kernel_size, default=None, metavar='K',
                        help='with --channels: dwconv2d K x K or KHxKW such as 1x11 (default 13), inception_dw square '
                             'kernel (default 3), winograd 3 or 5 (default 5)')
    kernel.add_argument('--band-kernel-size', type=int, default=11, metavar='K', help='inception_dw band length')
    kernel.add_argument('--branch-ratio', type=float, default=0.125, help='inception_dw channels per branch / C')
    kernel.add_argument('--dilation', type=int, default=1, help='dwconv2d dilation')
    kernel.add_argument('--bidirectional', action='store_true', help='longconv with a two-sided kernel')
    kernel.add_argument('--no-skip', action='store_true', help='longconv without the D skip term')
    kernel.add_argument('--no-tensor-cores', action='store_true',
                        help='dwconv2d / inception_dw: direct kernels only (no tl.dot kernels for fp16/bf16 NCHW)')
    kernel.add_argument('--impl', action='append', default=None, metavar='NAME',
                        help='only these implementations (repeatable; see the keys of the output)')
    suite = parser.add_argument_group('suite (docs/gpu.md)')
    suite.add_argument('--suite', default=None, choices=('gpu',),
                       help='gpu: the GPU tests, the kernel micro-benchmarks and the model throughputs with kernels '
                            'on and off, in one run with a time budget, into --out (zoo/gpu_suite.py)')
    suite.add_argument('--out', default=None, metavar='DIR',
                       help='suite output folder (default outputs/bench/gpu-<UTC time>)')
    suite.add_argument('--dry-run', action='store_true',
                       help='the suite on the CPU in seconds: Triton interpreter, tiny shapes, one iteration')
    suite.add_argument('--budget', type=float, default=None, metavar='SECONDS',
                       help='suite wall-time budget (default 480; 120 for a dry run)')
    suite.add_argument('--parts', default=None, metavar='LIST',
                       help='comma-separated suite parts to run: tests,kernels,models (default all)')
    return parser


def _kernel_size(text: str):
    """`--kernel-size`: K, or KHxKW (a non-square dwconv2d kernel such as 1x11)."""
    parts = text.lower().split('x')
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K or KHxKW, got {text!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected K or KHxKW with positive sizes, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def resolve_model_names(patterns: List[str]) -> List[str]:
    """Exact names are kept as given (unknown ones fail later with a clear message); wildcards expand via timm."""
    names = []
    for pattern in patterns:
        if any(c in pattern for c in '*?[') and not timm.is_model(pattern):
            matched = timm.list_models(pattern)
            if not matched:
                raise SystemExit(f"zoo.bench: no model matches {pattern!r}")
            names.extend(matched)
        else:
            names.append(pattern)
    return names


def create_bench_model(name: str, args) -> nn.Module:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ''
        raise ValueError(f"unknown model {name!r}: not registered with timm or the zoo{hint}")
    kwargs = dict(args.model_kwargs)
    if args.num_classes is not None:
        kwargs['num_classes'] = args.num_classes
    seq_len = _requested_seq_len(name, args)
    if seq_len is not None:
        kwargs.setdefault('seq_len', seq_len)
    if args.kernel_backend is not None:
        kwargs['kernel_backend'] = args.kernel_backend
    try:
        return timm.create_model(name, **kwargs)
    except TypeError as e:
        if 'kernel_backend' in str(e):
            raise ValueError(f"{name} has no kernel_backend argument; --kernel-backend only applies to zoo models "
                             f"built on the `kernels` package") from None
        if 'seq_len' in str(e) and 'seq_len' not in args.model_kwargs:
            kwargs.pop('seq_len')  # the model takes any length; --seq-len only changes the input
            return timm.create_model(name, **kwargs)
        raise


def _is_sequence_model(name: str) -> bool:
    return name in sequence_model_names()


def _requested_seq_len(name: str, args) -> Optional[int]:
    """The sequence length a sequence model is built for: --seq-len for token models, H*W for image tasks."""
    if not _is_sequence_model(name):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and len(cfg.input_size) == 3:
        return args.img_size ** 2 if args.img_size else None
    return args.seq_len


class BenchInput:
    """The input a model takes: random images (B, C, H, W) or random token ids (B, L) / (B, 2, L)."""

    def __init__(self, model: nn.Module, name: str, args):
        self.vocab_size = getattr(model, 'vocab_size', None)
        self.is_sequence = _is_sequence_model(name) or bool(self.vocab_size)
        if self.vocab_size:
            input_size = tuple(model.pretrained_cfg['input_size'])  # (L,) or (2, L)
            if args.seq_len is not None:
                input_size = input_size[:-1] + (args.seq_len,)
        else:
            if args.seq_len is not None and args.img_size is None:
                raise ValueError(f"{name} takes images; set its size with --img-size, not --seq-len")
            overrides = {} if args.img_size is None else {'img_size': args.img_size}
            input_size = resolve_data_config(overrides, model=model, use_test_size=not args.use_train_size)[
                'input_size']
            # the channels the model was built with (timm's resolver assumes 3 when the size is overridden)
            in_chans = args.model_kwargs.get('in_chans') or (model.pretrained_cfg or {}).get('input_size', (3,))[0]
            input_size = (in_chans,) + tuple(input_size[1:])
        self.input_size = tuple(input_size)
        # tokens one sample carries: L (x2 for retrieval pairs), or H*W pixels for an image-task sequence model
        self.tokens_per_sample = math.prod(self.input_size if self.vocab_size else self.input_size[1:])

    def make(self, batch_size: int, device, dtype, channels_last: bool) -> torch.Tensor:
        shape = (batch_size,) + self.input_size
        if self.vocab_size:
            return torch.randint(self.vocab_size, shape, device=device)
        x = torch.randn(shape, device=device, dtype=dtype)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


class Timer:
    """perf_counter timestamps, synchronizing the GPU first when asked so a step's kernels are inside its time."""

    def __init__(self, device: torch.device):
        self.sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)

    def __call__(self, sync: bool = False) -> float:
        if sync:
            self.sync()
        return time.perf_counter()


def count_gmacs(model: nn.Module, example: torch.Tensor, autocast) -> Optional[float]:
    """GMACs of one sample's forward (FLOPs / 2). Ops without a FLOP formula (custom kernels, FFT) count as 0."""
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), autocast(), counter:
            model(example[:1])
        return round(counter.get_total_flops() / 2 / 1e9, 2)
    except Exception as e:  # counting must never cost the throughput numbers
        _logger.warning(f"FLOP count failed ({e}); infer_gmacs omitted")
        return None


def _timed_loop(step, timer: Timer, num_warm: int, num_bench: int):
    for _ in range(num_warm):
        step()
    total_step = 0.
    t_start = timer(sync=True)
    for _ in range(num_bench):
        total_step += step()
    elapsed = timer(sync=True) - t_start
    return elapsed, total_step


def bench_inference(model, make_input, batch_size, timer, autocast, args) -> Dict:
    model.eval()
    x = make_input(batch_size)

    def step():
        t0 = timer()
        with autocast():
            model(x)
        return timer(sync=True) - t0

    with torch.inference_mode():
        elapsed, total_step = _timed_loop(step, timer, args.num_warm_iter, args.num_bench_iter)
        profile = profile_shares(step) if args.profile else None
    return _phase_results(batch_size, elapsed, total_step, profile, args)


def bench_train(model, make_input, batch_size, timer, autocast, args) -> Dict:
    model.train()
    x = make_input(batch_size)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = create_optimizer_v2(model, opt='sgd', lr=1e-4)

    def step():
        optimizer.zero_grad()
        t0 = timer()
        with autocast():
            output = model(x)
            if isinstance(output, tuple):
                output = output[0]
            target = torch.randint(output.shape[-1], output.shape[:1], device=output.device)
            loss = loss_fn(output, target)
        loss.backward()
        optimizer.step()
        return timer(sync=True) - t0

    elapsed, total_step = _timed_loop(step, timer, args.num_warm_iter, args.num_bench_iter)
    return _phase_results(batch_size, elapsed, total_step, profile_shares(step) if args.profile else None, args)


def _phase_results(batch_size, elapsed, total_step, profile, args) -> Dict:
    results = dict(
        samples_per_sec=round(batch_size * args.num_bench_iter / elapsed, 2),
        step_time=round(1000 * total_step / args.num_bench_iter, 3),
        batch_size=batch_size,
    )
    if profile is not None:
        results['profile'] = profile
    return results


# Kinds of operation for `--profile`, matched in order against the profiler's op names (self time, forward and
# backward ops alike); the rest is 'other' (elementwise, activations, reductions, Python glue). Convolutions with a
# (C, 1, kh, kw) weight count as 'dwconv' (depthwise: what reparameterization and the layout change).
PROFILE_KINDS = (
    ('conv', ('conv', 'winograd')),
    ('matmul', ('addmm', 'aten::mm', 'bmm', 'matmul', 'linear', 'einsum')),
    ('fft', ('fft',)),
    ('norm', ('norm',)),
    ('copy', ('copy', 'clone', 'contiguous', 'aten::cat', 'aten::pad', 'constant_pad', 'index', 'gather', 'scatter',
              'aten::fill_', 'aten::zero_', 'empty')),
)


def _kind_of(op_name: str, input_shapes=()) -> str:
    name = op_name.lower()
    for kind, needles in PROFILE_KINDS:
        if any(n in name for n in needles):
            if kind == 'conv' and _is_depthwise(name, input_shapes):
                return 'dwconv'
            return kind
    return 'other'


def _is_depthwise(name: str, input_shapes) -> bool:
    # ATen's conv ops take (input, weight, ...), their backward (grad_output, input, weight, ...); one input channel
    # per group from several input channels is a depthwise conv (a 1-channel image's dense conv is not)
    index = 2 if 'backward' in name else 1
    if len(input_shapes) <= index:
        return False
    image, weight = input_shapes[index - 1], input_shapes[index]
    return len(weight) == 4 and len(image) == 4 and weight[1] == 1 and image[1] > 1


def profile_shares(step, num_steps: int = 3) -> Dict[str, float]:
    """Percent of the profiled self time per kind of op (PROFILE_KINDS) over `num_steps` calls of `step`."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(num_steps):
            step()
    totals: Dict[str, float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        self_time = event.self_device_time_total if torch.cuda.is_available() else event.self_cpu_time_total
        kind = _kind_of(event.key, event.input_shapes)
        totals[kind] = totals.get(kind, 0.) + self_time
    whole = sum(totals.values()) or 1.
    return {kind: round(100 * t / whole, 1) for kind, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def _with_oom_retry(run, batch_size: int, retry: bool, name: str) -> Dict:
    """Run at `batch_size`, halving it after a CUDA out-of-memory error (like timm's benchmark) unless told not to."""
    while True:
        try:
            return run(batch_size)
        except torch.cuda.OutOfMemoryError:
            if not retry or batch_size == 1:
                raise
            torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            _logger.warning(f"{name}: CUDA out of memory, retrying with batch size {batch_size}")


def benchmark_model(name: str, args) -> Dict:
    """One model's results dict; raises on any failure (the caller turns it into an `error` entry)."""
    device = torch.device(args.device)
    autocast_dtype, model_dtype = PRECISIONS[args.precision]
    if autocast_dtype is None:
        autocast = contextlib.nullcontext
    else:
        autocast = partial(torch.autocast, device.type, dtype=autocast_dtype)

    model = create_bench_model(name, args)
    bench_input = BenchInput(model, name, args)
    if args.reparam:
        model = reparameterize_model(model)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    param_count = sum(p.numel() for p in model.parameters())
    model.to(device=device, dtype=model_dtype)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)

    def make_input(batch_size):
        return bench_input.make(batch_size, device, model_dtype, args.channels_last)

    model.eval()
    gmacs = count_gmacs(model, make_input(1), autocast) if args.bench in ('inference', 'both') else None
    run_model = model
    if args.torchcompile:
        run_model = torch.compile(model, backend=args.torchcompile, mode=args.torchcompile_mode)

    timer = Timer(device)
    results = {'model': name}
    phases = dict(inference=(('infer', bench_inference),), train=(('train', bench_train),))
    phases['both'] = phases['inference'] + phases['train']
    for prefix, bench_fn in phases[args.bench]:
        _logger.info(f"{name}: {prefix} benchmark, input {bench_input.input_size}, batch {args.batch_size}, "
                     f"{args.precision} on {device}")
        run = partial(bench_fn, run_model, make_input, timer=timer, autocast=autocast, args=args)
        phase = _with_oom_retry(run, args.batch_size, not args.no_retry, name)
        results[f'{prefix}_samples_per_sec'] = phase['samples_per_sec']
        results[f'{prefix}_step_time'] = phase['step_time']
        results[f'{prefix}_batch_size'] = phase['batch_size']
        results[f'{prefix}_img_size'] = bench_input.input_size[-1]
        if 'profile' in phase:
            results[f'{prefix}_profile'] = phase['profile']
        if prefix == 'infer' and gmacs is not None:
            results['infer_gmacs'] = gmacs
        if bench_input.is_sequence:
            results[f'{prefix}_tokens_per_sec'] = round(phase['samples_per_sec'] * bench_input.tokens_per_sample, 1)
    results['param_count'] = round(param_count / 1e6, 2)
    return results


def run_benchmarks(names: List[str], args) -> List[Dict]:
    """Benchmark each model in turn; a failing model records `error` and the others still run (like timm)."""
    all_results = []
    for name in names:
        try:
            result = benchmark_model(name, args)
        except Exception as e:
            if len(names) == 1:
                raise SystemExit(f"zoo.bench: {name}: {e}") from e
            _logger.error(f"{name}: {e}")
            result = {'model': name, 'error': f"{type(e).__name__}: {e}"}
        print(json.dumps(result), flush=True)
        all_results.append(result)
    return all_results


def write_results(path: str, results: List[Dict], fmt: str):
    if fmt == 'json':
        with open(path, 'w') as f:
            json.dump(results, f, indent=2)
        return
    seen = {k for r in results for k in r}
    columns = [k for k in RESULT_KEYS if k in seen] + sorted(seen - set(RESULT_KEYS))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(results)


def plot_results(path: str, results: List[Dict], title: str = ''):
    """Throughput against parameter count, one panel per benchmarked phase, points labelled by model."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    ok = [r for r in results if 'error' not in r]
    phases = [(p, label) for p, label in (('infer', 'inference'), ('train', 'train'))
              if any(f'{p}_samples_per_sec' in r for r in ok)]
    if not phases:
        raise ValueError("nothing to plot: no model was benchmarked successfully")
    fig, axes = plt.subplots(1, len(phases), figsize=(6 * len(phases), 4.5), squeeze=False)
    for ax, (prefix, label) in zip(axes[0], phases):
        for r in ok:
            x, y = r['param_count'], r[f'{prefix}_samples_per_sec']
            ax.scatter(x, y)
            ax.annotate(r['model'], (x, y), textcoords='offset points', xytext=(4, 4), fontsize=8)
        batch = ok[0].get(f'{prefix}_batch_size')
        ax.set_xlabel('parameters (M)')
        ax.set_ylabel('samples / s')
        ax.set_title(f"{label}, batch {batch}")
        ax.grid(True, alpha=0.3)
        ax.margins(0.2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def explicit_kernel_call(args) -> dict:
    """The one call that --channels (with --img-size / --seq-len / --kernel-size ...) describes, batch left out."""
    C, op = args.channels, args.kernel
    if op == 'longconv':
        return dict(u=(1, C, args.seq_len or 1024), bidirectional=args.bidirectional, skip=not args.no_skip)
    side = args.img_size or 56
    if op == 'dwconv2d':
        k = args.kernel_size or 13
        kh, kw = k if isinstance(k, tuple) else (k, k)
        return dict(x=(1, C, side, side), weight=(C, 1, kh, kw), padding=kernels.same_padding((kh, kw), args.dilation),
                    dilation=(args.dilation, args.dilation))
    if isinstance(args.kernel_size, tuple):
        raise SystemExit(f"zoo.bench: --kernel-size KHxKW is for dwconv2d; {op} takes one size")
    if op == 'inception_dw':
        k, band = args.kernel_size or 3, args.band_kernel_size
        return dict(x=(1, C, side, side), kernel_sizes=((k, k), (1, band), (band, 1)),
                    branch_channels=int(C * args.branch_ratio))
    k = args.kernel_size or 5
    return dict(x=(1, C, side, side), weight=(C, C, k, k), padding=k // 2)


def model_kernel_calls(name: str, args) -> List[dict]:
    """The distinct calls of `args.kernel` one forward of model `name` makes (on the CPU, batch 1, float32)."""
    model = create_bench_model(name, args).eval()
    x = BenchInput(model, name, args).make(1, 'cpu', torch.float32, channels_last=False)
    with torch.no_grad(), kernels.record_calls() as calls:
        model(x)
    distinct = {}
    for op, info in calls:
        if op == args.kernel:
            distinct.setdefault(repr(sorted((k, v) for k, v in info.items() if k not in ('dtype', 'backend'))), info)
    if not distinct:
        raise SystemExit(f"zoo.bench: {name} makes no {args.kernel} call at this size (on the CPU)")
    return list(distinct.values())


def run_kernel_benchmarks(args) -> List[Dict]:
    device = torch.device(args.device)
    dtype = KERNEL_DTYPES[args.precision or ('float32' if args.kernel == 'winograd' else 'bfloat16')]
    batch = args.batch_size or KERNEL_BATCH[args.kernel]
    torch.backends.cudnn.benchmark = True  # the best cuDNN algorithm for the PyTorch baselines
    if args.channels:
        sources = [('', [explicit_kernel_call(args)])]
    else:
        sources = [(name, model_kernel_calls(name, args))
                   for name in resolve_model_names(args.model or [KERNEL_MODELS[args.kernel]])]
    phase = {'inference': 'forward', 'train': 'train', 'both': 'both'}[args.bench]
    rows = []
    for name, calls in sources:
        for call in calls:
            case = kernel_bench.make_case(args.kernel, call, batch, device, dtype, not args.no_tensor_cores)
            row = kernel_bench.run_case(args.kernel, case, device, dtype, phase, args.num_warm_iter,
                                        args.num_bench_iter, args.impl, kernel_bench.peak_gbps(device),
                                        compile_backend=args.torchcompile)
            row = {'model': name, **row} if name else row
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def apply_model_defaults(args):
    """The defaults of a model benchmark that depend on the mode: batch 256, float32."""
    args.batch_size = args.batch_size or 256
    args.precision = args.precision or 'float32'
    return args


def main(argv: Optional[List[str]] = None):
    """The results (one dict per model or kernel case); with --suite, the suite's results dict."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s', stream=sys.stderr)
    if args.suite:
        from zoo import gpu_suite
        return gpu_suite.main(args, sys.argv[1:] if argv is None else list(argv))
    if args.kernel:
        results = run_kernel_benchmarks(args)
    else:
        if not args.model:
            raise SystemExit("zoo.bench: give at least one --model NAME (or --kernel OP)")
        apply_model_defaults(args)
        results = run_benchmarks(resolve_model_names(args.model), args)
        if args.plot:
            plot_results(args.plot, results, title=f"{args.precision} on {args.device}")
    if args.results_file:
        write_results(args.results_file, results, args.results_format)
    return results


if __name__ == '__main__':
    results = main()
    if isinstance(results, dict):  # --suite
        sys.exit(results['exit_code'])
    sys.exit(1 if any('error' in r or any(k.endswith('_error') for k in r) for r in results) else 0)
