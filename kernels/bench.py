"""Kernel micro-benchmark: `python -m zoo.bench --kernel dwconv2d|inception_dw|longconv|winograd [shape flags]`
(or `python -m kernels.bench ...`, the same CLI).

Every implementation of a kernel runs on the same inputs and the same output cotangent:
- dwconv2d: our Triton kernel (NCHW and channels_last) against `F.conv2d` (NCHW: native depthwise kernel,
  channels_last: cuDNN) with cudnn enabled; the backend PyTorch selects is reported.
- inception_dw: our fused Triton mixer against timm's `InceptionDWConv2d` (split, three convs, cat), both layouts.
- longconv: our Triton-fused cuFFT path against the torch.fft reference.
- winograd: `kernels.conv2d_winograd` against `F.conv2d` for the dense 'same' convs of the Lie-group layers
  (float32, on the CPU where the models use it).
Timing: CUDA events around `--num-bench-iter` back-to-back calls after `--num-warm-iter` warm-up calls on a GPU,
`time.perf_counter` on a CPU. `*_fwd_ms` is one forward, `*_fwdbwd_ms` one forward plus backward (all grads).
Bandwidth (`*_fwd_gbps`) counts the minimum bytes a forward must move (read input and weights once, write output
once) over the measured time; `fwd_pct_peak` divides by `--peak-gbps` (default: a table of known GPUs).
`speedup_*` = best PyTorch time / best time of ours (Triton or Winograd). One JSON object per shape on stdout.
"""
import argparse
import csv
import json
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import kernels

DTYPES = {'float32': torch.float32, 'float16': torch.float16, 'bfloat16': torch.bfloat16}
# Peak HBM bandwidth (GB/s) by device-name substring, most specific first.
PEAK_GBPS = (('H200', 4800.0), ('H100 PCIe', 2000.0), ('H100', 3350.0), ('A100-SXM4-80GB', 2039.0),
             ('A100', 1555.0), ('L40S', 864.0), ('A10G', 600.0), ('4090', 1008.0))
# Stage shapes (channels, resolution) of the models the kernels serve.
UNIREPLKNET_T = ((160, 28), (320, 14), (640, 7))  # 13x13 stages (stage 1 uses 3x3)
INCEPTIONNEXT_T = ((96, 56), (192, 28), (384, 14), (768, 7))
LONGCONV_L = (1024, 2048, 4096, 8192, 16384)
# Packed (channel x sample) width and resolution of the Lie-group convs: the paper's (40 x 10) at both stages, the
# small registered model's (8 x 4) and a 16 x 4 one.
LIEGROUP_CONVS = ((400, 36), (400, 18), (64, 36), (32, 26))
OURS = ('triton', 'winograd')  # implementation-name prefixes of our kernels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m zoo.bench', description=__doc__.split('\n')[0])
    parser.add_argument('--kernel', required=True, choices=('dwconv2d', 'inception_dw', 'longconv', 'winograd'))
    parser.add_argument('--batch-size', '-b', type=int, default=None, metavar='N',
                        help='default 64 (dwconv2d, inception_dw), 16 (longconv), 8 (winograd)')
    parser.add_argument('--channels', type=int, default=None, metavar='C',
                        help='one shape instead of the model presets (with --img-size / --seq-len)')
    parser.add_argument('--img-size', type=int, default=None, metavar='R', help='square input size')
    parser.add_argument('--kernel-size', type=int, default=None, metavar='K',
                        help='dwconv2d: K x K (default 13); inception_dw: square kernel (default 3); '
                             'winograd: 3 or 5 (default 5)')
    parser.add_argument('--band-kernel-size', type=int, default=11, metavar='K', help='inception_dw band length')
    parser.add_argument('--branch-ratio', type=float, default=0.125, help='inception_dw channels per branch / C')
    parser.add_argument('--dilation', type=int, default=1, help='dwconv2d dilation')
    parser.add_argument('--seq-len', type=int, default=None, metavar='L', help='longconv length (default 1K..16K)')
    parser.add_argument('--bidirectional', action='store_true', help='longconv with a two-sided kernel')
    parser.add_argument('--no-skip', action='store_true', help='longconv without the D skip term')
    parser.add_argument('--precision', default=None, choices=tuple(DTYPES),
                        help='default bfloat16 (float32 for winograd, which is float32/float64 only)')
    parser.add_argument('--bench', default='both', choices=('forward', 'train', 'both'),
                        help='forward only, forward+backward, or both')
    parser.add_argument('--no-tensor-cores', action='store_true',
                        help='dwconv2d / inception_dw: direct kernels only (no tl.dot kernels for fp16/bf16 NCHW)')
    parser.add_argument('--impl', action='append', default=None, metavar='NAME',
                        help='restrict to these implementations (repeatable; see the keys of the output)')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--num-warm-iter', type=int, default=10, metavar='N')
    parser.add_argument('--num-bench-iter', type=int, default=50, metavar='N')
    parser.add_argument('--peak-gbps', type=float, default=None, help='HBM peak for fwd_pct_peak (default: table)')
    parser.add_argument('--results-file', default='', metavar='FILE', help='also write all rows to FILE')
    parser.add_argument('--results-format', default='csv', choices=('csv', 'json'))
    return parser


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


