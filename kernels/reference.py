"""Pure-torch references for every kernel: the semantics the Triton kernels must reproduce.

They run anywhere (CPU included) and are what `backend='torch'` (and `'auto'` off CUDA) executes.
"""
import torch
import torch.nn.functional as F


def same_padding(kernel_size: tuple[int, int], dilation=1) -> tuple[int, int]:
    """Padding that keeps the spatial size of a stride-1 convolution with an odd kernel; dilation int or (dh, dw)."""
    kh, kw = kernel_size
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'same' padding needs odd kernel sizes, got {kh}x{kw}")
    return (kh - 1) * dh // 2, (kw - 1) * dw // 2


def dwconv2d_ref(x, weight, bias=None, padding=None, dilation=1):
    """Depthwise conv2d, stride 1. x: (B, C, H, W); weight: (C, 1, kh, kw); bias: (C,) or None.

    `padding=None` means "same" padding.
    """
    if padding is None:
        padding = same_padding(weight.shape[-2:], dilation)
    return F.conv2d(x, weight, bias, stride=1, padding=padding, dilation=dilation, groups=x.shape[1])


def inception_dw_ref(x, w_hw, b_hw, w_w, b_w, w_h, b_h):
    """InceptionNeXt token mixer. Channels split as (identity, square, 1xk band, kx1 band).

    x: (B, C, H, W); each branch weight: (gc, 1, kh, kw) with the same gc; identity gets C - 3 * gc channels.
    """
    gc = w_hw.shape[0]
    x_id, x_hw, x_w, x_h = torch.split(x, (x.shape[1] - 3 * gc, gc, gc, gc), dim=1)
    return torch.cat((
        x_id,
        dwconv2d_ref(x_hw, w_hw, b_hw),
        dwconv2d_ref(x_w, w_w, b_w),
        dwconv2d_ref(x_h, w_h, b_h),
    ), dim=1)


def longconv_ref(u, k, D=None, bidirectional=False):
    """Convolution with a kernel as long as the sequence, computed by FFT.

    u: (B, H, L); k: (H, L) causal kernel, or (2, H, L) when bidirectional (forward kernel, backward kernel:
    the backward kernel applies to the reversed sequence); D: (H,) skip term or None. Returns (B, H, L) in u's dtype,
    computed in fp32 (fp64 for fp64 inputs).
    """
    L = u.shape[-1]
    if bidirectional:
        if k.dim() != 3 or k.shape[0] != 2:
            raise ValueError(f"a bidirectional kernel has shape (2, H, L), got {tuple(k.shape)}")
        # Non-causal kernel of length 2L: k_fwd at lags 0..L-1, k_bwd mirrored onto lags -L..-1 (wrapped to the end).
        k = F.pad(k[0], (0, L)) + F.pad(k[1].flip(-1), (L, 0))
    n = 2 * L
    dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 FFTs for fp32 and below, fp64 stays fp64
    k_f = torch.fft.rfft(k.to(dtype), n=n)
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype).unsqueeze(-1)
    return y.to(u.dtype)
