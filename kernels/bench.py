"""Kernel micro-benchmarks: every implementation of an op timed on the same inputs and output cotangent.

- dwconv2d: our Triton kernel (NCHW and channels_last) against `F.conv2d` (NCHW: native depthwise kernel,
  channels_last: cuDNN) with cuDNN enabled; the backend PyTorch selects is reported.
- inception_dw: our fused Triton mixer against timm's `InceptionDWConv2d` (split, three convs, cat), both layouts.
- longconv: our Triton-fused cuFFT path against the torch.fft reference.
- winograd: `conv2d_winograd` against `F.conv2d` (float32, on the CPU where the Lie-group models use it).

With `compile_backend` (`python -m zoo.bench --kernel OP --torchcompile`), `run_case` also times `torch.compile` of
the fastest eager PyTorch implementation (`compiled_<impl>`, static shapes, compiled afresh for each case);
`compile_s` is the wall time of its first forward and first forward + backward calls (compilation included).

A case is built from the same description `kernels.record_calls` gives of a call (shapes and options), so the
shapes can come from a model: `python -m zoo.bench --kernel OP --model NAME` (see zoo/bench.py).
Timing: CUDA events around `iters` back-to-back calls after `warmup` calls on a GPU, `time.perf_counter` on a CPU.
`*_fwd_ms` is one forward, `*_fwdbwd_ms` one forward plus backward (all grads). `*_fwd_gbps` counts the minimum bytes
a forward moves (input and weights read once, output written once); `fwd_pct_peak` divides by the device's HBM peak.
`speedup_*` = best PyTorch time / best time of ours (Triton or Winograd).
"""
import time
from functools import partial
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from .backend import interpret_mode, triton_available
from .depthwise import dwconv2d
from .long_conv import longconv
from .winograd import conv2d_winograd

__all__ = ['OPS', 'make_case', 'run_case', 'peak_gbps']

# Peak HBM bandwidth (GB/s) by device-name substring, most specific first.
PEAK_GBPS = (('H200', 4800.0), ('H100 PCIe', 2000.0), ('H100', 3350.0), ('A100-SXM4-80GB', 2039.0),
             ('A100', 1555.0), ('L40S', 864.0), ('A10G', 600.0), ('4090', 1008.0))
OURS = ('triton', 'winograd')  # implementation-name prefixes of our kernels


