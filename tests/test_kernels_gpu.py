"""Triton kernels on a GPU at real model shapes, bf16 / fp16 / fp32, against float64 with bounds from the arithmetic.

Skipped without CUDA (`python -m zoo.bench --suite gpu` runs them, docs/gpu.md). Shapes: UniRepLKNet-T stages
(C = 80..640, 56..7 px, 13x13 plus its dilated small kernels, and a 31x31 kernel), InceptionNeXt-T mixers
(gc = C / 8, 3x3 + 1x11 + 11x1), S4D / SGConv long convolutions for L = 1K..16K.

The exact result is the same op in float64 on the same (already rounded) inputs, and the bounds say how far a kernel
that stores in `dtype` and accumulates in fp32 can be from it (u = unit roundoff: 2^-8 bf16, 2^-11 fp16, u32 = 2^-24):
- depthwise convs and the mixer, every element: |out - exact| <= (3 u + 2 n u32) * magnitude, where magnitude is the
  same op on |inputs| (sum of the terms' absolute values) and n the number of terms: one rounding each of the
  weights, the products and the output in dtype, and a sum of n terms in fp32 (2 u32 per term, for tensor-core
  accumulation that need not round to nearest). n = kh kw for the output and the input gradient, B H W for the
  weight and bias gradients;
- long convolutions, every (batch, channel) row, in the 2-norm: FFTs of size 2L in fp32 each err by at most
  ~6 log2(2L) u32 relative (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., sec. 24.1), three of
  them and a product: ||out - exact|| <= 20 log2(2L) u32 ||a|| ||b||_1 for the convolution of a with b (the FFT bound
  with ||FFT b||_inf <= ||b||_1), plus u ||exact|| for the output stored in dtype; the skip gradient dD is a sum of
  B L products, bounded as above.
`test_bounds_hold_in_the_interpreter` checks the same bounds on the CPU in Triton's interpreter (fp32, fp16 and the
bf16 direct kernels), where they were calibrated against nothing but the arithmetic.
"""
import functools
import math

import pytest
import torch
import torch.nn.functional as F

import kernels

U = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
U32 = 2.0 ** -24
DTYPE_IDS = {torch.float32: 'fp32', torch.float16: 'fp16', torch.bfloat16: 'bf16'}
dtypes = functools.partial(pytest.mark.parametrize, 'dtype', ids=DTYPE_IDS.get)


def elementwise_bound(what, out, exact, magnitude, dtype, n_terms):
    """|out - exact| <= (3 u + 2 n u32) magnitude, element by element."""
    coef = 3 * U[dtype] + 2 * n_terms * U32
    err = (out.double() - exact).abs()
    allowed = coef * magnitude
    assert torch.isfinite(out).all(), f'{what}: not finite'
    worst = (err / allowed.clamp(min=1e-300)).max().item()
    assert (err <= allowed).all(), (f'{what}: error {err.max().item():.3g} over its bound at {worst:.3g}x the bound '
                                    f'({dtype}, n = {n_terms})')
    return worst


