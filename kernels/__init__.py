"""Fast large-kernel depthwise and long convolutions.

Public functions take a `backend` argument: 'torch' runs the pure-torch reference (`kernels.reference`),
'triton' the Triton kernel, 'auto' Triton for CUDA tensors and the reference everywhere else.
"""
from .reference import dwconv2d_ref, inception_dw_ref, longconv_ref, same_padding

BACKENDS = ('auto', 'torch', 'triton')


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {BACKENDS}, got {backend!r}")
    if backend == 'triton':
        raise NotImplementedError("the Triton backend is not built yet; use backend='torch' or 'auto'")
    return 'torch'


def dwconv2d(x, weight, bias=None, padding=None, dilation=1, backend='auto'):
    """Depthwise conv2d, stride 1, 'same' padding by default. x: (B, C, H, W), weight: (C, 1, kh, kw)."""
    _check_backend(backend)
    return dwconv2d_ref(x, weight, bias, padding, dilation)


def inception_dw(x, w_hw, b_hw, w_w, b_w, w_h, b_h, backend='auto'):
    """InceptionNeXt mixer: identity | square | 1xk | kx1 depthwise branches on consecutive channel splits."""
    _check_backend(backend)
    return inception_dw_ref(x, w_hw, b_hw, w_w, b_w, w_h, b_h)


def longconv(u, k, D=None, bidirectional=False, backend='auto'):
    """Sequence-length convolution y = k * u (+ D u). u: (B, H, L), k: (H, L) or (2, H, L) if bidirectional."""
    _check_backend(backend)
    return longconv_ref(u, k, D, bidirectional)


__all__ = ['BACKENDS', 'dwconv2d', 'inception_dw', 'longconv', 'same_padding',
           'dwconv2d_ref', 'inception_dw_ref', 'longconv_ref']
