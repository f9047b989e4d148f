"""Side-by-side CPU speed of our layers and models against the official code: `python -m zoo.compare SUITE`.

Suites (the first four import the official code from `--official PATH`, a local checkout that is never part of this
project; packages only it needs, such as einops, can come from `--site DIR`):

- `s4d` (state-spaces/s4): one layer, forward + backward (sum of the output; every parameter and input gradient),
  at each `--lengths` L: the official minimal `models/s4/s4d.py::S4D` (S4D-Lin, ZOH, unidirectional) against our
  `S4D` with its defaults, and the official `models/s4/s4.py::S4Block(mode='diag')` (S4D-Inv, bilinear,
  bidirectional, GLU) against our `S4D` with the same options.
- `sgconv` (ctlllll/SGConv): `gconv_standalone.py::GConv` against our `SGConv`, cat_randn, bidirectional, GLU,
  forward + backward as for s4d.
- `liegroup` (mirceamironenco/rgenn): the release's model as its `train.py` builds it (SamplingWrapper around the
  GResNet; paper configuration: width 40, 10 samples) against `timm.create_model('liegroup_sl2' / 'liegroup_gl2')`
  with the same options (`rgenn_model_args`) and the release's weights. A train step is forward, cross-entropy and
  backward (fresh samples every call on both sides, as in training); eval is a forward under `torch.no_grad()`: the
  release draws new samples and generates its kernels at every call, ours keeps fixed samples and caches the kernels;
  the `eval, resampled` row times ours with `eval_resample=True`, the release's behaviour.
- `unireplknet` (AILab-CVC/UniRepLKNet): the official `unireplknet_{a,t}` against ours, inference under
  `torch.inference_mode()`, training form and deploy form (official `reparameterize_unireplknet()` against
  `timm.utils.reparameterize_model`), NCHW and channels_last.
- `inceptionnext`: timm's `inception_next_{atto,tiny}` against our `inceptionnext_{atto,tiny}` with the same weights,
  inference and train step, NCHW and channels_last (no --official).
- `dwconv-layout`: the torch path of `kernels.dwconv2d` on the CPU, NCHW against channels_last (weights in the same
  layout as the input, as a model converted with `.to(memory_format=...)` has them), forward and forward + backward,
  at the UniRepLKNet-T stage shapes with 13x13 kernels (no --official).
- `winograd`: a dense 'same' convolution, `F.conv2d` (oneDNN's direct convolution) against
  `kernels.conv2d_winograd`, forward and forward + backward, at the Lie-group shapes: 400 packed channels at 36 and
  18 px (the paper configuration) and 64 at 36 px, 5x5 (no --official).

Method, the same for every suite. One process, float32, `torch.set_num_threads(--threads)` (default 1; the intra-op
pool of ATen, MKL and oneDNN; export OMP_NUM_THREADS to the same value to pin OpenMP too, the header records it).
Each comparison builds both sides and their inputs once, with the same weights (ours loads the official state dict
through the project's own checkpoint filters), and first checks that both compute the same outputs:
max |A - B| / max |A| must stay below 256 eps(float32) log2(n), n the longest sum behind an output (sequence length or
fan-in); otherwise the run stops with an error and nothing is timed. Then `--warmup` untimed calls of each side and
`--repeats` timed rounds of one call per side, alternating which side goes first from round to round, each call
timed with `time.perf_counter()`. Reported per side: median, min and max milliseconds per call; `A/B` = median of A
over median of B (above 1: B is faster), and the same ratio over the rounds where A went first and where B went first,
so that order effects show. A train step / backward starts from cleared gradients on both sides.

`--memory` adds each side's peak memory of one call: a fresh process per side and row builds the comparison, keeps
that side only, runs its warm-up calls (so one-time caches such as oneDNN primitives and FFT plans are excluded),
returns freed heap to the system (glibc malloc_trim), resets the peak resident set size (Linux VmHWM, through
/proc/self/clear_refs) and runs one call: the peak minus the resident size before the call is the memory that call
took at its peak, whoever allocated it (torch tensors, oneDNN scratch, Python objects). Linux only; slower (one
process start and build per side and row).

Output: a Markdown table on stdout (one row per comparison) under a header with the machine, threads, torch and timm
versions, the date (UTC) and the exact command; `--json FILE` writes the rows; progress and the official code's
prints go to stderr.
"""
import argparse
import contextlib
import copy
import ctypes
import datetime
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.utils import reparameterize_model