def _grads(fn, inputs, cotangent):
    """fn(*inputs) and the gradients of <fn(*inputs), cotangent> for the inputs that require grad."""
    y = fn(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return (y, *torch.autograd.grad(y, wrt, cotangent.to(y.dtype)))


def _exact_and_magnitude(ref, inputs, cotangent):
    """The float64 op on the inputs, and on their absolute values (magnitudes): outputs and all gradients."""
    signed = [t.detach().double().requires_grad_() if isinstance(t, torch.Tensor) else t for t in inputs]
    absolute = [t.detach().double().abs().requires_grad_() if isinstance(t, torch.Tensor) else t for t in inputs]
    return _grads(ref, signed, cotangent.double()), _grads(ref, absolute, cotangent.double().abs())


def check_dwconv2d(fn, x, w, b, dilation, dtype):
    """fn(x, w, b, dilation) (a Triton dwconv2d) against float64; x already in dtype, w and b fp32 leaves."""
    cotangent = torch.randn(x.shape, device=x.device).to(dtype)  # dy as the kernel sees it
    out = _grads(lambda *a: fn(*a, dilation), (x, w, b), cotangent)
    exact, magnitude = _exact_and_magnitude(lambda *a: kernels.dwconv2d_ref(*a, dilation=dilation), (x, w, b),
                                            cotangent)
    assert out[0].dtype == dtype
    taps, pixels = w.shape[-1] * w.shape[-2], x.shape[0] * x.shape[2] * x.shape[3]
    return [elementwise_bound(what, o, e, m, dtype, n) for what, o, e, m, n in zip(
        ('y', 'dx', 'dw', 'db'), out, exact, magnitude, (taps + 1, taps, pixels, pixels))]


def check_inception_dw(fn, x, params, dtype):
    cotangent = torch.randn(x.shape, device=x.device).to(dtype)
    out = _grads(fn, (x, *params), cotangent)
    exact, magnitude = _exact_and_magnitude(kernels.inception_dw_ref, (x, *params), cotangent)
    gc = params[0].shape[0]
    assert torch.equal(out[0][:, :x.shape[1] - 3 * gc], x[:, :x.shape[1] - 3 * gc])  # identity split: a copy
    taps = max(p.shape[-1] * p.shape[-2] for p in params[::2])
    pixels = x.shape[0] * x.shape[2] * x.shape[3]
    names = ('y', 'dx', 'dw_hw', 'db_hw', 'dw_w', 'db_w', 'dw_h', 'db_h')
    return [elementwise_bound(what, o, e, m, dtype, taps + 1 if i < 2 else pixels)
            for i, (what, o, e, m) in enumerate(zip(names, out, exact, magnitude))]


def check_longconv(fn, u, k, D, bidirectional, dtype):
    cotangent = torch.randn(u.shape, device=u.device).to(dtype)
    out = _grads(lambda *a: fn(*a, bidirectional), (u, k, D), cotangent)
    y, du, dk, dD = out
    ref = lambda *a: kernels.longconv_ref(*a, bidirectional=bidirectional)  # noqa: E731
    (ey, edu, edk, edD), (_, _, _, mdD) = _exact_and_magnitude(ref, (u, k, D), cotangent)
    assert y.dtype == dtype
    L = u.shape[-1]
    fft = 20 * math.log2(2 * L) * U32
    u64, dy64, D64 = u.detach().double(), cotangent.double(), D.detach().double()
    k1 = k.detach().double().abs().sum(-1)  # ||k_h||_1 (both halves for a bidirectional kernel)
    if bidirectional:
        k1 = k1.sum(0)
    ratios = []

    def rows(what, o, e, a2, b1, extra=0.0):  # ||o - e|| <= fft ||a|| ||b||_1 + extra, per row
        err = (o.double() - e).norm(dim=-1)
        allowed = fft * a2 * b1 + extra
        assert torch.isfinite(o).all(), f'{what}: not finite'
        ratios.append((err / allowed).max().item())
        assert (err <= allowed).all(), f'{what}: error {err.max().item():.3g} over its bound ({ratios[-1]:.3g}x)'

    rows('y', y, ey, u64.norm(dim=-1), k1, U[dtype] * (ey.norm(dim=-1) + D64.abs() * u64.norm(dim=-1)))
    rows('du', du, edu, dy64.norm(dim=-1), k1,
         U[dtype] * (edu.norm(dim=-1) + D64.abs() * dy64.norm(dim=-1)))
    dk_bound = (dy64.norm(dim=-1) * u64.abs().sum(-1)).sum(0)  # sum over the batch of ||dy|| ||u||_1, per channel
    dk_err = (dk.double() - edk).reshape(-1, *edk.shape[-2:]).norm(dim=-1).max(0).values  # worst half, per channel
    ratios.append((dk_err / (fft * dk_bound)).max().item())
    assert (dk_err <= fft * dk_bound).all(), f'dk: error over its bound ({ratios[-1]:.3g}x)'
    ratios.append(elementwise_bound('dD', dD, edD, mdD, dtype, u.shape[0] * L))
    return ratios


def _leaf(t, dtype, channels_last=False):
    t = t.to('cuda', dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


@dtypes([torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'cl'])
@pytest.mark.parametrize('C,R,k,dil', [
    (80, 56, 3, 1), (160, 28, 13, 1), (320, 14, 13, 1), (640, 7, 13, 1),  # UniRepLKNet-T large kernels
    (160, 28, 5, 4), (320, 14, 3, 3), (160, 28, 31, 1),  # dilated reparam branches; a 31x31 RepLKNet kernel
])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_dwconv2d_real_shapes(dtype, channels_last, C, R, k, dil):
    torch.manual_seed(0)
    x = _leaf(torch.randn(8, C, R, R), dtype, channels_last)
    w = _leaf(torch.randn(C, 1, k, k) / k, torch.float32)
    b = _leaf(torch.randn(C), torch.float32)
    fn = lambda x_, w_, b_, d: kernels.dwconv2d(x_, w_, b_, dilation=d, backend='triton')  # noqa: E731
    assert fn(x, w, b, dil).is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    check_dwconv2d(fn, x, w, b, dil, dtype)


@dtypes([torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize('channels_last', [False, True], ids=['nchw', 'cl'])
@pytest.mark.parametrize('C,R', [(96, 56), (192, 28), (384, 14), (768, 7)])  # InceptionNeXt-T stages
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_inception_dw_real_shapes(dtype, channels_last, C, R):
    torch.manual_seed(0)
    gc = C // 8
    x = _leaf(torch.randn(16, C, R, R), dtype, channels_last)
    params = []
    for ks in ((3, 3), (1, 11), (11, 1)):
        params += [_leaf(torch.randn(gc, 1, *ks) / ks[0] / ks[1] ** 0.5, torch.float32),
                   _leaf(torch.randn(gc), torch.float32)]
    check_inception_dw(lambda *a: kernels.inception_dw(*a, backend='triton'), x, params, dtype)


@dtypes([torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize('L', [1024, 4096, 16384])
@pytest.mark.parametrize('bidirectional', [False, True], ids=['causal', 'bidirectional'])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_longconv_real_shapes(dtype, L, bidirectional):
    torch.manual_seed(0)
    B, H = 4, 256
    u = _leaf(torch.randn(B, H, L), dtype)
    k = _leaf(torch.randn(*((2,) if bidirectional else ()), H, L) * torch.exp(-torch.arange(L) / 64.0), torch.float32)
    D = _leaf(torch.randn(H), torch.float32)
    check_longconv(lambda *a: kernels.longconv(*a[:3], bidirectional=a[3], backend='triton'), u, k, D,
                   bidirectional, dtype)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_auto_picks_triton_on_cuda():
    x, w = torch.randn(1, 4, 9, 9, device='cuda'), torch.randn(4, 1, 7, 7, device='cuda')
    assert kernels.use_triton('auto', x, 'dwconv2d')
    torch.testing.assert_close(kernels.dwconv2d(x, w), kernels.dwconv2d_ref(x, w), atol=1e-4, rtol=1e-4)


# The same checks on the CPU in Triton's interpreter (tiny shapes). bf16 runs the direct kernels only: the
# interpreter's bf16 tl.dot is not a model of the GPU's.
INTERPRETER_DTYPES = [(torch.float32, 12), (torch.float16, 12), (torch.float16, 0), (torch.bfloat16, 0)]


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.parametrize('dtype,tensor_core_min_size', INTERPRETER_DTYPES,
                         ids=['fp32', 'fp16-tensor-core', 'fp16-direct', 'bf16-direct'])
def test_bounds_hold_in_the_interpreter(dtype, tensor_core_min_size, one_thread):
    if torch.cuda.is_available():
        pytest.skip('the GPU tests above check these bounds on the GPU')
    from kernels.triton.depthwise import dwconv2d_triton
    from kernels.triton.inception_mixer import inception_dw_triton
    from kernels.triton.long_conv import longconv_triton

    torch.manual_seed(0)
    tuning = dict(tensor_core_min_size=tensor_core_min_size)
    for k, dil in ((5, 1), (3, 2)):
        x = torch.randn(2, 3, 16, 16).to(dtype).requires_grad_()
        w, b = (torch.randn(3, 1, k, k) / k).requires_grad_(), torch.randn(3).requires_grad_()
        fn = lambda x_, w_, b_, d: dwconv2d_triton(  # noqa: E731
            x_, w_, b_, kernels.same_padding((w_.shape[-2], w_.shape[-1]), d), (d, d), **tuning)
        assert max(check_dwconv2d(fn, x, w, b, dil, dtype)) > 1e-3  # the bound is not vacuous either
    x = torch.randn(2, 16, 16, 16).to(dtype).requires_grad_()
    params = [t.requires_grad_() for ks in ((3, 3), (1, 5), (5, 1))
              for t in (torch.randn(2, 1, *ks) / ks[0] / ks[1] ** 0.5, torch.randn(2))]
    check_inception_dw(lambda *a: inception_dw_triton(*a, **tuning), x, params, dtype)
    if tensor_core_min_size:  # longconv has no tensor-core kernels: once per dtype is enough
        for bidirectional in (False, True):
            u = torch.randn(2, 3, 64).to(dtype).requires_grad_()
            k = (torch.randn(*((2,) if bidirectional else ()), 3, 64) * torch.exp(-torch.arange(64) / 16.0))
            check_longconv(longconv_triton, u, k.requires_grad_(), torch.randn(3).requires_grad_(), bidirectional,
                           dtype)
