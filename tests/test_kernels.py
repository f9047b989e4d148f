"""Kernels: references (fp64 gradcheck), Triton kernels against references (CPU interpreter, fp32), dispatch.

Triton runs here through its interpreter (TRITON_INTERPRET=1, set by conftest.py before `kernels` is imported); each
Triton op costs a Python loop per program and tap, so shapes are tiny. GPU tests at real shapes are in
tests/test_kernels_gpu.py.
"""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import kernels
from kernels import dwconv2d, dwconv2d_ref, inception_dw_ref, longconv, longconv_fft, longconv_ref
from kernels.long_conv import fft_length

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


def _grads(fn, inputs, grad_out_seed=0):
    """Output and grads of every input that requires grad, for a fixed random output cotangent."""
    y = fn(*inputs)
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(grad_out_seed)).to(y)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return y, torch.autograd.grad(y, wrt, g)


def _assert_close(actual, expected, atol, rtol=1e-4):
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


# --------------------------------------------------------------------------------------------------------------
# References: fp64 gradcheck

def test_dwconv2d_ref_gradcheck():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    for kh, kw, dil in ((3, 3, 1), (1, 5, 2), (3, 1, 1)):
        w = torch.randn(2, 1, kh, kw, dtype=torch.float64, generator=g, requires_grad=True)
        b = torch.randn(2, dtype=torch.float64, generator=g, requires_grad=True)
        assert torch.autograd.gradcheck(lambda *a: dwconv2d_ref(*a, None, dil), (x, w, b))


def test_inception_dw_ref_gradcheck():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 7, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    shapes = ((2, 1, 3, 3), (2,), (2, 1, 1, 5), (2,), (2, 1, 5, 1), (2,))
    params = [torch.randn(s, dtype=torch.float64, generator=g, requires_grad=True) for s in shapes]
    assert torch.autograd.gradcheck(inception_dw_ref, (x, *params))


@pytest.mark.parametrize('bidirectional', [False, True])
def test_longconv_ref_gradcheck(bidirectional):
    g = torch.Generator().manual_seed(2)
    u = torch.randn(2, 3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*((2,) if bidirectional else ()), 3, 7, dtype=torch.float64, generator=g, requires_grad=True)
    D = torch.randn(3, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: longconv_ref(*a, bidirectional), (u, k, D))


@pytest.mark.parametrize('bidirectional', [False, True])
@pytest.mark.parametrize('with_D', [False, True])
def test_longconv_fft_gradcheck_and_reference(monkeypatch, bidirectional, with_D):
    """The hand-written gradients, with row blocks smaller than H so that the block loop runs more than once."""
    monkeypatch.setattr(kernels.long_conv, '_BLOCK_ELEMENTS', 40)
    g = torch.Generator().manual_seed(4)
    u = torch.randn(2, 5, 9, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(*((2,) if bidirectional else ()), 5, 9, dtype=torch.float64, generator=g, requires_grad=True)
    D = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True) if with_D else None
    args = (u, k) + ((D,) if with_D else ())
    assert torch.autograd.gradcheck(lambda u, k, *D: longconv_fft(u, k, *D, bidirectional=bidirectional), args)
    torch.testing.assert_close(longconv_fft(*args, bidirectional=bidirectional),
                               longconv_ref(*args, bidirectional=bidirectional), atol=1e-12, rtol=1e-10)


def test_longconv_fft_lengths_and_dtypes():
    assert [fft_length(L) for L in (1, 2, 3, 1000, 1024, 4096)] == [1, 3, 5, 2000, 2048, 8192]
    assert fft_length(1000, bidirectional=True) == 2000 and fft_length(3, bidirectional=True) == 6
    u, k = torch.randn(2, 3, 8), torch.randn(3, 8)
    with pytest.raises(ValueError, match='too short'):
        longconv_fft(u, k, fft_size=14)
    assert longconv_fft(u.bfloat16(), k).dtype == torch.bfloat16
    # only the gradients asked for are computed, in the inputs' dtypes
    k64 = k.double().requires_grad_()
    (dk,) = torch.autograd.grad(longconv_fft(u.double(), k64).sum(), k64)
    torch.testing.assert_close(dk, torch.autograd.grad(longconv_ref(u.double(), k64).sum(), k64)[0])