import kernels
from zoo import official as off
from zoo.models.liegroup import checkpoint_filter_fn as liegroup_filter, rgenn_model_args
from zoo.models.s4d import S4D
from zoo.models.sgconv import SGConv
from zoo.models.unireplknet import checkpoint_filter_fn as unireplknet_filter

TOLERANCE_EPS = 256  # allowed relative difference, in units of eps(dtype) * log2(n)
DTYPE = torch.float32

# The official S4Block in the S4D-Inv / bilinear / bidirectional configuration of tests/fixtures/make_s4d.py.
S4BLOCK_KWARGS = dict(mode='diag', init='diag-inv', disc='bilinear', bidirectional=True, dt_transform='exp',
                      final_act='glu', transposed=True, n_ssm=None, verbose=False)
# SGConv as in the cat_randn_bidir golden fixture (tests/fixtures/make_sgconv.py).
SGCONV_KWARGS = dict(mode='cat_randn', bidirectional=True, postact='glu')
DWCONV_SHAPES = ('160x28', '320x14', '640x7')  # UniRepLKNet-T stages with 13x13 kernels (channels x size)
# Lie-group paper configuration (400 packed channels: residual stages, last conv) and the width-16, N-4 one (64)
WINOGRAD_SHAPES = ('400x36', '400x18', '64x36')


@dataclass
class Pair:
    """Both sides of one comparison, built: one call each, and their outputs on the same input for the check."""
    a: Callable[[], object]
    b: Callable[[], object]
    outputs: Callable[[], Tuple[torch.Tensor, torch.Tensor]]
    size: int  # the longest sum behind an output (for the tolerance)


@dataclass
class Comparison:
    """One row: its label, and how to build its Pair (lazily, so that one row's models are alive at a time)."""
    label: str
    build: Callable[[], Pair]


@dataclass
class Suite:
    """The names of the two sides (A, B: the ratio is A / B) and the rows."""
    sides: Tuple[str, str]
    comparisons: List[Comparison]


class OutputMismatch(RuntimeError):
    """The two sides of a comparison compute different outputs: timing them would compare different functions."""


# ---------------------------------------------------------------------------------------------------------------
# Calls
# ---------------------------------------------------------------------------------------------------------------

def _first(y):
    """The output tensor of a layer that may return (y, state), as the official sequence layers do."""
    return y[0] if isinstance(y, tuple) else y


def _fwd_bwd(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward + backward of sum(output): every parameter gradient and the input's."""
    def call():
        module.zero_grad(set_to_none=True)
        x.grad = None
        _first(module(x)).sum().backward()
    return call


def _train_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    """Forward, cross-entropy, backward (no optimizer step), from cleared gradients."""
    def call():
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), target).backward()
    return call


def _inference(model: nn.Module, x: torch.Tensor, mode=torch.inference_mode) -> Callable[[], None]:
    def call():
        with mode():
            model(x)
    return call


def _outputs(a: Callable, b: Callable) -> Callable[[], Tuple[torch.Tensor, torch.Tensor]]:
    def run():
        with torch.no_grad():
            return _first(a()).float(), _first(b()).float()
    return run


def check_outputs(label: str, ya: torch.Tensor, yb: torch.Tensor, size: int, sides: Sequence[str]) -> float:
    """Relative max difference of the two outputs; OutputMismatch when above the tolerance for `size`."""
    if ya.shape != yb.shape:
        raise OutputMismatch(f"{label}: output shapes differ, {sides[0]} {tuple(ya.shape)} vs "
                             f"{sides[1]} {tuple(yb.shape)}")
    tol = TOLERANCE_EPS * torch.finfo(DTYPE).eps * math.log2(max(size, 2))
    scale = ya.abs().max().item()
    err = (ya - yb).abs().max().item() / (scale if scale > 0 else 1.0)
    if not err <= tol:  # also catches NaN
        raise OutputMismatch(
            f"{label}: the outputs of {sides[0]} and {sides[1]} differ (max relative difference {err:.3g} > "
            f"tolerance {tol:.3g}): the two sides do not compute the same function with these weights, so the "
            f"comparison was not timed")
    return err


# ---------------------------------------------------------------------------------------------------------------
# Suites
# ---------------------------------------------------------------------------------------------------------------

