"""Winograd F(4x4, r x r) convolution for dense, wide, stride-1 convs on the CPU.

The Lie-group convs are dense convs over hundreds of packed (channel, sample) channels whose weights are generated
anew at every training step, and oneDNN's direct 5x5 convolution already runs them near the core's FP32 peak. Only
less arithmetic makes them faster: F(4x4, 5x5) computes each 4x4 output tile from an 8x8 input tile with 64
multiplications per (output, input) channel pair instead of 400 (6.25x fewer), as 64 independent channel GEMMs.
The input transform of all overlapping tiles is one convolution of each channel alone, the kernel and output
transforms are Kronecker-product GEMMs, and autograd differentiates the whole chain.

Rounding: the transforms use the points 0, +-1, +-2, +-1/2 and infinity (Lavin and Gray, 2016); in float32 the
result differs from a float64 convolution by about 1e-5 of its largest value (a few times a direct float32
convolution). Not for half precision, where these transforms lose too many bits.
"""
import functools

import torch
import torch.nn.functional as F

from .backend import note_call, recording

__all__ = ['conv2d_winograd', 'winograd_supported', 'WINOGRAD_KERNEL_SIZES']

TILE = 4  # output tile side m
# Interpolation points for alpha = m + r - 1 (the last one is infinity, added by the construction).
_POINTS = {3: (0., 1., -1., 2., -2.), 5: (0., 1., -1., 2., -2., .5, -.5)}
WINOGRAD_KERNEL_SIZES = tuple(_POINTS)
WINOGRAD_DTYPES = (torch.float32, torch.float64)
# Images go through the channel GEMMs a few at a time: enough tile columns for an efficient GEMM (about 90 % of a
# large one from 256 on), while every intermediate stays a few MiB, which the allocator hands back to the next step
# instead of mapping fresh (page-faulting) memory for tensors of hundreds of MiB at every call.
GEMM_COLUMNS = 256


@functools.lru_cache(maxsize=None)
def winograd_transforms(kernel_size: int):
    """Float64 Kronecker transforms (A^T x A^T, G x G, B^T x B^T) of F(m x m, r x r), m = TILE.

    Cook-Toom construction: 1-D correlation y = A^T [(G g) * (B^T d)] with G the evaluation of the kernel polynomial,
    A^T the transposed evaluation of the output polynomial, B^T the inverse transposed evaluation matrix of the
    product, all at the same points; the 2-D transform is the Kronecker square (row-major tiles).
    """
    m, r = TILE, kernel_size
    alpha = m + r - 1
    points = torch.tensor(_POINTS[r], dtype=torch.float64)

    def evaluation(degree: int) -> torch.Tensor:  # (alpha, degree): polynomials of that many coefficients
        finite = points.unsqueeze(1) ** torch.arange(degree, dtype=torch.float64)
        infinity = torch.zeros(1, degree, dtype=torch.float64)
        infinity[0, -1] = 1.0
        return torch.cat([finite, infinity])

    a_t, g, b_t = evaluation(m).T, evaluation(r), torch.linalg.inv(evaluation(alpha)).T
    return torch.kron(a_t, a_t), torch.kron(g, g), torch.kron(b_t, b_t)