def test_longconv_ref_matches_direct_sum():
    """The FFT reference is the plain causal (and two-sided) sum it claims to be."""
    g = torch.Generator().manual_seed(3)
    u, k, D = torch.randn(2, 3, 6, generator=g), torch.randn(2, 3, 6, generator=g), torch.randn(3, generator=g)
    L = u.shape[-1]
    lag = torch.arange(L)[:, None] - torch.arange(L)[None, :]  # out index - in index
    causal = torch.where(lag >= 0, k[0][:, lag.clamp(min=0)], 0.0)  # (H, L_out, L_in)
    anti = torch.where(lag < 0, k[1][:, (-lag - 1).clamp(min=0)], 0.0)
    expected = torch.einsum('hoi,bhi->bho', causal, u) + D[:, None] * u
    _assert_close(longconv_ref(u, k[0], D), expected, atol=1e-5)
    _assert_close(longconv_ref(u, k, D, bidirectional=True), expected + torch.einsum('hoi,bhi->bho', anti, u),
                  atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Triton (interpreter on CPU) against the references, fp32

DW_CASES = [
    # B, C, H, W, (kh, kw), dilation, padding, channels_last, bias
    (2, 3, 7, 9, (3, 3), 1, None, False, True),
    (1, 5, 9, 7, (7, 7), 1, None, True, True),
    (1, 4, 11, 13, (13, 13), 1, None, False, False),
    (2, 3, 9, 13, (1, 11), 1, None, True, True),
    (1, 5, 13, 7, (11, 1), 1, None, False, True),
    (1, 3, 11, 9, (3, 3), 3, None, True, True),
    (2, 3, 12, 11, (5, 7), (2, 1), None, False, True),
    (1, 3, 8, 9, (5, 5), 1, (1, 3), True, False),  # not "same": output 6 x 9
    (1, 2, 5, 9, (1, 31), 1, None, False, True),  # 31x31 runs in the GPU tests (961 taps: slow here)
]


@pytest.mark.triton
@pytest.mark.parametrize('B,C,H,W,ks,dil,pad,cl,bias', DW_CASES)
def test_dwconv2d_triton_matches_reference(B, C, H, W, ks, dil, pad, cl, bias):
    g = torch.Generator().manual_seed(B * 100 + C * 10 + ks[0])
    x = torch.randn(B, C, H, W, generator=g).to(DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    w = torch.randn(C, 1, *ks, generator=g).to(DEVICE).requires_grad_()
    b = torch.randn(C, generator=g).to(DEVICE).requires_grad_() if bias else None
    inputs = (x, w, b)
    y, grads = _grads(lambda *a: kernels.dwconv2d(*a, padding=pad, dilation=dil, backend='triton'), inputs)
    y_ref, grads_ref = _grads(lambda *a: kernels.dwconv2d(*a, padding=pad, dilation=dil, backend='torch'), inputs)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    _assert_close(y, y_ref, atol=1e-4)
    for name, a, e in zip(('x', 'weight', 'bias'), grads, grads_ref):
        _assert_close(a, e, atol=1e-3 if name != 'x' else 1e-4)


@pytest.mark.triton
def test_dwconv2d_triton_partial_grads_and_fp16():
    """Weight-only and input-only backward paths; fp16 in, fp32 accumulation, fp16 out."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, 7, 9, generator=g).to(DEVICE)
    w = torch.randn(3, 1, 5, 5, generator=g).to(DEVICE).requires_grad_()
    (dw,) = _grads(lambda *a: kernels.dwconv2d(*a, backend='triton'), (x, w))[1]
    (dw_ref,) = _grads(lambda *a: kernels.dwconv2d(*a, backend='torch'), (x, w))[1]
    _assert_close(dw, dw_ref, atol=1e-3)
    x.requires_grad_()
    w.requires_grad_(False)
    (dx,) = _grads(lambda *a: kernels.dwconv2d(*a, backend='triton'), (x, w))[1]
    (dx_ref,) = _grads(lambda *a: kernels.dwconv2d(*a, backend='torch'), (x, w))[1]
    _assert_close(dx, dx_ref, atol=1e-4)
    y16 = kernels.dwconv2d(x.detach().half(), w.half(), backend='triton')
    assert y16.dtype == torch.float16
    _assert_close(y16, dwconv2d_ref(x.detach().half().float(), w.half().float()), atol=2e-3, rtol=2e-3)


@pytest.mark.triton
@pytest.mark.parametrize('B,C,H,W,k,cl', [(2, 2, 5, 70, 3, False), (2, 34, 9, 9, 3, True)])
def test_dwconv2d_triton_gpu_tiling(B, C, H, W, k, cl):
    """The GPU tile heuristics (several spatial tiles, partial channel blocks, batch-split weight grad) in the
    interpreter: only the host-side choice of tiles is switched, the kernels are the same."""
    from kernels.triton.depthwise import dwconv2d_triton

    g = torch.Generator().manual_seed(C)
    x = torch.randn(B, C, H, W, generator=g).to(DEVICE)
    x = (x.contiguous(memory_format=torch.channels_last) if cl else x).requires_grad_()
    w = torch.randn(C, 1, k, k, generator=g).to(DEVICE).requires_grad_()
    b = torch.randn(C, generator=g).to(DEVICE).requires_grad_()
    y, grads = _grads(lambda *a: dwconv2d_triton(*a, padding=(k // 2, k // 2), dilation=(1, 1), gpu_tiles=True),
                      (x, w, b))
    y_ref, grads_ref = _grads(lambda *a: kernels.dwconv2d(*a, backend='torch'), (x, w, b))
    _assert_close(y, y_ref, atol=1e-4)
    for a, e in zip(grads, grads_ref):
        _assert_close(a, e, atol=1e-3)


@pytest.mark.triton
def test_dwconv2d_triton_strided_input_and_autocast():
    """A channel slice (as the dilated Inception path passes) and autocast, which F.conv2d follows."""
    g = torch.Generator().manual_seed(9)
    full = torch.randn(2, 7, 9, 8, generator=g).to(DEVICE).requires_grad_()
    w = torch.randn(3, 1, 3, 5, generator=g).to(DEVICE).requires_grad_()
    y, grads = _grads(lambda f, w_: kernels.dwconv2d(f[:, 2:5], w_, dilation=2, backend='triton'), (full, w))
    y_ref, grads_ref = _grads(lambda f, w_: kernels.dwconv2d(f[:, 2:5], w_, dilation=2, backend='torch'), (full, w))
    _assert_close(y, y_ref, atol=1e-4)
    for a, e in zip(grads, grads_ref):
        _assert_close(a, e, atol=1e-3)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        y = kernels.dwconv2d(full.detach()[:, :3], w.detach(), backend='triton')
        y_ref = kernels.dwconv2d(full.detach()[:, :3], w.detach(), backend='torch')
    assert y.dtype == y_ref.dtype == torch.bfloat16
    _assert_close(y, y_ref, atol=5e-2, rtol=2e-2)


@pytest.mark.triton
@pytest.mark.parametrize('B,C,H,W,ks,dil', [
    (2, 3, 9, 13, (3, 3), 1), (1, 2, 11, 9, (13, 13), 1), (1, 3, 9, 20, (1, 11), 2), (2, 2, 17, 7, (11, 1), 1)])
def test_dwconv2d_tensor_core_forward(B, C, H, W, ks, dil):
    """fp16/bf16 NCHW through the tensor-core kernels (Toeplitz forward and input grad, band-diagonal weight grad);
    fp16 here (the interpreter cannot compute in bf16). Weights enter the dot in the input's dtype, as in cuDNN."""
    from kernels.triton.depthwise import dwconv2d_triton

    g = torch.Generator().manual_seed(H * W)
    x = torch.randn(B, C, H, W, generator=g).to(DEVICE, torch.float16).requires_grad_()
    w = torch.randn(C, 1, *ks, generator=g).to(DEVICE, torch.float16).float().requires_grad_()
    b = torch.randn(C, generator=g).to(DEVICE).requires_grad_()
    padding = kernels.same_padding(ks, dil)
    # tensor_core_min_size=1: the tiny test planes take the tensor-core kernels too
    y, grads = _grads(lambda *a: dwconv2d_triton(*a, padding, (dil, dil), tensor_core_min_size=1), (x, w, b))
    x32 = x.detach().float().requires_grad_()
    y_ref, grads_ref = _grads(lambda *a: kernels.dwconv2d(*a, dilation=dil, backend='torch'), (x32, w, b))
    assert y.dtype == torch.float16
    for a, e in zip((y, *grads), (y_ref, *grads_ref)):
        assert (a.float() - e).abs().max() <= 2e-3 * e.abs().max()


@pytest.mark.triton
def test_inception_dw_tensor_core_forward():
    from kernels.triton.inception_mixer import inception_dw_triton

    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 11, 9, 7, generator=g).to(DEVICE, torch.float16).requires_grad_()
    params = []
    for ks in ((3, 3), (1, 11), (11, 1)):
        params += [torch.randn(3, 1, *ks, generator=g).to(DEVICE, torch.float16).float().requires_grad_(),
                   torch.randn(3, generator=g).to(DEVICE).requires_grad_()]
    y, grads = _grads(lambda *a: inception_dw_triton(*a, tensor_core_min_size=1), (x, *params))
    x32 = x.detach().float().requires_grad_()
    y_ref, grads_ref = _grads(lambda *a: kernels.inception_dw(*a, backend='torch'), (x32, *params))
    assert torch.equal(y[:, :2], x[:, :2])  # the identity split through the dot (weight 1) stays exact
    for a, e in zip((y, *grads), (y_ref, *grads_ref)):
        assert (a.float() - e).abs().max() <= 2e-3 * e.abs().max()


INCEPTION_CASES = [
    # B, C, gc, H, W, square, band, channels_last, bias
    (2, 11, 3, 9, 7, 3, 11, False, True),
    (1, 12, 4, 7, 9, 3, 9, True, True),  # C == 3 gc: no identity channels
    (1, 10, 2, 8, 11, 5, 7, False, False),
    (2, 13, 3, 11, 8, 3, 11, True, True),
]


@pytest.mark.triton
@pytest.mark.parametrize('B,C,gc,H,W,sq,band,cl,bias', INCEPTION_CASES)
def test_inception_dw_triton_matches_reference(B, C, gc, H, W, sq, band, cl, bias):
    g = torch.Generator().manual_seed(C * 10 + band)
    x = torch.randn(B, C, H, W, generator=g).to(DEVICE)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    params = []
    for ks in ((sq, sq), (1, band), (band, 1)):
        params.append(torch.randn(gc, 1, *ks, generator=g).to(DEVICE).requires_grad_())
        params.append(torch.randn(gc, generator=g).to(DEVICE).requires_grad_() if bias else None)
    inputs = (x, *params)
    y, grads = _grads(lambda *a: kernels.inception_dw(*a, backend='triton'), inputs)
    y_ref, grads_ref = _grads(lambda *a: kernels.inception_dw(*a, backend='torch'), inputs)
    assert y.is_contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
    torch.testing.assert_close(y[:, :C - 3 * gc], x[:, :C - 3 * gc], atol=0, rtol=0)  # identity is an exact copy
    _assert_close(y, y_ref, atol=1e-4)
    assert len(grads) == len(grads_ref)
    for a, e in zip(grads, grads_ref):
        _assert_close(a, e, atol=1e-3)


LONGCONV_CASES = [
    # B, H, L, bidirectional, with D
    (2, 3, 17, False, True),
    (2, 5, 64, True, True),
    (1, 3, 1500, True, False),  # L > the 1024 block: several blocks per row
    (3, 2, 9, False, False),
]


@pytest.mark.triton
@pytest.mark.parametrize('B,H,L,bidirectional,with_D', LONGCONV_CASES)
def test_longconv_triton_matches_reference(B, H, L, bidirectional, with_D):
    g = torch.Generator().manual_seed(B + H + L)
    u = torch.randn(B, H, L, generator=g).to(DEVICE).requires_grad_()
    k = (torch.randn(*((2,) if bidirectional else ()), H, L, generator=g) / L ** 0.5).to(DEVICE).requires_grad_()
    D = torch.randn(H, generator=g).to(DEVICE).requires_grad_() if with_D else None
    inputs = (u, k, D)
    y, grads = _grads(lambda *a: kernels.longconv(*a, bidirectional=bidirectional, backend='triton'), inputs)
    y_ref, grads_ref = _grads(lambda *a: kernels.longconv(*a, bidirectional=bidirectional, backend='torch'), inputs)
    _assert_close(y, y_ref, atol=1e-5)
    for a, e in zip(grads, grads_ref):
        _assert_close(a, e, atol=1e-4)


@pytest.mark.triton
def test_longconv_triton_partial_grads_and_half_inputs():
    g = torch.Generator().manual_seed(11)
    u = torch.randn(2, 3, 20, generator=g).to(DEVICE)
    k = torch.randn(3, 20, generator=g).to(DEVICE).requires_grad_()
    D = torch.randn(3, generator=g).to(DEVICE).requires_grad_()
    dk, dD = _grads(lambda *a: kernels.longconv(*a, backend='triton'), (u, k, D))[1]
    dk_ref, dD_ref = _grads(lambda *a: kernels.longconv(*a, backend='torch'), (u, k, D))[1]
    _assert_close(dk, dk_ref, atol=1e-4)
    _assert_close(dD, dD_ref, atol=1e-4)
    dtypes = (torch.float16, torch.bfloat16) if DEVICE == 'cuda' or kernels.interpret_mode() else (torch.float16,)
    for dtype in dtypes:  # bf16 only loaded/stored by the kernels, never computed in: the interpreter handles that
        y = kernels.longconv(u.to(dtype), k, D, backend='triton')
        assert y.dtype == dtype
        _assert_close(y, longconv_ref(u.to(dtype).float(), k, D), atol=2e-2, rtol=1e-2)


# --------------------------------------------------------------------------------------------------------------
# Dispatch and input checks

def test_auto_runs_reference_on_cpu():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    assert not kernels.use_triton('auto', x, 'dwconv2d')
    torch.testing.assert_close(kernels.dwconv2d(x, w), dwconv2d_ref(x, w))
    gw = [torch.randn(1, 1, 3, 3), None, torch.randn(1, 1, 1, 5), None, torch.randn(1, 1, 5, 1), None]
    torch.testing.assert_close(kernels.inception_dw(x, *gw), inception_dw_ref(x, *gw))
    u, k = torch.randn(2, 3, 8), torch.randn(3, 8)
    torch.testing.assert_close(kernels.longconv(u, k), longconv_ref(u, k))


def test_bad_backend_and_shapes():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    with pytest.raises(ValueError, match='kernel backend must be one of'):
        kernels.dwconv2d(x, w, backend='cuda')
    with pytest.raises(ValueError, match=r'weight must have shape \(4, 1, kh, kw\)'):
        kernels.dwconv2d(x, torch.randn(4, 4, 3, 3))
    with pytest.raises(ValueError, match='bias of weight must have shape'):
        kernels.dwconv2d(x, w, torch.randn(3))
    with pytest.raises(ValueError, match='odd kernel sizes'):
        kernels.dwconv2d(x, torch.randn(4, 1, 4, 4))
    with pytest.raises(ValueError, match='x must be'):
        kernels.dwconv2d(x[0], w)
    with pytest.raises(ValueError, match='do not fit'):
        kernels.inception_dw(x, *[torch.randn(2, 1, 3, 3), None] * 3)
    with pytest.raises(ValueError, match=r'w_w must have shape \(1, 1, kh, kw\)'):
        kernels.inception_dw(x, torch.randn(1, 1, 3, 3), None, torch.randn(2, 1, 1, 5), None,
                             torch.randn(1, 1, 5, 1), None)
    u = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match=r'bidirectional kernel .* must have shape \(2, 3, 8\)'):
        kernels.longconv(u, torch.randn(3, 8), bidirectional=True)
    with pytest.raises(ValueError, match=r'causal kernel .* must have shape \(3, 8\)'):
        kernels.longconv(u, torch.randn(3, 7))
    with pytest.raises(ValueError, match=r'D must have shape \(3,\)'):
        kernels.longconv(u, torch.randn(3, 8), torch.randn(4))


