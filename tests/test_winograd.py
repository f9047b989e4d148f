"""Winograd F(4x4, r x r) convolution against F.conv2d: values, gradients, odd sizes, rounding, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from kernels import conv2d_winograd, winograd_supported
from kernels.winograd import winograd_transforms, winograd_with_transforms

pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('padding', [0, 1, 2])
@pytest.mark.parametrize('size', [(9, 9), (12, 7), (16, 16)])
def test_matches_conv2d_in_float64(kernel_size, padding, size):
    gen = torch.Generator().manual_seed(kernel_size * 10 + padding)
    x = torch.randn(2, 6, *size, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 6, kernel_size, kernel_size, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(conv2d_winograd(x, w, padding), F.conv2d(x, w, padding=padding), rtol=0, atol=1e-11)


@pytest.mark.parametrize('kernel_size', [3, 5])
@pytest.mark.parametrize('gemm_columns', [1, 256])  # an image per step, or the whole batch in one
def test_gradients_match_conv2d(kernel_size, gemm_columns):
    gen = torch.Generator().manual_seed(kernel_size)
    x = torch.randn(3, 4, 11, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, kernel_size, kernel_size, generator=gen, dtype=torch.float64, requires_grad=True)
    pad = kernel_size // 2
    cotangent = torch.randn(3, 3, 11, 10, generator=gen, dtype=torch.float64)
    ours = torch.autograd.grad(conv2d_winograd(x, w, pad, gemm_columns), (x, w), cotangent)
    ref = torch.autograd.grad(F.conv2d(x, w, padding=pad), (x, w), cotangent)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x, w: conv2d_winograd(x, w, 1, gemm_columns),
                                    (x[:2, :2, :6, :6].detach().requires_grad_(), w[:2, :2].detach().requires_grad_()))


def test_steps_over_the_batch_give_the_same_result():
    # Without autograd the input transform takes another form (a strided conv) than with it; both, in steps of any size.
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, 13, 9, generator=gen, dtype=torch.float64)
    w = torch.randn(4, 6, 5, 5, generator=gen, dtype=torch.float64)
    ref = F.conv2d(x, w, padding=2)
    for gemm_columns in (1, 25, 10_000):
        torch.testing.assert_close(conv2d_winograd(x, w, 2, gemm_columns), ref, rtol=0, atol=1e-11)
        with_graph = conv2d_winograd(x.clone().requires_grad_(), w, 2, gemm_columns)
        torch.testing.assert_close(with_graph.detach(), ref, rtol=0, atol=1e-11)


def test_float32_rounding_stays_within_its_error_bound():
    # The wide packed-channel case the Lie-group layers use it for: many input channels, 5x5, 'same' padding.
    # Each output is a chain of sums (input transform, kernel transform, channel GEMM, output transform) of K terms
    # in all. Rounding errors of a sum are bounded by the unit roundoff u times the sum of the terms' magnitudes,
    # which is the algorithm run in float64 on |x|, |w| with |transforms|; random-sign errors grow as sqrt(K)
    # (Higham and Mary, SIAM J. Sci. Comput. 2019). Nothing here depends on another library's accuracy.
    gen = torch.Generator().manual_seed(0)
    c_in, r, alpha = 96, 5, 4 + 5 - 1
    x = torch.randn(2, c_in, 18, 18, generator=gen)
    w = torch.randn(32, c_in, r, r, generator=gen) / 50
    exact = F.conv2d(x.double(), w.double(), padding=2)
    error = (conv2d_winograd(x, w, 2).double() - exact).abs()
    abs_transforms = [t.abs() for t in winograd_transforms(r)]
    magnitude = winograd_with_transforms(x.double().abs(), w.double().abs(), 2, abs_transforms)
    terms = alpha ** 2 + r ** 2 + c_in + alpha ** 2
    unit_roundoff = torch.finfo(torch.float32).eps / 2
    assert (error <= math.sqrt(terms) * unit_roundoff * magnitude).all()
    # and it is the float32 rounding of a float64-exact algorithm: float64 is 2^29 times closer
    error64 = (conv2d_winograd(x.double(), w.double(), 2) - exact).abs()
    assert (error64 <= math.sqrt(terms) * torch.finfo(torch.float64).eps / 2 * magnitude).all()


def test_unsupported_inputs_are_named():
    x = torch.randn(1, 4, 8, 8)
    assert winograd_supported(x, torch.randn(2, 4, 5, 5))
    assert not winograd_supported(x, torch.randn(2, 4, 7, 7))
    assert not winograd_supported(x.half(), torch.randn(2, 4, 5, 5).half())
    with pytest.raises(ValueError, match='r in'):
        conv2d_winograd(x, torch.randn(2, 4, 7, 7))
    with pytest.raises(ValueError, match='C_out, 4'):
        conv2d_winograd(x, torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match='gemm_columns must be >= 1'):
        conv2d_winograd(x, torch.randn(2, 4, 5, 5), 2, gemm_columns=0)
    with pytest.raises(ValueError, match='leaves no output'):
        conv2d_winograd(torch.randn(1, 4, 3, 3), torch.randn(2, 4, 5, 5))