def _needs_official(args, suite: str):
    if not args.official:
        raise SystemExit(f"zoo.compare {suite}: --official PATH (a checkout of the official code) is required")


def s4d_suite(args) -> Suite:
    _needs_official(args, 's4d')
    OfficialS4D, S4Block = off.import_s4(args.official, args.site)
    B, H, N = args.batch_size or 8, args.d_model, args.d_state

    def build(variant: str, L: int) -> Pair:
        torch.manual_seed(0)
        if variant == 'minimal':
            theirs = OfficialS4D(H, d_state=N)
            ours = S4D(H, N)
            ours.load_state_dict(theirs.state_dict())
        else:
            kwargs = dict(S4BLOCK_KWARGS, d_model=H, d_state=N)
            theirs = S4Block(**kwargs)
            ours = off.s4d_for_s4block(kwargs)
            ours.load_state_dict(off.s4block_state_dict(theirs.state_dict(), ours))
        x = torch.randn(B, H, L, requires_grad=True)
        return Pair(_fwd_bwd(theirs, x), _fwd_bwd(ours, x), _outputs(lambda: theirs(x), lambda: ours(x)), L)

    comparisons = []
    for L in args.lengths:
        comparisons.append(Comparison(f'S4D minimal (Lin, ZOH, unidirectional) fwd+bwd, L={L}',
                                      partial(build, 'minimal', L)))
        comparisons.append(Comparison(f"S4Block(mode='diag') (Inv, bilinear, bidirectional) fwd+bwd, L={L}",
                                      partial(build, 'block', L)))
    return Suite(('official', 'ours'), comparisons)


def sgconv_suite(args) -> Suite:
    _needs_official(args, 'sgconv')
    GConv = off.import_sgconv(args.official, args.site)
    B, H = args.batch_size or 8, args.d_model

    def build(L: int) -> Pair:
        kwargs = dict(SGCONV_KWARGS, d_model=H, l_max=L, kernel_dim=args.kernel_dim)
        torch.manual_seed(0)
        theirs = GConv(**kwargs)
        x = torch.randn(B, H, L, requires_grad=True)
        with torch.no_grad():
            theirs(x)  # the official layer measures its kernel norm at the first forward; ours at construction
        ours = SGConv(**kwargs)
        ours.load_state_dict(theirs.state_dict())
        return Pair(_fwd_bwd(theirs, x), _fwd_bwd(ours, x), _outputs(lambda: theirs(x), lambda: ours(x)), L)

    return Suite(('official', 'ours'), [
        Comparison(f'GConv cat_randn, bidirectional, GLU fwd+bwd, L={L}', partial(build, L)) for L in args.lengths])


def liegroup_suite(args) -> Suite:
    _needs_official(args, 'liegroup')
    train, GConv2d = off.import_rgenn(args.official, args.site)
    size = args.img_size or 40

    def build(group: str, batch: int, mode: str) -> Pair:
        release_args = ['--liegroup', group, '--blocks_dim', str(args.width), '--gsamples', str(args.num_samples),
                        '--inr_dim', str(args.kernel_mlp_hidden)]
        theirs = off.build_rgenn(train, release_args, seed=0)
        name, kwargs = rgenn_model_args(release_args)
        ours = timm.create_model(name, **kwargs)
        ours.load_state_dict(liegroup_filter(theirs.state_dict(), ours))
        torch.manual_seed(1)
        x = torch.rand(batch, 1, size, size) * 2 - 1
        target = torch.randint(0, ours.num_classes, (batch,))

        # The check: eval-mode copies with the same fixed samples (the release's own sampling, and its samples
        # unshared, see attach_rgenn_samples); the timed models keep their own sampling.
        def outputs():
            ref, twin = copy.deepcopy(theirs.model).eval(), copy.deepcopy(ours).eval()
            g1, g1_inv, g3, g3_inv = off.rgenn_sample_pairs(theirs.group, group, args.num_samples, seed=2)
            off.attach_rgenn_samples(ref, GConv2d, g1, g1_inv, g3_inv)
            twin.eval_resample = False
            twin.set_samples((g1, g1_inv), (g3, g3_inv))
            return _outputs(lambda: ref(x[:2]), lambda: twin(x[:2]))()

        if mode == 'train':
            theirs.train(), ours.train()
            a, b = _train_step(theirs, x, target), _train_step(ours, x, target)
        else:
            theirs.eval(), ours.eval()
            ours.eval_resample = mode == 'eval-resample'
            a, b = _inference(theirs, x, torch.no_grad), _inference(ours, x, torch.no_grad)
        return Pair(a, b, outputs, args.width * args.num_samples * 25)

    labels = {'train': 'train step (fwd + CE + bwd)', 'eval': 'eval (ours: fixed samples, cached kernels)',
              'eval-resample': 'eval, resampled every call (ours: eval_resample=True)'}
    config = f'width {args.width}, N {args.num_samples}, {size}px'
    return Suite(('official', 'ours'), [
        Comparison(f'{group} {labels[mode]}, {config}, b={batch}', partial(build, group, batch, mode))
        for group in args.groups for batch in args.batch_sizes for mode in labels])


