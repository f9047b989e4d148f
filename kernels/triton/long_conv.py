"""Long convolution y = k * u + D u (kernel as long as the sequence) for S4D / SGConv: cuFFT + fused Triton stages.

Triton has no FFT, so the transforms stay on cuFFT (`torch.fft`, fp32, size 2L) and every pass around them is one
Triton kernel instead of a chain of torch ops:
- `_pad_cast_kernel`: dtype cast + zero padding to 2L in one pass (u, dy), and the bidirectional kernel assembly
  (forward kernel on lags 0..L-1, mirrored backward kernel on the wrapped negative lags) for k.
- `_skip_epilogue_kernel`: takes the first L outputs of the inverse FFT, adds the D skip and casts to the output
  dtype in one pass; in the backward it also reduces the D gradient (sum of dy * u) per block.
- `_spectral_bwd_kernel`: du_f = dy_f conj(k_f) and dk_f = sum_b dy_f conj(u_f) in one pass over the spectra
  (the batch reduction for the kernel gradient happens in registers, not through a (B, H, L+1) temporary).
The forward keeps rfft(u) for the backward, as autograd does for the reference, so memory matches the reference.
"""
from typing import Optional

import torch
import triton
import triton.language as tl


@triton.jit
def _pad_cast_kernel(src_ptr, tail_ptr, dst_ptr, L, HAS_TAIL: tl.constexpr, BLOCK: tl.constexpr):
    """dst[r, j] (fp32, length 2L) = src[r, j] for j < L, else tail[r, 2L-1-j] (bidirectional kernel) or 0."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    head = offs < L
    v = tl.load(src_ptr + row * L + offs, mask=head, other=0.0).to(tl.float32)
    if HAS_TAIL:
        tail = (offs >= L) & (offs < 2 * L)
        v += tl.load(tail_ptr + row * L + (2 * L - 1 - offs), mask=tail, other=0.0).to(tl.float32)
    tl.store(dst_ptr + row * (2 * L) + offs, v, mask=offs < 2 * L)


@triton.jit
def _skip_epilogue_kernel(full_ptr, s_ptr, d_ptr, t_ptr, out_ptr, part_ptr, H, L,
                          HAS_D: tl.constexpr, WITH_PART: tl.constexpr, BLOCK: tl.constexpr):
    """out[r, l] = full[r, l] + D[r % H] s[r, l] (cast to out's dtype); part[r, block] = sum_l s[r, l] t[r, l]."""
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < L
    v = tl.load(full_ptr + row * (2 * L) + offs, mask=mask, other=0.0)
    if HAS_D:
        s = tl.load(s_ptr + row * L + offs, mask=mask, other=0.0).to(tl.float32)
        v += tl.load(d_ptr + row % H).to(tl.float32) * s
        if WITH_PART:
            t = tl.load(t_ptr + row * L + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(part_ptr + row * tl.num_programs(1) + tl.program_id(1), tl.sum(s * t, axis=0))
    tl.store(out_ptr + row * L + offs, v.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _spectral_bwd_kernel(dyf_ptr, uf_ptr, kf_ptr, duf_ptr, dkf_ptr, B, H, F,
                         NEED_DU: tl.constexpr, NEED_DK: tl.constexpr, BLOCK: tl.constexpr):
    """Spectra as interleaved (re, im) fp32: du_f[b, h] = dy_f[b, h] conj(k_f[h]), dk_f[h] = sum_b dy_f conj(u_f)."""
    h = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < F
    k_re = tl.load(kf_ptr + (h * F + offs) * 2, mask=mask, other=0.0)
    k_im = tl.load(kf_ptr + (h * F + offs) * 2 + 1, mask=mask, other=0.0)
    acc_re = tl.zeros([BLOCK], dtype=tl.float32)
    acc_im = tl.zeros([BLOCK], dtype=tl.float32)
    for b in range(B):
        idx = ((b * H + h) * F + offs) * 2
        dy_re = tl.load(dyf_ptr + idx, mask=mask, other=0.0)
        dy_im = tl.load(dyf_ptr + idx + 1, mask=mask, other=0.0)
        if NEED_DU:
            tl.store(duf_ptr + idx, dy_re * k_re + dy_im * k_im, mask=mask)
            tl.store(duf_ptr + idx + 1, dy_im * k_re - dy_re * k_im, mask=mask)
        if NEED_DK:
            u_re = tl.load(uf_ptr + idx, mask=mask, other=0.0)
            u_im = tl.load(uf_ptr + idx + 1, mask=mask, other=0.0)
            acc_re += dy_re * u_re + dy_im * u_im
            acc_im += dy_im * u_re - dy_re * u_im
    if NEED_DK:
        tl.store(dkf_ptr + (h * F + offs) * 2, acc_re, mask=mask)
        tl.store(dkf_ptr + (h * F + offs) * 2 + 1, acc_im, mask=mask)


BLOCK = 1024  # elements per program in every pass


def _pad_cast(src: torch.Tensor, tail: Optional[torch.Tensor] = None, block: int = BLOCK) -> torch.Tensor:
    """(R, L) any float dtype -> (R, 2L) fp32 zero-padded (or with the mirrored tail), one pass."""
    rows, L = src.shape
    dst = torch.empty((rows, 2 * L), dtype=torch.float32, device=src.device)
    _pad_cast_kernel[(rows, triton.cdiv(2 * L, block))](
        src, src if tail is None else tail, dst, L, HAS_TAIL=tail is not None, BLOCK=block)
    return dst


def _skip_epilogue(full, s, D, H, out_dtype, t=None, block: int = BLOCK):
    """First L of `full` (R, 2L) + D s, cast; with t also the per-row sums of s t (for dD)."""
    rows, L = s.shape
    out = torch.empty((rows, L), dtype=out_dtype, device=s.device)
    n_blocks = triton.cdiv(L, block)
    part = torch.empty((rows, n_blocks), dtype=torch.float32, device=s.device) if t is not None else None
    _skip_epilogue_kernel[(rows, n_blocks)](
        full, s, full if D is None else D, s if t is None else t, out, full if part is None else part, H, L,
        HAS_D=D is not None, WITH_PART=t is not None, BLOCK=block)
    return out, part


@torch.library.custom_op('kernelzoo::longconv_fwd', mutates_args=())
def longconv_fwd(u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor],
                 bidirectional: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, rfft(u) (B, H, L+1), rfft(k) (H, L+1)); the spectra are kept for the backward."""
    B, H, L = u.shape
    u = u.contiguous()
    k_pad = _pad_cast(k[0].contiguous(), k[1].contiguous()) if bidirectional else _pad_cast(k.contiguous())
    k_f = torch.fft.rfft(k_pad)
    u_f = torch.fft.rfft(_pad_cast(u.view(B * H, L))).view(B, H, L + 1)
    y_full = torch.fft.irfft(u_f * k_f, n=2 * L)  # (B, H, 2L) fp32
    y, _ = _skip_epilogue(y_full.view(B * H, 2 * L), u.view(B * H, L), None if D is None else D.contiguous(), H,
                          u.dtype)
    return y.view(B, H, L), u_f, k_f


@longconv_fwd.register_fake
def _(u, k, D, bidirectional):
    B, H, L = u.shape
    return (u.new_empty(B, H, L), u.new_empty(B, H, L + 1, dtype=torch.complex64),
            u.new_empty(H, L + 1, dtype=torch.complex64))


@torch.library.custom_op('kernelzoo::longconv_bwd', mutates_args=())
def longconv_bwd(dy: torch.Tensor, u_f: torch.Tensor, k_f: torch.Tensor, u: Optional[torch.Tensor],
                 D: Optional[torch.Tensor], bidirectional: bool, need_du: bool, need_dk: bool,
                 need_dD: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(du (B, H, L) in dy's dtype, dk (H, L) or (2, H, L) fp32, dD (H,) fp32); grads not asked for are empty."""
    B, H, F_ = u_f.shape
    L = F_ - 1
    dy = dy.contiguous().view(B * H, L)
    dy_f = torch.fft.rfft(_pad_cast(dy)).view(B, H, F_)
    du_f = torch.empty_like(dy_f) if need_du else None
    dk_f = torch.empty((H, F_), dtype=dy_f.dtype, device=dy.device) if need_dk else None
    if need_du or need_dk:
        dyf_r = torch.view_as_real(dy_f)
        _spectral_bwd_kernel[(H, triton.cdiv(F_, BLOCK))](
            dyf_r, torch.view_as_real(u_f), torch.view_as_real(k_f),
            dyf_r if du_f is None else torch.view_as_real(du_f), dyf_r if dk_f is None else torch.view_as_real(dk_f),
            B, H, F_, NEED_DU=need_du, NEED_DK=need_dk, BLOCK=BLOCK)
    du, dk, dD = dy.new_empty(0), dy.new_empty(0, dtype=torch.float32), dy.new_empty(0, dtype=torch.float32)
    part = None
    if need_du:
        du_full = torch.fft.irfft(du_f, n=2 * L).view(B * H, 2 * L)
        du, part = _skip_epilogue(du_full, dy, D, H, dy.dtype, t=u.contiguous().view(B * H, L) if need_dD else None)
        du = du.view(B, H, L)
    if need_dD:
        if part is None:
            part = (dy.float() * u.contiguous().view(B * H, L).float()).sum(-1, keepdim=True)
        dD = part.view(B, H, -1).sum((0, 2))
    if need_dk:
        dk_full = torch.fft.irfft(dk_f, n=2 * L)  # (H, 2L): gradient of the length-2L circular kernel
        dk = torch.stack((dk_full[:, :L], dk_full[:, L:].flip(-1))) if bidirectional else dk_full[:, :L].contiguous()
    return du, dk, dD


@longconv_bwd.register_fake
def _(dy, u_f, k_f, u, D, bidirectional, need_du, need_dk, need_dD):
    B, H, F_ = u_f.shape
    L = F_ - 1
    du = dy.new_empty((B, H, L) if need_du else (0,))
    dk = dy.new_empty(((2, H, L) if bidirectional else (H, L)) if need_dk else (0,), dtype=torch.float32)
    return du, dk, dy.new_empty(H if need_dD else 0, dtype=torch.float32)


class LongConvFunction(torch.autograd.Function):
    """u (B, H, L); k (H, L) or (2, H, L) when bidirectional; D (H,) or None. Output (B, H, L) in u's dtype."""

    @staticmethod
    def forward(ctx, u, k, D, bidirectional):
        y, u_f, k_f = longconv_fwd(u, k, None if D is None else D.detach(), bidirectional)
        ctx.save_for_backward(u_f, k_f, u if D is not None else None, D)
        ctx.meta = (bidirectional, k.dtype)
        return y

    @staticmethod
    def backward(ctx, dy):
        u_f, k_f, u, D = ctx.saved_tensors
        bidirectional, k_dtype = ctx.meta
        need_du, need_dk, need_dD = ctx.needs_input_grad[:3]
        du, dk, dD = longconv_bwd(dy, u_f, k_f, u, None if D is None else D.detach(), bidirectional,
                                  need_du, need_dk, need_dD and D is not None)
        return (du if need_du else None, dk.to(k_dtype) if need_dk else None,
                dD.to(D.dtype) if need_dD and D is not None else None, None)


def longconv_triton(u, k, D=None, bidirectional=False):
    """Checked arguments (see `kernels.longconv`) -> the cuFFT + Triton long convolution with autograd."""
    return LongConvFunction.apply(u, k, D, bidirectional)
