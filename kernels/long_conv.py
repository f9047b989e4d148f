"""Convolution with a kernel as long as the sequence: `longconv` and its FFT reference `longconv_ref`.

y = k * u (+ D u) for S4D / SGConv. u: (B, H, L); k: (H, L) causal, or (2, H, L) bidirectional (forward kernel,
then a backward kernel that applies to the reversed sequence); D: (H,). Computed in fp32 (fp64 for fp64 inputs)
through FFTs of size 2L; the output has u's dtype. The Triton path (`kernels.triton.long_conv`) keeps cuFFT for the
transforms and fuses the passes around them (padding and casting, kernel assembly, D skip, backward products).
Under torch.export (ONNX, ExportedProgram) the transforms are padded to a power of two: onnxruntime's DFT is accurate
at those sizes only (at 2L = 2000 to 8000, e.g. LRA Retrieval's, it is off by 1e-4 to 2e-4 of the output's scale,
against 1e-7 for torch's FFT, and several times slower).
"""
from typing import Optional

import torch
import torch.nn.functional as F

from .backend import note_call, recording, use_triton

__all__ = ['longconv', 'longconv_ref']


def longconv_ref(u: torch.Tensor, k: torch.Tensor, D: Optional[torch.Tensor] = None,
                 bidirectional: bool = False, fft_size: Optional[int] = None) -> torch.Tensor:
    """The reference: zero-padded FFT convolution. Shapes as `longconv`; `fft_size` >= 2L (default 2L)."""
    L = u.shape[-1]
    n = 2 * L if fft_size is None else fft_size
    if n < 2 * L:
        raise ValueError(f"fft_size must be at least 2L = {2 * L} (no wrap-around), got {n}")
    if bidirectional:
        if k.dim() != 3 or k.shape[0] != 2:
            raise ValueError(f"a bidirectional kernel has shape (2, H, L), got {list(k.shape)}")
        # Non-causal kernel of length n: k_fwd at lags 0..L-1, k_bwd mirrored onto lags -L..-1 (wrapped to the end).
        k = F.pad(k[0], (0, n - L)) + F.pad(k[1].flip(-1), (n - L, 0))
    dtype = torch.promote_types(u.dtype, torch.float32)  # fp32 FFTs for fp32 and below, fp64 stays fp64
    k_f = torch.fft.rfft(k.to(dtype), n=n)
    u_f = torch.fft.rfft(u.to(dtype), n=n)
    y = torch.fft.irfft(u_f * k_f, n=n)[..., :L]
    if D is not None:
        y = y + u.to(dtype) * D.to(dtype).unsqueeze(-1)
    return y.to(u.dtype)


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
    if _exporting():  # a power-of-two transform, which every runtime's DFT computes accurately (module docstring)
        return longconv_ref(u, k, D, bidirectional, fft_size=1 << (2 * u.shape[-1] - 1).bit_length())
    if use_triton(backend, u, 'longconv'):
        return _longconv_triton(u, k, D, bidirectional)
    return longconv_ref(u, k, D, bidirectional)


def _longconv_triton(u, k, D, bidirectional):
    from .triton.long_conv import longconv_triton  # Triton is imported on first use
    return longconv_triton(u, k, D, bidirectional)


def _exporting() -> bool:
    # torch.compiler.is_exporting arrived in torch 2.6; the dynamo ONNX exporter needs a recent torch anyway
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return is_exporting is not None and is_exporting()