def _layouts(module: nn.Module, x: torch.Tensor, layout: str):
    if layout == 'channels_last':
        return module.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    return module, x


def unireplknet_suite(args) -> Suite:
    _needs_official(args, 'unireplknet')
    official = off.import_unireplknet(args.official, args.site)
    B, size = args.batch_size or 8, args.img_size or 224

    def build(variant: str, form: str, layout: str) -> Pair:
        with contextlib.redirect_stdout(sys.stderr):
            theirs = getattr(official, f'unireplknet_{variant}')(attempt_use_lk_impl=False)
        off.randomize_unireplknet(theirs, seed=0)
        ours = timm.create_model(f'unireplknet_{variant}')
        ours.load_state_dict(unireplknet_filter(theirs.state_dict(), ours))
        theirs.eval(), ours.eval()
        if form == 'deploy':
            theirs.reparameterize_unireplknet()
            ours = reparameterize_model(ours)
        torch.manual_seed(1)
        x = torch.randn(B, 3, size, size)
        theirs, xl = _layouts(theirs, x, layout)
        ours, _ = _layouts(ours, x, layout)
        return Pair(_inference(theirs, xl), _inference(ours, xl),
                    _outputs(lambda: theirs(xl[:2]), lambda: ours(xl[:2])), 4 * ours.num_features)

    return Suite(('official', 'ours'), [
        Comparison(f'unireplknet_{v} inference, {form} form, {layout}, b={B}, {size}px',
                   partial(build, v, form, layout))
        for v in args.models or ('a', 't') for form in ('training', 'deploy') for layout in ('NCHW', 'channels_last')])


def inceptionnext_suite(args) -> Suite:
    B, size = args.batch_size or 8, args.img_size or 224

    def build(variant: str, mode: str, layout: str) -> Pair:
        torch.manual_seed(0)
        ours = timm.create_model(f'inceptionnext_{variant}')
        with torch.no_grad():  # layer scales of 0.5 instead of 1e-6, so that every block reaches the logits
            for name, p in ours.named_parameters():
                if name.endswith('.gamma'):
                    p.fill_(0.5)
        theirs = timm.create_model(f'inception_next_{variant}')
        theirs.load_state_dict(ours.state_dict())
        torch.manual_seed(1)
        x = torch.randn(B, 3, size, size)
        target = torch.randint(0, ours.num_classes, (B,))
        theirs, xl = _layouts(theirs, x, layout)
        ours, _ = _layouts(ours, x, layout)
        if mode == 'train':  # batch statistics in both BatchNorms: the check runs in the timed mode too
            a, b = _train_step(theirs.train(), xl, target), _train_step(ours.train(), xl, target)
        else:
            a, b = _inference(theirs.eval(), xl), _inference(ours.eval(), xl)
        return Pair(a, b, _outputs(lambda: theirs(xl[:2]), lambda: ours(xl[:2])), 4 * ours.num_features)

    labels = {'inference': 'inference', 'train': 'train step (fwd + CE + bwd)'}
    return Suite(('timm', 'ours'), [
        Comparison(f'inception_next_{v} / inceptionnext_{v} {labels[mode]}, {layout}, b={B}, {size}px',
                   partial(build, v, mode, layout))
        for v in args.models or ('atto', 'tiny') for mode in labels for layout in ('NCHW', 'channels_last')])


def _op_call(op: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor], backward: bool) -> Callable[[], None]:
    """One call of an op: its forward under inference mode, or forward + backward of its sum from cleared gradients."""
    def call():
        if not backward:
            with torch.inference_mode():
                op()
            return
        for t in leaves:
            t.grad = None
        op().sum().backward()
    return call