@pytest.mark.triton
def test_triton_backend_errors(monkeypatch):
    x, w = torch.randn(1, 2, 5, 5, dtype=torch.float64), torch.randn(2, 1, 3, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match='supports'):
        kernels.dwconv2d(x.to(DEVICE), w.to(DEVICE), backend='triton')
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    with pytest.raises(RuntimeError, match='TRITON_INTERPRET=1'):
        kernels.dwconv2d(x.float(), w.float(), backend='triton')


def test_scripted_callers_run_the_references():
    class Net(torch.nn.Module):
        def forward(self, x, w, k):
            y = dwconv2d(x, w, None, (1, 2), 1, 'auto')
            z = kernels.inception_dw(y, w[:1], None, w[1:2, :, 1:2], None, w[2:3, :, :, 2:3], None)
            return longconv(z.flatten(2), k, None, True)

    x, w, k = torch.randn(1, 3, 5, 4), torch.randn(3, 1, 3, 5), torch.randn(2, 3, 20)
    torch.testing.assert_close(torch.jit.script(Net())(x, w, k), Net()(x, w, k))


def test_record_calls_describes_each_call():
    x, w = torch.randn(1, 4, 6, 6), torch.randn(4, 1, 3, 3)
    with kernels.record_calls() as calls:
        dwconv2d(x, w, dilation=2, backend='torch')
        longconv(torch.randn(2, 3, 8), torch.randn(2, 3, 8), bidirectional=True)
    assert [op for op, _ in calls] == ['dwconv2d', 'longconv']
    assert calls[0][1]['x'] == (1, 4, 6, 6) and calls[0][1]['dilation'] == (2, 2) and calls[0][1]['backend'] == 'torch'
    assert calls[1][1]['u'] == (2, 3, 8) and calls[1][1]['bidirectional']
    dwconv2d(x, w)
    assert len(calls) == 2  # nothing is recorded outside the block


