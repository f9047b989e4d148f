"""Triton kernels on a GPU at real model shapes, fp16 / bf16 (and fp32) against the fp32 reference.

Skipped without CUDA. Shapes: UniRepLKNet-T stages (C = 80..640, 56..7 px, 13x13 plus its dilated small kernels),
InceptionNeXt-T mixers (gc = C / 8, 3x3 + 1x11 + 11x1), S4D/SGConv long convolutions for L = 1K..16K.
"""
import pytest
import torch

import kernels

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')]
TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}  # relative to the output's max magnitude


def _check(actual, expected, dtype, what):
    scale = expected.float().abs().max().clamp(min=1e-6)
    err = (actual.float() - expected.float()).abs().max() / scale
    assert err < TOL[dtype], f'{what}: max error {err:.3g} of max |value| {scale:.3g} ({dtype})'


def _fwd_bwd(fn, inputs, grad_out):
    y = fn(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return (y, *torch.autograd.grad(y, wrt, grad_out.to(y.dtype)))


def _leaf(t, dtype, channels_last=False):
    t = t.to('cuda', dtype)
    if channels_last:
        t = t.contiguous(memory_format=torch.channels_last)
    return t.requires_grad_()


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('C,R,k,dil', [
    (80, 56, 3, 1), (160, 28, 13, 1), (320, 14, 13, 1), (640, 7, 13, 1),  # UniRepLKNet-T large kernels
    (160, 28, 5, 4), (320, 14, 3, 3), (160, 28, 31, 1),  # dilated reparam branches; a 31x31 RepLKNet kernel
])
def test_dwconv2d_real_shapes(dtype, channels_last, C, R, k, dil):
    torch.manual_seed(0)
    x = _leaf(torch.randn(8, C, R, R), dtype, channels_last)
    w = _leaf(torch.randn(C, 1, k, k) / k, torch.float32)
    b = _leaf(torch.randn(C), torch.float32)
    g = torch.randn(8, C, R, R, device='cuda')
    out = _fwd_bwd(lambda *a: kernels.dwconv2d(*a, dilation=dil, backend='triton'), (x, w, b), g)
    ref = _fwd_bwd(lambda *a: kernels.dwconv2d(*a, dilation=dil, backend='torch'),
                   (x.detach().float().requires_grad_(), w, b), g)
    assert out[0].dtype == dtype
    assert out[0].is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    for what, a, e in zip(('y', 'dx', 'dw', 'db'), out, ref):
        _check(a, e, dtype, what)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('C,R', [(96, 56), (192, 28), (384, 14), (768, 7)])  # InceptionNeXt-T stages
def test_inception_dw_real_shapes(dtype, channels_last, C, R):
    torch.manual_seed(0)
    gc = C // 8
    x = _leaf(torch.randn(16, C, R, R), dtype, channels_last)
    params = []
    for ks in ((3, 3), (1, 11), (11, 1)):
        params += [_leaf(torch.randn(gc, 1, *ks) / ks[0] / ks[1] ** 0.5, torch.float32),
                   _leaf(torch.randn(gc), torch.float32)]
    g = torch.randn(16, C, R, R, device='cuda')
    out = _fwd_bwd(lambda *a: kernels.inception_dw(*a, backend='triton'), (x, *params), g)
    ref = _fwd_bwd(lambda *a: kernels.inception_dw(*a, backend='torch'), (x.detach().float().requires_grad_(),
                                                                          *params), g)
    assert torch.equal(out[0][:, :C - 3 * gc], x[:, :C - 3 * gc])
    for i, (a, e) in enumerate(zip(out, ref)):
        _check(a, e, dtype, f'output {i}')


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32])
@pytest.mark.parametrize('L', [1024, 4096, 16384])
@pytest.mark.parametrize('bidirectional', [False, True])
def test_longconv_real_shapes(dtype, L, bidirectional):
    torch.manual_seed(0)
    B, H = 4, 256
    u = _leaf(torch.randn(B, H, L), dtype)
    k = _leaf(torch.randn(*((2,) if bidirectional else ()), H, L) * torch.exp(-torch.arange(L) / 64.0), torch.float32)
    D = _leaf(torch.randn(H), torch.float32)
    g = torch.randn(B, H, L, device='cuda')
    out = _fwd_bwd(lambda *a: kernels.longconv(*a, bidirectional=bidirectional, backend='triton'), (u, k, D), g)
    ref = _fwd_bwd(lambda *a: kernels.longconv(*a, bidirectional=bidirectional, backend='torch'),
                   (u.detach().float().requires_grad_(), k, D), g)
    assert out[0].dtype == dtype
    for what, a, e in zip(('y', 'du', 'dk', 'dD'), out, ref):
        _check(a, e, dtype, what)


def test_auto_picks_triton_on_cuda():
    x, w = torch.randn(1, 4, 9, 9, device='cuda'), torch.randn(4, 1, 7, 7, device='cuda')
    assert kernels.use_triton('auto', x, 'dwconv2d')
    torch.testing.assert_close(kernels.dwconv2d(x, w), kernels.dwconv2d_ref(x, w), atol=1e-4, rtol=1e-4)