def _shape_rows(shapes: Sequence[str], batch: int, what: str, build) -> List[Comparison]:
    """One comparison per shape 'CxS' (channels x spatial size) and per pass (forward, forward + backward)."""
    comparisons = []
    for shape in shapes:
        channels, size = (int(v) for v in shape.lower().split('x'))
        for backward in (False, True):
            label = f"{what} {'fwd+bwd' if backward else 'fwd'}, {batch}x{channels}x{size}x{size}"
            comparisons.append(Comparison(label, partial(build, channels, size, backward)))
    return comparisons


def dwconv_layout_suite(args) -> Suite:
    B, k = args.batch_size or 2, args.kernel_size or 13

    def build(channels: int, size: int, backward: bool) -> Pair:
        torch.manual_seed(0)
        x = torch.randn(B, channels, size, size)
        w, bias = torch.randn(channels, 1, k, k) / k, torch.randn(channels)
        cl = torch.channels_last
        x_cl, w_cl = x.contiguous(memory_format=cl), w.contiguous(memory_format=cl)
        leaves = [t.requires_grad_(backward) for t in (x, w, bias, x_cl, w_cl)]
        nchw = partial(kernels.dwconv2d, x, w, bias, backend='torch')
        channels_last = partial(kernels.dwconv2d, x_cl, w_cl, bias, backend='torch')
        return Pair(_op_call(nchw, leaves, backward), _op_call(channels_last, leaves, backward),
                    _outputs(nchw, channels_last), k * k)

    return Suite(('NCHW', 'channels_last'), _shape_rows(args.shapes or DWCONV_SHAPES, B, f'dwconv2d {k}x{k}', build))