def test_package_imports_without_triton(monkeypatch):
    """A fresh copy of the package, loaded while `import triton` fails, runs the reference and refuses 'triton'."""
    monkeypatch.setitem(sys.modules, 'triton', None)
    pkg_dir = Path(kernels.__file__).parent
    spec = importlib.util.spec_from_file_location(
        'kernels_without_triton', pkg_dir / '__init__.py', submodule_search_locations=[str(pkg_dir)])
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert not module.triton_available()
    x, w = torch.randn(1, 2, 5, 5), torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(module.dwconv2d(x, w), dwconv2d_ref(x, w))
    with pytest.raises(RuntimeError, match='needs the triton package'):
        module.dwconv2d(x, w, backend='triton')
    assert not [name for name in sys.modules if name.startswith('kernels_without_triton.triton')]
    for name in [name for name in sys.modules if name.startswith('kernels_without_triton.')]:
        monkeypatch.delitem(sys.modules, name)


def test_functions_stay_leaves_under_fx():
    """The zoo registers every kernel with timm's FX tracer (zoo.models.layers): traced graphs call it whole."""
    from timm.layers import get_notrace_functions

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 1, 5, 5))
            self.k = torch.nn.Parameter(torch.randn(3, 8))

        def forward(self, x):
            y = dwconv2d(x, self.weight, backend='auto').relu()
            return longconv(y.flatten(2)[..., :8], self.k)

    notrace = get_notrace_functions()
    assert {kernels.dwconv2d, kernels.inception_dw, kernels.longconv, kernels.conv2d_winograd} <= set(notrace)
    net = Net()
    gm = torch.fx.GraphModule(net, torch.fx.Tracer(autowrap_functions=tuple(notrace)).trace(net))
    targets = {n.target for n in gm.graph.nodes if n.op == 'call_function'}
    assert {kernels.dwconv2d, kernels.longconv} <= targets
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(gm(x), net(x))


