"""Fast large-kernel depthwise and long convolutions.

Public functions take a `backend` argument:
- 'torch': the pure-torch reference (`kernels.reference`), any device and dtype;
- 'triton': the Triton kernels (`kernels.dwconv2d`, `kernels.inception`, `kernels.longconv` modules) for fp32 / fp16 /
  bf16 CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before this package was imported;
- 'auto': Triton for CUDA tensors when triton imports (and the dtype is supported), the reference everywhere else.
Triton is optional: without it the package imports and 'auto' runs the reference.

The three functions are leaf calls under torch.fx tracing (timm feature extraction included).

`conv2d_winograd` (kernels/winograd.py) is a pure-torch Winograd F(4x4, r x r) dense convolution for wide float32
CPU convs (the Lie-group layers), 6.25x fewer multiplications than a direct 5x5 convolution.
"""
import functools

import torch
import torch.fx
from timm.layers import register_notrace_function

from .reference import dwconv2d_ref, inception_dw_ref, longconv_ref, same_padding
from .winograd import WINOGRAD_KERNEL_SIZES, conv2d_winograd, winograd_supported

try:
    import triton  # noqa: F401
except Exception:  # ImportError, or a broken install: the package must still import and run the reference
    triton = None

if triton is not None:
    # Submodule imports bind `kernels.dwconv2d` etc. to modules; the function definitions below rebind the names.
    from .dwconv2d import INTERPRET, dwconv2d_triton
    from .inception import inception_dw_triton
    from .longconv import longconv_triton
else:
    INTERPRET = False

HAS_TRITON = triton is not None
BACKENDS = ('auto', 'torch', 'triton')
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_triton(backend: str, x: torch.Tensor, op: str = 'kernel') -> bool:
    """Whether `backend` runs the Triton kernel for input `x`; raises for an unusable explicit choice."""
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {backend!r}")
    if backend == 'torch':
        return False
    if backend == 'auto':
        return HAS_TRITON and x.is_cuda and x.dtype in TRITON_DTYPES
    if not HAS_TRITON:
        raise RuntimeError(f"{op}: backend='triton' needs the triton package (pip install triton); "
                           "use backend='torch' or 'auto'")
    if not x.is_cuda and not INTERPRET:
        raise RuntimeError(f"{op}: backend='triton' got a {x.device.type} tensor; Triton runs CUDA tensors, or CPU "
                           "tensors only when TRITON_INTERPRET=1 is set before `import kernels` (slow, for tests). "
                           "Use backend='auto' or 'torch'")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: backend='triton' supports {[str(d) for d in TRITON_DTYPES]}, got {x.dtype}; "
                        "use backend='torch'")
    return True


def _autocast_input(x: torch.Tensor) -> torch.Tensor:
    # F.conv2d runs in the autocast dtype; the Triton path follows it (weights stay fp32 inside the kernel).
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


def _pair(v, name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, int) else tuple(v)
    if len(pair) != 2 or not all(isinstance(p, int) for p in pair):
        raise ValueError(f"dwconv2d: {name} must be an int or a pair of ints, got {v!r}")
    return pair


