"""Convolution with a kernel as long as the sequence: `longconv` and its FFT reference `longconv_ref`.

y = k * u (+ D u) for S4D / SGConv. u: (B, H, L); k: (H, L) causal, or (2, H, L) bidirectional (forward kernel,
then a backward kernel that applies to the reversed sequence); D: (H,). Computed in fp32 (fp64 for fp64 inputs)
through zero-padded FFTs; the output has u's dtype.

Three implementations of the same function:
- `longconv_ref`: the official layers' arithmetic (rfft / irfft of size 2L, autograd through every step);
- `longconv_fft` (eager CPU): one autograd Function with the gradients written out. Its
  transforms have the smallest 2^a 3^b 5^c length without wrap-around (2L for a power-of-two L); the kernel's
  spectrum is taken once per call for all channels; the forward keeps no spectrum for the backward, whose input and
  kernel gradients are correlations computed in the frequency domain (`irfft(rfft(dy) conj(K))`, and the batch
  sum of `rfft(dy) conj(U)` before a single inverse transform per feature) instead of autograd's transposed
  transforms (a full-length complex FFT per real one); the D skip is one fused multiply-add per pass;
- the Triton path (`kernels.triton.long_conv`) keeps cuFFT for the transforms and fuses the passes around them
  (padding and casting, kernel assembly, D skip, backward products).
Under torch.export (ONNX, ExportedProgram) the transforms are padded to a power of two: onnxruntime's DFT is accurate
at those sizes only (at 2L = 2000 to 8000, e.g. LRA Retrieval's, it is off by 1e-4 to 2e-4 of the output's scale,
against 1e-7 for torch's FFT, and several times slower).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .backend import exporting, note_call, recording, use_triton

__all__ = ['longconv', 'longconv_fft', 'longconv_ref', 'fft_length', 'export_fft_length']


def _full_kernel(k: torch.Tensor, bidirectional: bool, L: int, n: int) -> torch.Tensor:
    """(H, n): k at lags 0..L-1 and, bidirectional, the backward kernel at lags -1..-L (wrapped to the end)."""
    if not bidirectional:
        return F.pad(k, (0, n - L))
    return F.pad(k[0], (0, n - L)) + F.pad(k[1].flip(-1), (n - L, 0))


def longconv_ref(u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor] = None,
                 bidirectional: bool = False, fft_size: Optional[int] = None) -> torch.Tensor:
    """The reference: zero-padded FFT convolution. Shapes as `longconv`; `fft_size` >= 2L (default 2L)."""
    L = u.shape[-1]
    n = 2 * L if fft_size is None else fft_size
    if n < 2 * L:
        raise ValueError(f"fft_size must be at least 2L = {2 * L} (no wrap-around), got {n}")
    if bidirectional and (k.dim() != 3 or k.shape[0] != 2):
        raise ValueError(f"a bidirectional kernel has shape (2, H, L), got {list(k.shape)}")
    dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 FFTs for fp32 and below, fp64 stays fp64
    k_f = torch.fft.rfft(_full_kernel(k, bidirectional, L, n).to(dtype), n=n)
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype).unsqueeze(-1)
    return y.to(u.dtype)


def fft_length(L: int, bidirectional: bool = False) -> int:
    """The transform size of `longconv_fft`: the smallest 2^a 3^b 5^c (fast for every FFT library) that holds the
    linear convolution, i.e. at least 2L - 1 (causal) or 2L (bidirectional: the backward kernel's last tap sits at
    lag -L, as in the official layers, where it meets only padding)."""
    need = 2 * L if bidirectional else max(1, 2 * L - 1)
    best = 1 << (need - 1).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            p = p35
            while p < need:
                p *= 2
            best = min(best, p)
            p35 *= 3
        p5 *= 5
    return best


def export_fft_length(L: int) -> int:
    """The transform size under torch.export: the power of two at least 2L (module docstring)."""
    return 1 << (2 * L - 1).bit_length()


# Rows (one feature of one sequence each) transformed together: about 2 MiB of float32 per work buffer, so the
# buffers stay in cache and are reused from block to block (large fresh tensors cost a page fault per 4 KiB).
_BLOCK_ELEMENTS = 1 << 19


def _block_rows(H: int, n: int) -> int:
    """Rows per block: about _BLOCK_ELEMENTS / n, at least one, at most H."""
    return max(1, min(H, _BLOCK_ELEMENTS // n))


def _blocks(B: int, H: int, n: int):
    """(b, h0, h1) row blocks over a (B, H, .) tensor, h1 - h0 <= _block_rows(H, n)."""
    rows = _block_rows(H, n)
    for b in range(B):
        for h0 in range(0, H, rows):
            yield b, h0, min(H, h0 + rows)


class _LongConvFFT(torch.autograd.Function):
    """y = (k * u)[:L] + D u with hand-written gradients (module docstring); every transform of size n, block by
    block of rows, so that padding, transform, product, inverse transform and D skip run on one cached buffer."""

    @staticmethod
    def forward(ctx, u, k, D, bidirectional: bool, n: int):
        B, H, L = u.shape
        dtype = torch.promote_types(u.dtype, torch.float32)
        k_f = torch.fft.rfft(_full_kernel(k.to(dtype), bidirectional, L, n), n=n)  # (H, F), once for all rows
        D32 = D.to(dtype).unsqueeze(-1) if D is not None else None
        y = u.new_empty((B, H, L), dtype=dtype)
        rows = _block_rows(H, n)
        padded = u.new_zeros((rows, n), dtype=dtype)  # the tail stays zero: only [:, :L] is ever written
        spectrum = k_f.new_empty((rows, n // 2 + 1))
        full = u.new_empty((rows, n), dtype=dtype)
        for b, h0, h1 in _blocks(B, H, n):
            r = h1 - h0
            x, s, z = padded[:r], spectrum[:r], full[:r]
            x[:, :L].copy_(u[b, h0:h1])
            torch.fft.rfft(x, out=s)
            s.mul_(k_f[h0:h1])
            torch.fft.irfft(s, n=n, out=z)
            if D32 is not None:
                torch.addcmul(z[:, :L], x[:, :L], D32[h0:h1], out=y[b, h0:h1])
            else:
                y[b, h0:h1].copy_(z[:, :L])
        ctx.save_for_backward(u, k_f, D)
        ctx.bidirectional, ctx.n, ctx.k_dtype = bidirectional, n, k.dtype
        return y.to(u.dtype)

    @staticmethod
    def backward(ctx, dy):
        u, k_f, D = ctx.saved_tensors
        n, (B, H, L) = ctx.n, u.shape
        dtype = k_f.real.dtype
        need_u, need_k, need_D = ctx.needs_input_grad[:3]
        rows = _block_rows(H, n)
        du = u.new_empty((B, H, L), dtype=dtype) if need_u else None
        dk_f = k_f.new_zeros(k_f.shape) if need_k else None  # sum over the batch of conj(U) dY
        dD = u.new_zeros(H, dtype=dtype) if need_D else None
        D32 = D.to(dtype).unsqueeze(-1) if D is not None else None
        k_f_conj = k_f.conj().resolve_conj() if need_u else None
        padded_dy = u.new_zeros((rows, n), dtype=dtype)
        padded_u = u.new_zeros((rows, n), dtype=dtype) if (need_k or need_D) else None
        spectrum_dy = k_f.new_empty((rows, n // 2 + 1))
        spectrum_u = k_f.new_empty((rows, n // 2 + 1)) if need_k else None
        full = u.new_empty((rows, n), dtype=dtype) if need_u else None
        for b, h0, h1 in _blocks(B, H, n):
            r = h1 - h0
            g = padded_dy[:r]
            g[:, :L].copy_(dy[b, h0:h1])
            if padded_u is not None:
                x = padded_u[:r]
                x[:, :L].copy_(u[b, h0:h1])
                if need_D:
                    dD[h0:h1] += torch.linalg.vecdot(g[:, :L], x[:, :L])
            if not (need_u or need_k):
                continue
            s = spectrum_dy[:r]
            torch.fft.rfft(g, out=s)
            if need_k:  # corr(dy_b, u_b) for the kernel: conj(U) dY, summed over the batch
                su = spectrum_u[:r]
                torch.fft.rfft(x, out=su)
                dk_f[h0:h1].add_(su.conj_physical_().mul_(s))
            if need_u:  # corr(dy, k): dY conj(K)
                z = full[:r]
                torch.fft.irfft(s.mul_(k_f_conj[h0:h1]), n=n, out=z)
                if D32 is not None:
                    torch.addcmul(z[:, :L], g[:, :L], D32[h0:h1], out=du[b, h0:h1])
                else:
                    du[b, h0:h1].copy_(z[:, :L])
        dk = None
        if need_k:
            dk_full = torch.fft.irfft(dk_f, n=n)  # (H, n), one inverse transform per feature
            dk = dk_full[..., :L]
            if ctx.bidirectional:
                dk = torch.stack((dk, dk_full[..., n - L:].flip(-1)))
            dk = dk.to(ctx.k_dtype)
        return (du.to(u.dtype) if need_u else None, dk, dD.to(D.dtype) if need_D else None, None, None)


def longconv_fft(u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor] = None,
                 bidirectional: bool = False, fft_size: Optional[int] = None) -> torch.Tensor:
    """`longconv_ref`'s function with fused passes and hand-written gradients (module docstring). Shapes as
    `longconv`; `fft_size` (default `fft_length(L, bidirectional)`) must be at least 2L (bidirectional) / 2L - 1."""
    L = u.shape[-1]
    n = fft_length(L, bidirectional) if fft_size is None else fft_size
    if n < (2 * L if bidirectional else 2 * L - 1):
        raise ValueError(f"fft_size {n} is too short for length {L} (wrap-around)")
    return _LongConvFFT.apply(u, k, D, bidirectional, n)


def _check_args(u, k, D, bidirectional, backend):
    if u.dim() != 3:
        raise ValueError(f"longconv: u must be (B, H, L), got shape {tuple(u.shape)}")
    _, H, L = u.shape
    k_shape = (2, H, L) if bidirectional else (H, L)
    if tuple(k.shape) != k_shape:
        raise ValueError(f"longconv: {'a bidirectional' if bidirectional else 'a causal'} kernel for u of shape "
                         f"{tuple(u.shape)} must have shape {k_shape}, got {tuple(k.shape)}")
    if D is not None and tuple(D.shape) != (H,):
        raise ValueError(f"longconv: D must have shape ({H},), got {tuple(D.shape)}")
    if recording():
        note_call('longconv', u=tuple(u.shape), bidirectional=bidirectional, skip=D is not None, dtype=u.dtype,
                  backend=backend)


def longconv(u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor] = None, bidirectional: bool = False,
             backend: str = 'auto') -> torch.Tensor:
    """y = k * u (+ D u). u: (B, H, L), k: (H, L) or (2, H, L) if bidirectional, D: (H,) or None -> (B, H, L)."""
    if torch.jit.is_scripting():  # TorchScript runs the reference (the code below is never compiled)
        return longconv_ref(u, k, D, bidirectional)
    _check_args(u, k, D, bidirectional, backend)
    if exporting():  # a power-of-two transform, which every runtime's DFT computes accurately (module docstring)
        return longconv_ref(u, k, D, bidirectional, fft_size=export_fft_length(u.shape[-1]))
    if use_triton(backend, u, 'longconv'):
        return _longconv_triton(u, k, D, bidirectional)
    if u.device.type == 'cpu' and not (torch.compiler.is_compiling() or torch.jit.is_tracing()):
        # the blocked loop pays off in CPU caches; compiled or traced graphs and GPUs take the plain transforms
        return longconv_fft(u, k, D, bidirectional)
    return longconv_ref(u, k, D, bidirectional)


def _longconv_triton(u, k, D, bidirectional):
    from .triton.long_conv import longconv_triton  # Triton is imported on first use
    return longconv_triton(u, k, D, bidirectional)