@pytest.mark.parametrize('kernel,flags', [
    ('dwconv2d', ['--channels', '3', '--img-size', '7', '--kernel-size', '3']),
    ('inception_dw', ['--channels', '16', '--img-size', '7', '--branch-ratio', '0.25', '--band-kernel-size', '5']),
    ('longconv', ['--channels', '2', '--seq-len', '64', '--bidirectional']),
    ('winograd', ['--channels', '8', '--img-size', '9']),
])
def test_kernel_micro_benchmark_mode(kernel, flags, capsys):
    from zoo.bench import main

    rows = main(['--kernel', kernel, *flags, '-b', '1', '--precision', 'float32', '--device', 'cpu',
                 '--num-warm-iter', '0', '--num-bench-iter', '1'])
    assert len(rows) == 1 and not any(k.endswith('_error') for k in rows[0]), rows
    row = rows[0]
    baseline = {'dwconv2d': 'torch_nchw', 'inception_dw': 'timm_nchw', 'longconv': 'torch_fft',
                'winograd': 'torch'}[kernel]
    assert row[f'{baseline}_fwd_ms'] > 0 and row[f'{baseline}_fwdbwd_ms'] > 0 and row[f'{baseline}_fwd_gbps'] > 0
    if kernel == 'winograd' or (kernels.triton_available() and kernels.interpret_mode()):
        assert row['speedup_fwd'] > 0 and row['speedup_fwdbwd'] > 0
    assert json.loads(capsys.readouterr().out.strip()) == row


def test_kernel_micro_benchmark_reads_shapes_from_a_model():
    from zoo.bench import main

    rows = main(['--kernel', 'dwconv2d', '--model', 'unireplknet_a', '--img-size', '32', '-b', '1', '--precision',
                 'float32', '--device', 'cpu', '--num-warm-iter', '0', '--num-bench-iter', '1', '--impl', 'torch_nchw'])
    # unireplknet_a: 3x3 convs at 8x8, the 13x13 Dilated Reparam Blocks (13x13 and five dilated branches) at 4x4,
    # 2x2 and 1x1: one row per distinct shape, each timed.
    shapes = {(r['channels'], r['img_size'], r['kernel_size'], r['dilation']) for r in rows}
    assert len(shapes) == len(rows) and (40, '8x8', '3x3', 1) in shapes and (80, '4x4', '13x13', 1) in shapes
    assert (80, '4x4', '3x3', 5) in shapes and all(r['model'] == 'unireplknet_a' and r['torch_nchw_fwd_ms'] > 0
                                                   for r in rows)