def winograd_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `conv2d_winograd` handles this input / weight pair (dtype, square odd kernel size, dense)."""
    r = weight.shape[-1]
    return (x.dtype in WINOGRAD_DTYPES and weight.dtype == x.dtype and r in WINOGRAD_KERNEL_SIZES
            and weight.shape[-2] == r and weight.shape[1] == x.shape[1])


def conv2d_winograd(x: torch.Tensor, weight: torch.Tensor, padding: int = 0,
                    gemm_columns: int = GEMM_COLUMNS) -> torch.Tensor:
    """F.conv2d(x, weight, padding=padding) (stride 1, no dilation, no groups) by Winograd F(4x4, r x r).

    x: (B, C_in, H, W); weight: (C_out, C_in, r, r), r in WINOGRAD_KERNEL_SIZES; float32 or float64.
    gemm_columns: the images of a step give at least this many tiles (GEMM_COLUMNS), or are the whole batch.
    """
    if not winograd_supported(x, weight):
        raise ValueError(f"conv2d_winograd: needs float32/float64 input and a matching dense (C_out, "
                         f"{x.shape[1]}, r, r) weight with r in {WINOGRAD_KERNEL_SIZES}, got input "
                         f"{tuple(x.shape)} {x.dtype} and weight {tuple(weight.shape)} {weight.dtype}")
    if recording():
        note_call('winograd', x=tuple(x.shape), weight=tuple(weight.shape), padding=padding, dtype=x.dtype)
    return winograd_with_transforms(x, weight, padding, winograd_transforms(weight.shape[-1]), gemm_columns)


def winograd_with_transforms(x: torch.Tensor, weight: torch.Tensor, padding: int, transforms,
                             gemm_columns: int = GEMM_COLUMNS) -> torch.Tensor:
    """The F(4x4, r x r) algorithm with the given Kronecker transforms (A^T x A^T, G x G, B^T x B^T).

    With the absolute values of the transforms, x and weight, it gives the sum of the magnitudes of every term the
    algorithm adds up: the quantity its rounding error is proportional to (tests/test_winograd.py).
    """
    kron_a, kron_g, kron_b = (t.to(x.device, x.dtype) for t in transforms)
    m, r = TILE, weight.shape[-1]
    alpha = m + r - 1
    batch, c_in, h, w = x.shape
    c_out = weight.shape[0]
    h_out, w_out = h + 2 * padding - r + 1, w + 2 * padding - r + 1
    if h_out < 1 or w_out < 1:
        raise ValueError(f"conv2d_winograd: a {r}x{r} kernel with padding {padding} leaves no output for a "
                         f"{h}x{w} input")
    if gemm_columns < 1:
        raise ValueError(f"conv2d_winograd: gemm_columns must be >= 1, got {gemm_columns}")
    tiles_h, tiles_w = -(-h_out // m), -(-w_out // m)
    tiles = tiles_h * tiles_w
    # The input transform B^T d B of every alpha x alpha tile (alpha <= 2m), as a convolution of each channel alone:
    # without autograd, one stride-m conv (the fastest forward); with it, the same map on 2x2 blocks of m x m pixels
    # after a space-to-depth, whose backward is an ordinary conv (the single-channel one's is 4x slower).
    differentiate = torch.is_grad_enabled() and x.requires_grad
    blocks = 2 * m - alpha if differentiate else 0  # padding up to whole m x m blocks
    # Pad so that every output tile has its full alpha x alpha input tile (overlapping by r - 1).
    x = F.pad(x, (padding, padding + m * tiles_w - w_out + blocks, padding, padding + m * tiles_h - h_out + blocks))
    if differentiate:
        input_transform = F.pad(kron_b.view(alpha * alpha, alpha, alpha), (0, blocks, 0, blocks)).view(
            alpha * alpha, 2, m, 2, m).permute(0, 2, 4, 1, 3).reshape(alpha * alpha, m * m, 2, 2)
    else:
        input_transform = kron_b.view(alpha * alpha, 1, alpha, alpha)
    u = (kron_g @ weight.reshape(c_out * c_in, r * r).T).view(alpha * alpha, c_out, c_in)  # kernel G g G^T
    outputs = []
    step = -(-gemm_columns // tiles)
    for chunk in x.split(step):  # (autograd joins split's gradients once; a slice's would be zero-filled per step)
        n = chunk.shape[0]
        chunk = chunk.reshape(n * c_in, 1, chunk.shape[2], chunk.shape[3])
        if differentiate:
            v = F.conv2d(F.pixel_unshuffle(chunk, m), input_transform)
        else:
            v = F.conv2d(chunk, input_transform, stride=m)  # (n C_in, alpha^2, tiles_h, tiles_w)
        v = v.view(n, c_in, alpha * alpha, tiles).permute(2, 1, 0, 3).reshape(alpha * alpha, c_in, n * tiles)
        products = torch.bmm(u, v)  # (alpha^2, C_out, n tiles): one channel GEMM per tile position
        out = (kron_a @ products.view(alpha * alpha, c_out * n * tiles)).view(m, m, c_out, n, tiles_h, tiles_w)
        outputs.append(out.permute(3, 2, 4, 0, 5, 1).reshape(n, c_out, m * tiles_h, m * tiles_w))
    # (a copy into slices of one output would make autograd copy its whole gradient once per step)
    y = outputs[0] if len(outputs) == 1 else torch.cat(outputs)
    return y[..., :h_out, :w_out]