def _fx_leaf(fn):
    """Make `fn` a leaf call under torch.fx tracing however it is reached (`kernels.fn(...)` attribute calls are
    not patched by FX's autowrap), and register it with timm's notrace list too."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        proxy = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.fx.Proxy)), None)
        if proxy is not None:
            return proxy.tracer.create_proxy('call_function', wrapper, args, kwargs)
        return fn(*args, **kwargs)
    return register_notrace_function(wrapper)


def _check_depthwise(op: str, x: torch.Tensor, weight: torch.Tensor, bias, channels: int, what: str = 'weight'):
    if weight.dim() != 4 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(f"{op}: {what} must have shape ({channels}, 1, kh, kw) for depthwise conv over {channels} "
                         f"channels, got {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"{op}: bias of {what} must have shape ({channels},), got {tuple(bias.shape)}")


@_fx_leaf
def dwconv2d(x, weight, bias=None, padding=None, dilation=1, backend='auto'):
    """Depthwise conv2d, stride 1. x: (B, C, H, W) NCHW or channels_last; weight: (C, 1, kh, kw); bias: (C,).

    padding: None ('same' for odd kernels), an int or (pad_h, pad_w); dilation: an int or (dil_h, dil_w).
    Output in x's memory format; the Triton path accumulates in fp32 whatever the input dtype.
    """
    if x.dim() != 4:
        raise ValueError(f"dwconv2d: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    _check_depthwise('dwconv2d', x, weight, bias, x.shape[1])
    dilation = _pair(dilation, 'dilation')
    if min(dilation) < 1:
        raise ValueError(f"dwconv2d: dilation must be >= 1, got {dilation}")
    padding = same_padding(weight.shape[-2:], dilation) if padding is None else _pair(padding, 'padding')
    if min(padding) < 0:
        raise ValueError(f"dwconv2d: padding must be >= 0, got {padding}")
    if use_triton(backend, x, 'dwconv2d'):
        return dwconv2d_triton(_autocast_input(x), weight, bias, padding, dilation)
    return dwconv2d_ref(x, weight, bias, padding, dilation)


@_fx_leaf
def inception_dw(x, w_hw, b_hw, w_w, b_w, w_h, b_h, backend='auto'):
    """InceptionNeXt mixer: identity | square | 1xk | kx1 depthwise branches on consecutive channel splits.

    x: (B, C, H, W); w_hw: (gc, 1, k, k), w_w: (gc, 1, 1, band), w_h: (gc, 1, band, 1) (any odd sizes work), biases
    (gc,) or None; the first C - 3 gc channels pass through. "Same" padding, stride 1, no dilation.
    """
    if x.dim() != 4:
        raise ValueError(f"inception_dw: x must be (B, C, H, W), got shape {tuple(x.shape)}")
    gc = w_hw.shape[0]
    if 3 * gc > x.shape[1]:
        raise ValueError(f"inception_dw: 3 branches of {gc} channels do not fit in {x.shape[1]} input channels")
    for name, w, b in (('w_hw', w_hw, b_hw), ('w_w', w_w, b_w), ('w_h', w_h, b_h)):
        _check_depthwise('inception_dw', x, w, b, gc, name)
        same_padding(w.shape[-2:])  # odd kernel sizes only
    if use_triton(backend, x, 'inception_dw'):
        return inception_dw_triton(_autocast_input(x), w_hw, b_hw, w_w, b_w, w_h, b_h)
    return inception_dw_ref(x, w_hw, b_hw, w_w, b_w, w_h, b_h)


@_fx_leaf
def longconv(u, k, D=None, bidirectional=False, backend='auto'):
    """Sequence-length convolution y = k * u (+ D u). u: (B, H, L), k: (H, L) or (2, H, L) if bidirectional, D: (H,).

    Computed in fp32 (FFT of size 2L); the output has u's dtype. See `kernels.reference.longconv_ref`.
    """
    if u.dim() != 3:
        raise ValueError(f"longconv: u must be (B, H, L), got shape {tuple(u.shape)}")
    _, H, L = u.shape
    k_shape = (2, H, L) if bidirectional else (H, L)
    if tuple(k.shape) != k_shape:
        raise ValueError(f"longconv: {'a bidirectional' if bidirectional else 'a causal'} kernel for u of shape "
                         f"{tuple(u.shape)} must have shape {k_shape}, got {tuple(k.shape)}")
    if D is not None and tuple(D.shape) != (H,):
        raise ValueError(f"longconv: D must have shape ({H},), got {tuple(D.shape)}")
    if use_triton(backend, u, 'longconv'):
        return longconv_triton(u, k, D, bidirectional)
    return longconv_ref(u, k, D, bidirectional)


__all__ = ['BACKENDS', 'HAS_TRITON', 'INTERPRET', 'TRITON_DTYPES', 'dwconv2d', 'inception_dw', 'longconv',
           'same_padding', 'use_triton', 'dwconv2d_ref', 'inception_dw_ref', 'longconv_ref',
           'WINOGRAD_KERNEL_SIZES', 'conv2d_winograd', 'winograd_supported']
