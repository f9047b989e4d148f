"""The InceptionNeXt token mixer: `inception_dw` and its pure-torch reference `inception_dw_ref`.

Channels split into (identity | k x k square | 1 x band | band x 1), each convolved branch depthwise with "same"
padding, stride 1. The Triton path (`kernels.triton.inception_mixer`) runs all four splits in one launch per pass and
writes the concatenated output directly (the identity split is a 1x1 "conv" with weight 1, an exact copy); the
reference splits, convolves and concatenates as timm's `InceptionDWConv2d` does.
"""
from typing import Optional

import torch

from .backend import autocast_dtype, note_call, recording, use_triton
from .depthwise import check_depthwise_weight, dwconv2d_ref, same_padding

__all__ = ['inception_dw', 'inception_dw_ref']


def inception_dw_ref(
        x: torch.Tensor,
        w_hw: torch.Tensor, b_hw: Optional[torch.Tensor],
        w_w: torch.Tensor, b_w: Optional[torch.Tensor],
        w_h: torch.Tensor, b_h: Optional[torch.Tensor],
) -> torch.Tensor:
    """x: (B, C, H, W); each branch weight (gc, 1, kh, kw) with the same gc; identity gets C - 3 gc channels."""
    gc = w_hw.shape[0]
    x_id, x_hw, x_w, x_h = torch.split(x, [x.shape[1] - 3 * gc, gc, gc, gc], dim=1)
    return torch.cat((
        x_id,
        dwconv2d_ref(x_hw, w_hw, b_hw),
        dwconv2d_ref(x_w, w_w, b_w),
        dwconv2d_ref(x_h, w_h, b_h),
    ), dim=1)


def _check_args(x, w_hw, b_hw, w_w, b_w, w_h, b_h, backend):
    if x.dim() != 4:
        raise ValueError(f"inception_dw: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    gc = w_hw.shape[0]
    if 3 * gc > x.shape[1]:
        raise ValueError(f"inception_dw: 3 branches of {gc} channels do not fit in {x.shape[1]} input channels")
    for name, w, b in (('w_hw', w_hw, b_hw), ('w_w', w_w, b_w), ('w_h', w_h, b_h)):
        check_depthwise_weight('inception_dw', w, b, gc, name)
        same_padding(w.shape[-2:])  # odd kernel sizes only
    if recording():
        note_call('inception_dw', x=tuple(x.shape), kernel_sizes=tuple(tuple(w.shape[-2:]) for w in (w_hw, w_w, w_h)),
                  branch_channels=gc, bias=b_hw is not None, dtype=x.dtype, channels_last=not x.is_contiguous(), backend=backend)


def inception_dw(
        x: torch.Tensor,
        w_hw: torch.Tensor, b_hw: Optional[torch.Tensor],
        w_w: torch.Tensor, b_w: Optional[torch.Tensor],
        w_h: torch.Tensor, b_h: Optional[torch.Tensor],
        backend: str = 'auto',
) -> torch.Tensor:
    """InceptionNeXt mixer. x: (B, C, H, W); w_hw: (gc, 1, k, k), w_w: (gc, 1, 1, band), w_h: (gc, 1, band, 1) (any
    odd sizes), biases (gc,) or None; the first C - 3 gc channels pass through unchanged.
    """
    if torch.jit.is_scripting():  # TorchScript runs the reference (the code below is never compiled)
        return inception_dw_ref(x, w_hw, b_hw, w_w, b_w, w_h, b_h)
    _check_args(x, w_hw, b_hw, w_w, b_w, w_h, b_h, backend)
    if use_triton(backend, x, 'inception_dw'):
        return _inception_dw_triton(autocast_dtype(x), w_hw, b_hw, w_w, b_w, w_h, b_h)
    return inception_dw_ref(x, w_hw, b_hw, w_w, b_w, w_h, b_h)


def _inception_dw_triton(*args):
    from .triton.inception_mixer import inception_dw_triton  # Triton is imported on first use
    return inception_dw_triton(*args)
