"""Building blocks shared by more than one zoo family, and the zoo's registrations with timm's FX tracer.

Input checks and kernel calls are leaf calls under timm's tracing (`register_notrace_function`): a traced graph
records them whole, so their Python control flow on shapes never meets an FX proxy. Models call them by their
global names (FX patches module globals) and skip the checks under TorchScript, which runs the kernels' references.
"""
import torch
import torch.nn as nn
from timm.layers import register_notrace_function

from kernels import conv2d_winograd, dwconv2d, inception_dw, longconv

__all__ = ['LongConvLayer', 'check_image_input', 'check_range']

for _kernel in (dwconv2d, inception_dw, longconv, conv2d_winograd):
    register_notrace_function(_kernel)


class LongConvLayer(nn.Module):
    """Block contract shared by the long-convolution sequence layers (S4D, SGConv).

    y = output_linear(dropout(GELU(k * u + D u))), where k is a kernel as long as the sequence, produced by the
    subclass. `channels` C maps every feature to C convolved copies (the output linear mixes all C * H of them);
    a bidirectional layer gets 2 * C kernels, the second half applied to the reversed sequence.

    Subclasses set `self.D` ((H,) or (C, H)) and implement `compute_kernel(L)` returning (dirs * C, H, L).
    Input and output are (B, H, L) if `transposed`, else (B, L, H).
    """

    def __init__(
            self,
            d_model: int,
            channels: int = 1,
            bidirectional: bool = False,
            dropout: float = 0.0,
            tie_dropout: bool = True,
            glu: bool = True,
            transposed: bool = True,
            kernel_backend: str = 'auto',
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.d_model = d_model
        self.channels = channels
        self.bidirectional = bidirectional
        self.transposed = transposed
        self.kernel_backend = kernel_backend
        self.activation = nn.GELU()
        # Tied dropout drops whole features for the full sequence (as s4's DropoutNd / nn.Dropout1d).
        dropout_cls = nn.Dropout1d if tie_dropout else nn.Dropout
        self.dropout = dropout_cls(dropout) if dropout > 0.0 else nn.Identity()
        # Position-wise output projection as a 1x1 conv on (B, C*H, L); GLU halves 2H back to H.
        d_out = 2 * d_model if glu else d_model
        projection = nn.Conv1d(d_model * channels, d_out, kernel_size=1)
        self.output_linear = nn.Sequential(projection, nn.GLU(dim=1)) if glu else projection

    def compute_kernel(self, L: int) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[1 if self.transposed else 2] != self.d_model:
            layout = '(B, H, L)' if self.transposed else '(B, L, H)'
            raise ValueError(f"{type(self).__name__} expects {layout} input with H={self.d_model}, "
                             f"got shape {tuple(u.shape)}")
        if not self.transposed:
            u = u.transpose(-1, -2)
        H, L = self.d_model, u.shape[-1]
        k = self.compute_kernel(L)  # (dirs * C, H, L)
        if self.channels > 1:
            # Every channel convolves its own copy of the input: fold C into the feature axis, (c h) order.
            u = u.repeat(1, self.channels, 1)
        k = k.reshape(2, self.channels * H, L) if self.bidirectional else k.reshape(self.channels * H, L)
        y = longconv(u, k, self.D.reshape(-1), bidirectional=self.bidirectional, backend=self.kernel_backend)
        y = self.output_linear(self.dropout(self.activation(y)))
        return y if self.transposed else y.transpose(-1, -2)


@register_notrace_function
def check_image_input(x: torch.Tensor, in_chans: int, min_size: int, model: str, why: str = '') -> None:
    """Raise a clear error for a batch that is not (B, in_chans, H, W) or smaller than `min_size` (`why` says why)."""
    if x.dim() != 4:
        raise ValueError(f"{model}: expected an image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model}: expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(f"{model}: input {x.shape[-2]}x{x.shape[-1]} is smaller than the minimum "
                         f"{min_size}x{min_size}{' ' + why if why else ''}")


@register_notrace_function
def check_range(x: torch.Tensor, low: int, high: int, what: str, interval: str = '') -> None:
    """Raise a clear error unless every value of the integer tensor x lies in [low, high] (`interval` says so)."""
    if x.numel() and (x.min() < low or x.max() > high):
        raise ValueError(f"{what} must lie in {interval or f'[{low}, {high}]'}, "
                         f"got min {int(x.min())}, max {int(x.max())}")