def _conv_backend(x, w, padding, dilation) -> str:
    try:  # the backend ATen picks for this conv (e.g. CudaDepthwise2d, Cudnn, Mkldnn)
        return str(torch._C._select_conv_backend(
            x, w, None, [1, 1], list(padding), [dilation, dilation], False, [0, 0], x.shape[1])).split('.')[-1]
    except Exception:
        return 'unknown'


def dwconv2d_cases(args, device, dtype):
    B = args.batch_size or 64
    k = args.kernel_size or 13
    shapes = [(args.channels, args.img_size or 56)] if args.channels else UNIREPLKNET_T
    for C, R in shapes:
        x = torch.randn(B, C, R, R, device=device, dtype=dtype)
        w = (torch.randn(C, 1, k, k, device=device) / k).to(dtype)
        b = torch.randn(C, device=device, dtype=dtype)
        pad = kernels.same_padding((k, k), args.dilation)
        impls = {}
        for layout, fmt in (('nchw', torch.contiguous_format), ('cl', torch.channels_last)):
            xl = x.contiguous(memory_format=fmt)
            impls[f'triton_{layout}'] = (
                lambda x_, w_, b_: kernels.dwconv2d(x_, w_, b_, dilation=args.dilation, backend='triton'),
                (_leaf(xl), _leaf(w), _leaf(b)))
            impls[f'torch_{layout}'] = (
                lambda x_, w_, b_: F.conv2d(x_, w_, b_, 1, pad, args.dilation, x_.shape[1]),
                (_leaf(xl), _leaf(w), _leaf(b)))
        elem = x.element_size()
        info = dict(batch=B, channels=C, img_size=R, kernel_size=k, dilation=args.dilation,
                    torch_nchw_backend=_conv_backend(x, w, pad, args.dilation),
                    torch_cl_backend=_conv_backend(x.contiguous(memory_format=torch.channels_last), w, pad,
                                                   args.dilation))
        yield info, impls, 2 * x.numel() * elem + w.numel() * elem, x.shape


def inception_dw_cases(args, device, dtype):
    from timm.models.inception_next import InceptionDWConv2d

    B = args.batch_size or 64
    k = args.kernel_size or 3
    shapes = [(args.channels, args.img_size or 56)] if args.channels else INCEPTIONNEXT_T
    for C, R in shapes:
        mixer = InceptionDWConv2d(C, k, args.band_kernel_size, args.branch_ratio).to(device, dtype)
        params = [p for conv in (mixer.dwconv_hw, mixer.dwconv_w, mixer.dwconv_h) for p in (conv.weight, conv.bias)]
        x = torch.randn(B, C, R, R, device=device, dtype=dtype)
        impls = {}
        for layout, fmt in (('nchw', torch.contiguous_format), ('cl', torch.channels_last)):
            xl = x.contiguous(memory_format=fmt)
            impls[f'triton_{layout}'] = (lambda x_, *p: kernels.inception_dw(x_, *p, backend='triton'),
                                         (_leaf(xl), *params))
            impls[f'timm_{layout}'] = (lambda x_, *p: mixer(x_), (_leaf(xl), *params))
        info = dict(batch=B, channels=C, img_size=R, kernel_size=k, band_kernel_size=args.band_kernel_size,
                    branch_ratio=args.branch_ratio)
        n_w = sum(p.numel() for p in params)
        yield info, impls, 2 * x.numel() * x.element_size() + n_w * x.element_size(), x.shape


