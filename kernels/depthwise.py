"""Depthwise 2-D convolution, stride 1: `dwconv2d` and its pure-torch reference `dwconv2d_ref`.

x: (B, C, H, W), NCHW or channels_last; weight: (C, 1, kh, kw), any kernel size (odd for "same" padding); bias (C,).
The Triton kernels (`kernels.triton.depthwise`) read both memory formats through strides, accumulate in fp32 and
write the output in x's format; fp16 / bf16 NCHW planes use tensor-core kernels. The reference is `F.conv2d` with
`groups=C`.
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .backend import autocast_dtype, note_call, recording, use_triton

__all__ = ['dwconv2d', 'dwconv2d_ref', 'same_padding']

IntPair = Union[int, Tuple[int, int]]


def to_pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return v, v
    return v[0], v[1]


def same_padding(kernel_size: Tuple[int, int], dilation: IntPair = 1) -> Tuple[int, int]:
    """Padding that keeps the spatial size of a stride-1 convolution with an odd kernel."""
    kh, kw = kernel_size
    dh, dw = to_pair(dilation)
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"'same' padding needs odd kernel sizes, got {kh}x{kw}")
    return (kh - 1) * dh // 2, (kw - 1) * dw // 2


def dwconv2d_ref(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        padding: Optional[IntPair] = None,
        dilation: IntPair = 1,
) -> torch.Tensor:
    """The reference: F.conv2d with groups = C. `padding=None` means "same" padding."""
    dilation = to_pair(dilation)
    padding = same_padding((weight.shape[-2], weight.shape[-1]), dilation) if padding is None else to_pair(padding)
    return F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])


def check_depthwise_weight(op: str, weight: torch.Tensor, bias: Optional[torch.Tensor], channels: int,
                           name: str = 'weight'):
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(f"{op}: {name} must have shape ({channels}, 1, kh, kw) for depthwise conv over {channels} "
                         f"channels, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias of {name} must have shape ({channels},), got {tuple(bias.shape)}")


def _checked_pair(v, name: str) -> Tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ValueError(f"dwconv2d: {name} must be an int or a pair of ints, got {v!r}")
    return pair


def _check_args(x, weight, bias, padding, dilation, backend) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """Clear errors for bad arguments; returns (padding, dilation) as pairs."""
    if x.dim() != 4:
        raise ValueError(f"dwconv2d: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    check_depthwise_weight('dwconv2d', weight, bias, x.shape[1])
    dilation = _checked_pair(dilation, 'dilation')
    if min(dilation) < 1:
        raise ValueError(f"dwconv2d: dilation must be >= 1, got {dilation}")
    padding = same_padding(weight.shape[-2:], dilation) if padding is None else _checked_pair(padding, 'padding')
    if min(padding) < 0:
        raise ValueError(f"dwconv2d: padding must be >= 0, got {padding}")
    if recording():
        note_call('dwconv2d', x=tuple(x.shape), weight=tuple(weight.shape), bias=bias is not None, padding=padding,
                  dilation=dilation, dtype=x.dtype, channels_last=not x.is_contiguous(), backend=backend)
    return padding, dilation


def dwconv2d(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: Optional[torch.Tensor] = None,
        padding: Optional[IntPair] = None,
        dilation: IntPair = 1,
        backend: str = 'auto',
) -> torch.Tensor:
    """Depthwise conv2d, stride 1. x: (B, C, H, W); weight: (C, 1, kh, kw); bias: (C,) or None.

    padding: None ('same' for odd kernels), an int or (pad_h, pad_w); dilation: an int or (dil_h, dil_w).
    backend: 'auto' | 'torch' | 'triton' (see `kernels.backend`). Output in x's memory format.
    """
    if torch.jit.is_scripting():  # TorchScript runs the reference (the code below is never compiled)
        return dwconv2d_ref(x, weight, bias, padding, dilation)
    padding, dilation = _check_args(x, weight, bias, padding, dilation, backend)
    if use_triton(backend, x, 'dwconv2d'):
        return _dwconv2d_triton(autocast_dtype(x), weight, bias, padding, dilation)
    return dwconv2d_ref(x, weight, bias, padding, dilation)


def _dwconv2d_triton(x, weight, bias, padding, dilation):
    from .triton.depthwise import dwconv2d_triton  # Triton is imported on first use
    return dwconv2d_triton(x, weight, bias, padding, dilation)
