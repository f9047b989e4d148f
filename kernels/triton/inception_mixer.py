"""Fused InceptionNeXt token mixer: identity | kxk | 1xk | kx1 depthwise branches in one launch per pass.

The four channel splits are four segments of the segmented depthwise kernels in `kernels.triton.depthwise`: the identity
split is a 1x1 "conv" with weight 1 (a copy, exact in every dtype), so the forward writes the concatenated output
in one pass with no split/cat copies; the input grad is one more launch (flipped taps; identity passes dy through)
and the weight and bias grads of the three branches one more.
"""
from typing import Optional

import torch

from .depthwise import TENSOR_CORE_MIN_SIZE, conv_segments_fwd, conv_segments_wgrad, is_channels_last, tuning


def _branch_segments(n_id, weights, identity=True):
    """Flattened segments (c_begin, c_end, kh, kw, pad_h, pad_w, w_off) for identity + branches, "same" padding."""
    segments = [0, n_id, 1, 1, 0, 0, 0] if n_id > 0 and identity else []
    c, off = n_id, n_id
    for w in weights:
        gc, _, kh, kw = w.shape
        segments += [c, c + gc, kh, kw, (kh - 1) // 2, (kw - 1) // 2, off]
        c += gc
        off += w.numel()
    return segments


def _pack(n_id, weights, flip=False):
    ones = weights[0].new_ones(n_id, dtype=torch.float32)
    parts = [w.detach().flip(-1, -2) if flip else w.detach() for w in weights]
    return torch.cat([ones] + [p.reshape(-1).float() for p in parts]).contiguous()


class InceptionDWFunction(torch.autograd.Function):
    """x (B, C, H, W); branch weights (gc, 1, kh, kw) each, biases (gc,) or None; identity gets C - 3 gc channels."""

    @staticmethod
    def forward(ctx, x, w_hw, b_hw, w_w, b_w, w_h, b_h, tuning):
        weights, biases = (w_hw, w_w, w_h), (b_hw, b_w, b_h)
        n_id = x.shape[1] - sum(w.shape[0] for w in weights)
        has_bias = any(b is not None for b in biases)
        b_packed = None
        if has_bias:
            b_packed = torch.cat([x.new_zeros(n_id, dtype=torch.float32)] + [
                (b.detach().float() if b is not None else w.new_zeros(w.shape[0], dtype=torch.float32))
                for w, b in zip(weights, biases)]).contiguous()
        segments = _branch_segments(n_id, weights)
        y = conv_segments_fwd(x, _pack(n_id, weights), b_packed, segments, [1, 1], list(x.shape[-2:]), *tuning)
        ctx.save_for_backward(x, *weights)
        ctx.n_id, ctx.tuning = n_id, tuning
        ctx.bias_dtypes = tuple(None if b is None else b.dtype for b in biases)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, *weights = ctx.saved_tensors
        n_id = ctx.n_id
        if dy.stride() != x.stride():
            dy = dy.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
        dx = None
        if ctx.needs_input_grad[0]:
            # "Same" padding is its own complement, so the segments are unchanged; only the taps flip.
            dx = conv_segments_fwd(dy, _pack(n_id, weights, flip=True), None, _branch_segments(n_id, weights),
                                   [1, 1], list(x.shape[-2:]), *ctx.tuning)
        w_grads, b_grads = [None] * 3, [None] * 3
        need_w = any(ctx.needs_input_grad[i] for i in (1, 3, 5))
        need_b = any(ctx.needs_input_grad[i] for i in (2, 4, 6))
        if need_w or need_b:
            conv_segments = _branch_segments(n_id, weights, identity=False)  # identity has nothing to learn
            n_wts = n_id + sum(w.numel() for w in weights)
            dw, db = conv_segments_wgrad(x, dy, conv_segments, n_wts, [1, 1], need_b, *ctx.tuning)
            off, c = n_id, n_id
            for i, w in enumerate(weights):
                if ctx.needs_input_grad[1 + 2 * i]:
                    w_grads[i] = dw[off:off + w.numel()].view_as(w).to(w.dtype)
                if ctx.needs_input_grad[2 + 2 * i] and ctx.bias_dtypes[i] is not None:
                    b_grads[i] = db[c:c + w.shape[0]].to(ctx.bias_dtypes[i])
                off += w.numel()
                c += w.shape[0]
        return dx, w_grads[0], b_grads[0], w_grads[1], b_grads[1], w_grads[2], b_grads[2], None


def inception_dw_triton(x, w_hw, b_hw, w_w, b_w, w_h, b_h, tensor_core_min_size: int = TENSOR_CORE_MIN_SIZE,
                        gpu_tiles: Optional[bool] = None):
    """Checked arguments (see `kernels.inception_dw`) -> the fused Triton mixer with autograd."""
    return InceptionDWFunction.apply(x, w_hw, b_hw, w_w, b_w, w_h, b_h, tuning(tensor_core_min_size, gpu_tiles))