def time_ms(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Mean milliseconds per call: CUDA events on a GPU (one pair around all iterations), perf_counter on a CPU."""
    for _ in range(warmup):
        fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / iters
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - t0) * 1e3 / iters


def _fwd_bwd(fn, inputs, grad_out):
    params = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]

    def step():
        torch.autograd.grad(fn(*inputs), params, grad_out)
    return step


def _sig(v: float) -> float:
    return float(f'{v:.4g}')


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_()


def _conv_backend(x, w, padding, dilation, groups) -> str:
    try:  # the backend ATen picks for this conv (e.g. CudaDepthwise2d, Cudnn, Mkldnn)
        return str(torch._C._select_conv_backend(
            x, w, None, [1, 1], list(padding), list(dilation), False, [0, 0], groups)).split('.')[-1]
    except Exception:
        return 'unknown'


def _triton_tuning(tensor_cores: bool) -> dict:
    return {} if tensor_cores else dict(tensor_core_min_size=0)


def dwconv2d_case(x, weight, padding, dilation, *, batch, device, dtype, tensor_cores=True):
    from .triton.depthwise import dwconv2d_triton

    _, C, H, W = x
    kh, kw = weight[-2:]
    x = torch.randn(batch, C, H, W, device=device, dtype=dtype)
    w = (torch.randn(C, 1, kh, kw, device=device) / (kh * kw) ** 0.5).to(dtype)
    b = torch.randn(C, device=device, dtype=dtype)
    impls = {}
    for layout, fmt in (('nchw', torch.contiguous_format), ('cl', torch.channels_last)):
        xl = x.contiguous(memory_format=fmt)
        impls[f'triton_{layout}'] = (
            lambda x_, w_, b_: dwconv2d_triton(x_, w_, b_, padding, dilation, **_triton_tuning(tensor_cores)),
            (_leaf(xl), _leaf(w), _leaf(b)))
        impls[f'torch_{layout}'] = (
            lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, padding, dilation, x_.shape[1]), (_leaf(xl), _leaf(w), _leaf(b)))
    out = dwconv2d(x, w, b, padding, dilation, backend='torch').shape  # (B, C, H', W')
    info = dict(batch=batch, channels=C, img_size=f'{H}x{W}', kernel_size=f'{kh}x{kw}', dilation=dilation[0],
                torch_nchw_backend=_conv_backend(x, w, padding, dilation, C),
                torch_cl_backend=_conv_backend(x.contiguous(memory_format=torch.channels_last), w, padding, dilation, C))
    elem = x.element_size()
    return info, impls, (x.numel() + out.numel() + w.numel()) * elem, out


def inception_dw_case(x, kernel_sizes, branch_channels, *, batch, device, dtype, tensor_cores=True):
    from timm.models.inception_next import InceptionDWConv2d

    from .triton.inception_mixer import inception_dw_triton

    _, C, H, W = x
    (square, _), (_, band), _ = kernel_sizes
    mixer = InceptionDWConv2d(C, square, band, branch_channels / C).to(device, dtype)
    params = [p for conv in (mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h) for p in (conv.weight, conv.bias)]
    x = torch.randn(batch, C, H, W, device=device, dtype=dtype)
    impls = {}
    for layout, fmt in (('nchw', torch.contiguous_format), ('cl', torch.channels_last)):
        xl = x.contiguous(memory_format=fmt)
        impls[f'triton_{layout}'] = (lambda x_, *p: inception_dw_triton(x_, *p, **_triton_tuning(tensor_cores)),
                                     (_leaf(xl), *params))
        impls[f'timm_{layout}'] = (lambda x_, *p: mixer(x_), (_leaf(xl), *params))
    info = dict(batch=batch, channels=C, img_size=f'{H}x{W}', kernel_size=square, band_kernel_size=band,
                branch_channels=branch_channels)
    n_w = sum(p.numel() for p in params)
    return info, impls, (2 * x.numel() + n_w) * x.element_size(), x.shape


def longconv_case(u, bidirectional, skip, *, batch, device, dtype, tensor_cores=True):
    _, H, L = u
    u = torch.randn(batch, H, L, device=device, dtype=dtype)
    k = torch.randn(*((2,) if bidirectional else ()), H, L, device=device) * torch.exp(
        -torch.arange(L, device=device) / 64.0)
    D = torch.randn(H, device=device) if skip else None
    inputs = (_leaf(u), _leaf(k), None if D is None else _leaf(D))
    impls = {
        name: (lambda u_, k_, D_, backend=backend: longconv(u_, k_, D_, bidirectional, backend), inputs)
        for name, backend in (('triton', 'triton'), ('torch_fft', 'torch'))
    }
    info = dict(batch=batch, channels=H, seq_len=L, bidirectional=bidirectional, skip=skip)
    return info, impls, 2 * u.numel() * u.element_size() + k.numel() * 4, u.shape


def winograd_case(x, weight, padding, *, batch, device, dtype, tensor_cores=True):
    _, C, H, W = x
    c_out, _, k, _ = weight
    x = torch.randn(batch, C, H, W, device=device, dtype=dtype)
    w = (torch.randn(c_out, C, k, k, device=device) / (k * C ** 0.5)).to(dtype)
    impls = {'winograd': (lambda x_, w_: conv2d_winograd(x_, w_, padding), (_leaf(x), _leaf(w))),
             'torch': (lambda x_, w_: F.conv2d(x_, w_, padding=padding), (_leaf(x), _leaf(w)))}
    out = F.conv2d(x, w, padding=padding).shape
    info = dict(batch=batch, channels=C, out_channels=c_out, img_size=f'{H}x{W}', kernel_size=k,
                torch_backend=_conv_backend(x, w, (padding, padding), (1, 1), 1))
    return info, impls, (x.numel() + w.numel() + out.numel()) * x.element_size(), out


OPS = {'dwconv2d': dwconv2d_case, 'inception_dw': inception_dw_case, 'longconv': longconv_case,
       'winograd': winograd_case}
_CASE_KEYS = {'dwconv2d': ('x', 'weight', 'padding', 'dilation'), 'inception_dw': ('x', 'kernel_sizes', 'branch_channels'),
              'longconv': ('u', 'bidirectional', 'skip'), 'winograd': ('x', 'weight', 'padding')}


def make_case(op: str, call: dict, batch: int, device: torch.device, dtype: torch.dtype, tensor_cores: bool = True):
    """(info, implementations, forward bytes, output shape) for one recorded call of `op` (see `record_calls`)."""
    return OPS[op](**{k: call[k] for k in _CASE_KEYS[op]}, batch=batch, device=device, dtype=dtype,
                   tensor_cores=tensor_cores)


def peak_gbps(device: torch.device) -> Optional[float]:
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def _time_impl(row: Dict, name: str, fn, inputs, grad_out, fwd_bytes: int, device, bench: str, warmup: int,
               iters: int):
    """Add `<name>_fwd_ms` / `_fwd_gbps` / `_fwdbwd_ms` to row, or `<name>_error` (the other implementations go on)."""
    try:
        if bench in ('forward', 'both'):
            with torch.no_grad():
                row[f'{name}_fwd_ms'] = _sig(time_ms(lambda: fn(*inputs), device, warmup, iters))
            row[f'{name}_fwd_gbps'] = _sig(fwd_bytes / row[f'{name}_fwd_ms'] / 1e6)
        if bench in ('train', 'both'):
            row[f'{name}_fwdbwd_ms'] = _sig(time_ms(_fwd_bwd(fn, inputs, grad_out), device, warmup, iters))
    except Exception as e:
        row[f'{name}_error'] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]


def _first_call_s(fn, device) -> float:
    """Wall seconds of one call (for a compiled function's first call: tracing and compilation included)."""
    t0 = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _add_compiled(row: Dict, implementations: Dict, grad_out, fwd_bytes: int, device, bench: str, warmup: int,
                  iters: int, backend: str):
    """Time torch.compile(backend) of the fastest eager PyTorch implementation as `compiled_<impl>`."""
    phase = 'fwd' if bench in ('forward', 'both') else 'fwdbwd'
    eager = {k[:-len(f'_{phase}_ms')]: v for k, v in row.items()
             if k.endswith(f'_{phase}_ms') and not k.startswith(OURS) and k[:-len(f'_{phase}_ms')] in implementations}
    if not eager:
        return
    import torch._dynamo

    best = min(eager, key=eager.get)
    fn, inputs = implementations[best]
    torch._dynamo.reset()  # a fresh cache per case: no recompile limit, no shapes turned dynamic by earlier cases
    compiled = torch.compile(fn, backend=backend, dynamic=False)
    name = f'compiled_{best}'
    row['torch_compile_impl'], row['torch_compile_backend'] = best, backend
    try:
        seconds = 0.
        if bench in ('forward', 'both'):
            with torch.no_grad():
                seconds += _first_call_s(lambda: compiled(*inputs), device)
        if bench in ('train', 'both'):
            seconds += _first_call_s(_fwd_bwd(compiled, inputs, grad_out), device)
        row['compile_s'] = round(seconds, 2)
    except Exception as e:  # a reference that does not compile keeps its eager rows
        row[f'{name}_error'] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
        return
    _time_impl(row, name, compiled, inputs, grad_out, fwd_bytes, device, bench, warmup, iters)


def run_case(op: str, case, device: torch.device, dtype: torch.dtype, bench: str = 'both', warmup: int = 10,
             iters: int = 50, impls: Optional[List[str]] = None, peak: Optional[float] = None,
             compile_backend: Optional[str] = None) -> Dict:
    """Time every implementation of one case; one row with `<impl>_fwd_ms`, `<impl>_fwdbwd_ms`, speedups.

    compile_backend: also time `torch.compile(fastest eager PyTorch implementation, backend=compile_backend)`.
    """
    info, implementations, fwd_bytes, out_shape = case
    triton_runs = triton_available() and (device.type == 'cuda' or interpret_mode())
    row = dict(kernel=op, **info, dtype=str(dtype).removeprefix('torch.'),
               device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu')
    grad_out = torch.randn(out_shape, device=device, dtype=dtype)
    time_impl = partial(_time_impl, row, grad_out=grad_out, fwd_bytes=fwd_bytes, device=device, bench=bench,
                        warmup=warmup, iters=iters)
    for name, (fn, inputs) in implementations.items():
        if (impls and name not in impls) or (name.startswith('triton') and not triton_runs):
            continue
        time_impl(name, fn, inputs)
    if compile_backend:
        _add_compiled(row, implementations, grad_out, fwd_bytes, device, bench, warmup, iters, compile_backend)
    for phase in ('fwd', 'fwdbwd'):
        ours = [v for k, v in row.items() if k.startswith(OURS) and k.endswith(f'_{phase}_ms')]
        theirs = {k: v for k, v in row.items() if not k.startswith(OURS) and k.endswith(f'_{phase}_ms')}
        if ours and theirs:
            best = min(theirs, key=theirs.get)
            row[f'best_torch_{phase}'] = best[:-len(f'_{phase}_ms')]
            row[f'speedup_{phase}'] = round(theirs[best] / min(ours), 3)
    if peak:
        gbps = [v for k, v in row.items() if k.startswith('triton') and k.endswith('_fwd_gbps')]
        if gbps:
            row['fwd_pct_peak'] = round(100 * max(gbps) / peak, 1)
    return row