def longconv_cases(args, device, dtype):
    B, H = args.batch_size or 16, args.channels or 256
    for L in ([args.seq_len] if args.seq_len else LONGCONV_L):
        u = torch.randn(B, H, L, device=device, dtype=dtype)
        k = torch.randn(*((2,) if args.bidirectional else ()), H, L, device=device) * torch.exp(
            -torch.arange(L, device=device) / 64.0)
        D = None if args.no_skip else torch.randn(H, device=device)
        inputs = (_leaf(u), _leaf(k), None if D is None else _leaf(D))
        impls = {
            f'{name}': (lambda u_, k_, D_, backend=backend: kernels.longconv(
                u_, k_, D_, bidirectional=args.bidirectional, backend=backend), inputs)
            for name, backend in (('triton', 'triton'), ('torch_fft', 'torch'))
        }
        info = dict(batch=B, channels=H, seq_len=L, bidirectional=args.bidirectional, skip=D is not None)
        yield info, impls, 2 * u.numel() * u.element_size() + k.numel() * 4, u.shape


def winograd_cases(args, device, dtype):
    B, k = args.batch_size or 8, args.kernel_size or 5
    shapes = [(args.channels, args.img_size or 36)] if args.channels else LIEGROUP_CONVS
    for C, R in shapes:
        x = torch.randn(B, C, R, R, device=device, dtype=dtype)
        w = (torch.randn(C, C, k, k, device=device) / (k * C ** 0.5)).to(dtype)
        pad = k // 2
        impls = {'winograd': (lambda x_, w_: kernels.conv2d_winograd(x_, w_, pad), (_leaf(x), _leaf(w))),
                 'torch': (lambda x_, w_: F.conv2d(x_, w_, padding=pad), (_leaf(x), _leaf(w)))}
        info = dict(batch=B, channels=C, img_size=R, kernel_size=k, torch_backend=_conv_backend(x, w, (pad, pad), 1))
        yield info, impls, (2 * x.numel() + w.numel()) * x.element_size(), x.shape


CASES = {'dwconv2d': dwconv2d_cases, 'inception_dw': inception_dw_cases, 'longconv': longconv_cases,
         'winograd': winograd_cases}


def peak_gbps(device: torch.device, override: Optional[float]) -> Optional[float]:
    if override:
        return override
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    return next((gbps for key, gbps in PEAK_GBPS if key in name), None)


def run(args) -> List[Dict]:
    device = torch.device(args.device)
    args.precision = args.precision or ('float32' if args.kernel == 'winograd' else 'bfloat16')
    dtype = DTYPES[args.precision]
    torch.backends.cudnn.enabled = True
    torch.backends.cudnn.benchmark = True  # the best cuDNN algorithm for the PyTorch baseline
    triton_ok = kernels.HAS_TRITON and (device.type == 'cuda' or kernels.INTERPRET)
    if triton_ok and args.no_tensor_cores:
        sys.modules['kernels.dwconv2d'].TENSOR_CORE_MIN_SIZE = 0
    peak = peak_gbps(device, args.peak_gbps)
    rows = []
    for info, impls, fwd_bytes, out_shape in CASES[args.kernel](args, device, dtype):
        row = dict(kernel=args.kernel, **info, dtype=args.precision,
                   device=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu')
        grad_out = torch.randn(out_shape, device=device, dtype=dtype)
        for name, (fn, inputs) in impls.items():
            if (args.impl and name not in args.impl) or (name.startswith('triton') and not triton_ok):
                continue
            try:
                if args.bench in ('forward', 'both'):
                    with torch.no_grad():
                        row[f'{name}_fwd_ms'] = _sig(time_ms(lambda: fn(*inputs), device, args.num_warm_iter,
                                                             args.num_bench_iter))
                    row[f'{name}_fwd_gbps'] = _sig(fwd_bytes / row[f'{name}_fwd_ms'] / 1e6)
                if args.bench in ('train', 'both'):
                    row[f'{name}_fwdbwd_ms'] = _sig(time_ms(_fwd_bwd(fn, inputs, grad_out), device,
                                                            args.num_warm_iter, args.num_bench_iter))
            except Exception as e:  # record and go on with the other implementations
                row[f'{name}_error'] = f'{type(e).__name__}: {e}'.splitlines()[0][:200]
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
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def write_results(path: str, rows: List[Dict], fmt: str):
    with open(path, 'w', newline='') as f:
        if fmt == 'json':
            json.dump(rows, f, indent=2)
            return
        keys = list(dict.fromkeys(k for row in rows for k in row))
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Optional[List[str]] = None) -> List[Dict]:
    args = build_parser().parse_args(argv)
    rows = run(args)
    if args.results_file:
        write_results(args.results_file, rows, args.results_format)
    return rows


if __name__ == '__main__':
    results = main()
    sys.exit(1 if any(k.endswith('_error') for r in results for k in r) else 0)