def winograd_suite(args) -> Suite:
    B, k = args.batch_size or 8, args.kernel_size or 5

    def build(channels: int, size: int, backward: bool) -> Pair:
        torch.manual_seed(0)
        x = torch.randn(B, channels, size, size)
        w = torch.randn(channels, channels, k, k) / (channels * k * k) ** 0.5
        leaves = [t.requires_grad_(backward) for t in (x, w)]
        direct = partial(F.conv2d, x, w, padding=k // 2)
        winograd = partial(kernels.conv2d_winograd, x, w, padding=k // 2)
        return Pair(_op_call(direct, leaves, backward), _op_call(winograd, leaves, backward),
                    _outputs(direct, winograd), channels * k * k)

    return Suite(('F.conv2d', 'Winograd'), _shape_rows(args.shapes or WINOGRAD_SHAPES, B, f'dense conv {k}x{k}', build))


SUITES = {
    's4d': s4d_suite, 'sgconv': sgconv_suite, 'liegroup': liegroup_suite, 'unireplknet': unireplknet_suite,
    'inceptionnext': inceptionnext_suite, 'dwconv-layout': dwconv_layout_suite, 'winograd': winograd_suite,
}


# ---------------------------------------------------------------------------------------------------------------
# Timing, memory
# ---------------------------------------------------------------------------------------------------------------

def time_pair(a: Callable, b: Callable, warmup: int, repeats: int) -> Dict[str, list]:
    """Per-call milliseconds of each side over `repeats` rounds; rounds alternate which side goes first."""
    for _ in range(warmup):
        a()
        b()
    times = {'a': [], 'b': [], 'a_first': [], 'b_first': []}  # the last two: (ms of a, ms of b) per round
    for r in range(repeats):
        order = (('a', a), ('b', b)) if r % 2 == 0 else (('b', b), ('a', a))
        ms = {}
        for side, fn in order:
            start = time.perf_counter()
            fn()
            ms[side] = (time.perf_counter() - start) * 1e3
        times['a'].append(ms['a'])
        times['b'].append(ms['b'])
        times['a_first' if r % 2 == 0 else 'b_first'].append((ms['a'], ms['b']))
    return times


def _ratio(rounds: List[Tuple[float, float]]) -> Optional[float]:
    if not rounds:
        return None
    return statistics.median(r[0] for r in rounds) / statistics.median(r[1] for r in rounds)


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def probe_memory(pair: Pair, side: str, warmup: int) -> dict:
    """Peak resident memory of one call of one side after its warm-up, over the resident size before it (MiB)."""
    fn = pair.a if side == 'a' else pair.b
    del pair  # the other side's callable, and with it its model, if nothing else holds it
    for _ in range(warmup):
        fn()  # one-time allocations (oneDNN primitives, FFT plans, kernel caches) stay outside the measured call
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL('libc.so.6').malloc_trim(0)  # give freed heap back, so that reusing it cannot hide a peak
    before = _status_kib('VmRSS')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset the high-water mark VmHWM to the current resident size
    fn()
    return {'peak_mib': (_status_kib('VmHWM') - before) / 1024}


def _memory_of(index: int, side: str, argv: Sequence[str]) -> float:
    """Run the probe of one comparison side in a fresh process (same arguments) and return its peak in MiB."""
    argv = [a for a in argv if a != '--memory']
    if '--json' in argv:
        i = argv.index('--json')
        del argv[i:i + 2]
    cmd = [sys.executable, '-m', 'zoo.compare', *argv, '--probe', f'{index}:{side}']
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"memory probe failed ({shlex.join(cmd)}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])['peak_mib']


# ---------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------

def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            model = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')), model)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    return f'{model}, {os.cpu_count()} logical cores ({usable} usable)'


def header(args, argv: Sequence[str]) -> List[str]:
    now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    omp = os.environ.get('OMP_NUM_THREADS')
    threads = f'{torch.get_num_threads()} (torch.set_num_threads; OMP_NUM_THREADS={omp or "unset"})'
    return [f'**zoo.compare {args.suite}**: {machine()}; threads {threads}; torch {torch.__version__}, '
            f'timm {timm.__version__}; {now}; float32; warm-up calls per side: {args.warmup}, timed rounds: '
            f'{args.repeats}',
            '', f'`{shlex.join(["python", "-m", "zoo.compare", *argv])}`', '']


def table(rows: List[dict], sides: Sequence[str], memory: bool) -> List[str]:
    a, b = sides
    cols = ['comparison', f'{a} ms median (min-max)', f'{b} ms median (min-max)', f'{a}/{b}',
            f'{a}/{b}, {a} first', f'{a}/{b}, {b} first', 'max rel. diff']
    if memory:
        cols += [f'{a} peak MiB', f'{b} peak MiB']
    lines = ['| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]

    def ratio(v):
        return '-' if v is None else f'{v:.2f}'

    def ms(v):  # three significant digits, no exponent
        return f'{v:.{max(0, 2 - int(math.floor(math.log10(v))))}f}' if v > 0 else '0'
    for r in rows:
        cells = [r['comparison'],
                 f"{ms(r['a_median_ms'])} ({ms(r['a_min_ms'])}-{ms(r['a_max_ms'])})",
                 f"{ms(r['b_median_ms'])} ({ms(r['b_min_ms'])}-{ms(r['b_max_ms'])})",
                 ratio(r['ratio']), ratio(r['ratio_a_first']), ratio(r['ratio_b_first']), f"{r['max_rel_diff']:.1e}"]
        if memory:
            cells += [f"{r['a_peak_mib']:.1f}", f"{r['b_peak_mib']:.1f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def run(suite: Suite, args, argv: Sequence[str]) -> List[dict]:
    rows = []
    for index, comparison in enumerate(suite.comparisons):
        print(f'[{index + 1}/{len(suite.comparisons)}] {comparison.label}', file=sys.stderr, flush=True)
        pair = comparison.build()
        ya, yb = pair.outputs()
        err = check_outputs(comparison.label, ya, yb, pair.size, suite.sides)
        times = time_pair(pair.a, pair.b, args.warmup, args.repeats)
        del pair
        gc.collect()
        row = dict(suite=args.suite, comparison=comparison.label, a=suite.sides[0], b=suite.sides[1],
                   max_rel_diff=err, threads=torch.get_num_threads(), repeats=args.repeats)
        for side in ('a', 'b'):
            row.update({f'{side}_median_ms': statistics.median(times[side]), f'{side}_min_ms': min(times[side]),
                        f'{side}_max_ms': max(times[side]), f'{side}_ms': times[side]})
        row.update(ratio=row['a_median_ms'] / row['b_median_ms'], ratio_a_first=_ratio(times['a_first']),
                   ratio_b_first=_ratio(times['b_first']))
        if args.memory:
            for side in ('a', 'b'):
                row[f'{side}_peak_mib'] = _memory_of(index, side, argv)
        rows.append(row)
    return rows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m zoo.compare', description=__doc__.split('\n')[0],
                                     epilog='See the module docstring (zoo/compare.py) and docs/benchmarks.md.')
    parser.add_argument('suite', choices=tuple(SUITES))
    parser.add_argument('--official', metavar='PATH', help='checkout of the official repository (s4d: state-spaces/s4, '
                        'sgconv: ctlllll/SGConv, liegroup: mirceamironenco/rgenn, unireplknet: AILab-CVC/UniRepLKNet)')
    parser.add_argument('--site', action='append', default=[], metavar='DIR',
                        help='directory of packages only the official code needs (einops, ...), put on sys.path '
                             'with it; repeatable')
    parser.add_argument('--threads', type=int, default=1, metavar='N', help='torch.set_num_threads (default 1)')
    parser.add_argument('--warmup', type=int, default=2, metavar='W', help='untimed calls per side (default 2)')
    parser.add_argument('--repeats', type=int, default=10, metavar='R',
                        help='timed rounds, one call per side each, alternating which goes first (default 10)')
    parser.add_argument('--memory', action='store_true', help='also measure each side\'s peak memory (slower)')
    parser.add_argument('--json', metavar='FILE', help='also write the rows (with every per-call time) to FILE')
    parser.add_argument('-b', '-B', '--batch-size', type=int, default=None, metavar='N',
                        help='batch (s4d, sgconv, unireplknet, inceptionnext, winograd: 8; dwconv-layout: 2)')
    seq = parser.add_argument_group('s4d, sgconv')
    seq.add_argument('--lengths', type=int, nargs='+', default=[1024, 4096, 16384], metavar='L')
    seq.add_argument('-H', '--d-model', type=int, default=256, metavar='H')
    seq.add_argument('-N', '--d-state', type=int, default=64, metavar='N', help='S4D state size')
    seq.add_argument('--kernel-dim', type=int, default=64, help='SGConv kernel_dim')
    lie = parser.add_argument_group('liegroup (the release\'s train.py options: --blocks_dim, --gsamples, --inr_dim)')
    lie.add_argument('--groups', nargs='+', choices=('sl2', 'gl2'), default=['sl2', 'gl2'])
    lie.add_argument('--batch-sizes', type=int, nargs='+', default=[16, 64], metavar='N')
    lie.add_argument('--width', type=int, default=40)
    lie.add_argument('--num-samples', type=int, default=10)
    lie.add_argument('--kernel-mlp-hidden', type=int, default=60)
    img = parser.add_argument_group('unireplknet, inceptionnext, liegroup')
    img.add_argument('--models', nargs='+', default=None, metavar='V',
                     help='variants (unireplknet: a t; inceptionnext: atto tiny)')
    img.add_argument('--img-size', type=int, default=None, metavar='S', help='default 224 (liegroup: 40)')
    dw = parser.add_argument_group('dwconv-layout, winograd')
    dw.add_argument('--shapes', nargs='+', default=None, metavar='CxS',
                    help=f"channels x spatial size (dwconv-layout: {' '.join(DWCONV_SHAPES)}; winograd: "
                         f"{' '.join(WINOGRAD_SHAPES)})")
    dw.add_argument('--kernel-size', type=int, default=None, help='dwconv-layout: 13; winograd: 5 (or 3)')
    parser.add_argument('--probe', default=None, help=argparse.SUPPRESS)  # INDEX:SIDE, the --memory subprocess
    return parser


def main(argv: Optional[Sequence[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.repeats < 2 or args.warmup < 0 or args.threads < 1:
        raise SystemExit('zoo.compare: --repeats must be >= 2 (both orders), --warmup >= 0, --threads >= 1')
    torch.set_num_threads(args.threads)
    stdout = sys.stdout
    try:
        # The official code prints (kernel norms, import notes): keep stdout for the table.
        with contextlib.redirect_stdout(sys.stderr):
            suite = SUITES[args.suite](args)
            if args.probe:
                index, side = args.probe.split(':')
                result = probe_memory(suite.comparisons[int(index)].build(), side, max(args.warmup, 1))
            else:
                rows = run(suite, args, argv)
    except (off.OfficialCodeError, OutputMismatch) as e:
        raise SystemExit(f'zoo.compare {args.suite}: {e}') from None
    if args.probe:
        print(json.dumps(result), file=stdout)
        return None
    print('\n'.join(header(args, argv) + table(rows, suite.sides, args.memory)), file=stdout)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == '__main__':
    main()
