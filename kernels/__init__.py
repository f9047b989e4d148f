"""Fast large-kernel depthwise and long convolutions, each a plain function with autograd.

One module per op, holding its docstring, its pure-torch reference (`*_ref`) and the function that checks the
inputs and dispatches; the Triton code of an op lives in `kernels.triton.<module>` and is imported only when a
CUDA tensor (or Triton's CPU interpreter) asks for it:

| function | module | what it computes |
|---|---|---|
| `dwconv2d` | `kernels.depthwise` | depthwise conv2d, stride 1, any kernel size and dilation |
| `inception_dw` | `kernels.inception_mixer` | InceptionNeXt's identity / square / band / band mixer, fused |
| `longconv` | `kernels.long_conv` | convolution with a sequence-length kernel (S4D, SGConv), causal or two-sided |
| `conv2d_winograd` | `kernels.winograd` | dense conv by Winograd F(4x4, r x r), for wide float32 CPU convs |

`backend='auto'|'torch'|'triton'` picks the implementation (`kernels.backend`); under TorchScript the references run.
"""
from .backend import (
    BACKENDS, TRITON_DTYPES, check_backend, exporting, interpret_mode, record_calls, triton_available, use_triton)
from .depthwise import dwconv2d, dwconv2d_ref, same_padding
from .inception_mixer import inception_dw, inception_dw_ref
from .long_conv import longconv, longconv_fft, longconv_ref
from .winograd import WINOGRAD_KERNEL_SIZES, conv2d_winograd, winograd_supported

__all__ = [
    'BACKENDS', 'TRITON_DTYPES', 'check_backend', 'exporting', 'interpret_mode', 'record_calls', 'triton_available',
    'use_triton',
    'dwconv2d', 'dwconv2d_ref', 'same_padding', 'inception_dw', 'inception_dw_ref',
    'longconv', 'longconv_fft', 'longconv_ref',
    'WINOGRAD_KERNEL_SIZES', 'conv2d_winograd', 'winograd_supported',
]
