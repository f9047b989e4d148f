"""Building blocks shared by more than one zoo family, and the zoo's registrations with timm's FX tracer.

Input checks and kernel calls are leaf calls under timm's tracing (`register_notrace_function`): a traced graph
records them whole, so their Python control flow on shapes never meets an FX proxy. Models call them by their
global names (FX patches module globals) and skip the checks under TorchScript, which runs the kernels' references.
"""
import inspect
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn
from timm.layers import register_notrace_function

from kernels import conv2d_winograd, dwconv2d, inception_dw, longconv

__all__ = ['LongConvLayer', 'check_image_input', 'check_range', 'check_input_dtype', 'check_model_args',
           'check_kwargs', 'refuse_options', 'BUILD_KWARGS', 'ACTIVATIONS']

for _kernel in (dwconv2d, inception_dw, longconv, conv2d_winograd):
    register_notrace_function(_kernel)


# Activations by their official names (state-spaces/s4 `src/models/nn/activation.py`), without those that change
# the width ('glu' is the output projection's `final_act` / `glu` here).
ACTIVATIONS = {
    'id': nn.Identity, 'identity': nn.Identity, 'linear': nn.Identity, 'none': nn.Identity,
    'gelu': nn.GELU, 'relu': nn.ReLU, 'tanh': nn.Tanh, 'elu': nn.ELU, 'silu': nn.SiLU, 'swish': nn.SiLU,
    'sigmoid': nn.Sigmoid, 'softplus': nn.Softplus,
}


def _activation(name: Optional[str], what: str) -> nn.Module:
    if name is None:
        return nn.Identity()
    if name not in ACTIVATIONS:
        raise ValueError(f"{what} {name!r} is not supported; choose from {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class LongConvLayer(nn.Module):
    """Block contract shared by the long-convolution sequence layers (S4D, SGConv).

    y = output_linear(dropout(activation(k * u + D u))), where k is a kernel as long as the sequence, produced by the
    subclass. `channels` C maps every feature to C convolved copies (the output linear mixes all C * H of them);
    a bidirectional layer gets 2 * C kernels, the second half applied to the reversed sequence.

    `activation` (official name; default GELU) is any of ACTIVATIONS. The output projection is a linear map followed
    by GLU (`glu=True`: 2H outputs halved back to H) or a bare linear map (`glu=False`, `output_linear.weight`).
    The official S4 block's `final_act` overrides `glu`: 'glu', any of ACTIVATIONS after the linear map (the
    official `output_linear.0.weight` layout), or None for no output projection at all (as officially).
    `drop_kernel`: dropout on the kernel while training (official FFTConv option).

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
            activation: str = 'gelu',
            final_act: Optional[str] = 'default',
            drop_kernel: float = 0.0,
    ):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if final_act == 'default':  # not given: the `glu` flag decides
            final_act = 'glu' if glu else 'plain'
        glu = final_act == 'glu'
        self.d_model = d_model
        self.channels = channels
        self.bidirectional = bidirectional
        self.transposed = transposed
        self.kernel_backend = kernel_backend
        self.glu = glu
        self.activation = _activation(activation, 'activation')
        # Tied dropout drops whole features for the full sequence (as s4's DropoutNd / nn.Dropout1d).
        dropout_cls = nn.Dropout1d if tie_dropout else nn.Dropout
        self.dropout = dropout_cls(dropout) if dropout > 0.0 else nn.Identity()
        self.kernel_dropout = nn.Dropout(drop_kernel) if drop_kernel > 0.0 else nn.Identity()
        # Position-wise output projection as a 1x1 conv on (B, C*H, L); GLU halves 2H back to H.
        d_out = 2 * d_model if glu else d_model
        if final_act is None:  # the official S4 block's: no output projection
            if channels > 1:
                raise ValueError(f"final_act=None (no output projection) needs channels=1, got {channels}")
            self.output_linear = nn.Identity()
            return
        projection = nn.Conv1d(d_model * channels, d_out, kernel_size=1)
        if glu:
            self.output_linear = nn.Sequential(projection, nn.GLU(dim=1))
        elif final_act == 'plain':
            self.output_linear = projection
        else:
            self.output_linear = nn.Sequential(projection, _activation(final_act, 'final_act'))

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
        if L < 1:
            raise ValueError(f"{type(self).__name__}: the sequence length L must be >= 1, got an empty sequence "
                             f"(shape {tuple(u.shape)})")
        k = self.kernel_dropout(self.compute_kernel(L))  # (dirs * C, H, L)
        if self.channels > 1:
            # Every channel convolves its own copy of the input: fold C into the feature axis, (c h) order.
            u = u.repeat(1, self.channels, 1)
        k = k.reshape(2, self.channels * H, L) if self.bidirectional else k.reshape(self.channels * H, L)
        if u.shape[0] == 0:  # an empty batch has nothing to convolve (and FFT libraries refuse zero-size batches)
            y = u.new_zeros(u.shape)
        else:
            y = longconv(u, k, self.D.reshape(-1), bidirectional=self.bidirectional, backend=self.kernel_backend)
        y = self.output_linear(self.dropout(self.activation(y)))
        return y if self.transposed else y.transpose(-1, -2)


def refuse_options(layer: type, options: dict, unsupported: dict) -> None:
    """TypeError for keyword arguments the `layer` class does not take: those in `unsupported` (official options with
    no equivalent here, name -> what they do) are named as not supported, any other as unknown, with the names its
    __init__ accepts. Official options left at their inactive defaults (None, False, 0) are let through."""
    active = {k: v for k, v in options.items() if not (k in unsupported and v in (None, False, 0, 0.0, 'id'))}
    if not active:
        return
    known = sorted(k for k in active if k in unsupported)
    if known:
        raise TypeError(f"{layer.__name__}: the official option{'s' if len(known) > 1 else ''} "
                        f"{', '.join(f'{k}={active[k]!r} ({unsupported[k]})' for k in known)} "
                        f"{'are' if len(known) > 1 else 'is'} not supported")
    raise TypeError(f"{layer.__name__}: unexpected keyword argument{'s' if len(active) > 1 else ''} "
                    f"{', '.join(map(repr, sorted(active)))}; accepted: {', '.join(sorted(_parameters(layer)))}")


@register_notrace_function
def check_image_input(x: torch.Tensor, in_chans: int, min_size: int, model: str, why: str = '',
                      weight: Optional[torch.Tensor] = None) -> None:
    """Raise a clear error for a batch that is not (B, in_chans, H, W) or smaller than `min_size` (`why` says why);
    with `weight` (a parameter of the model), also for an input dtype the model cannot take (`check_input_dtype`)."""
    if x.dim() != 4:
        raise ValueError(f"{model}: expected an image batch (B, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{model}: expected {in_chans} input channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(f"{model}: input {x.shape[-2]}x{x.shape[-1]} is smaller than the minimum "
                         f"{min_size}x{min_size}{' ' + why if why else ''}")
    if weight is not None:
        check_input_dtype(x, weight, model)


@register_notrace_function
def check_input_dtype(x: torch.Tensor, weight: torch.Tensor, model: str) -> None:
    """Raise a clear TypeError unless x is floating point with the dtype of the model's `weight`; under
    torch.autocast any floating dtype is accepted (autocast casts the inputs of each op itself)."""
    if not x.is_floating_point():
        raise TypeError(f"{model}: expected a floating-point input ({weight.dtype}, normalized as the model's "
                        f"pretrained_cfg mean/std say), got {x.dtype}; convert it, e.g. x.float() / 255 then normalize")
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{model}: input dtype {x.dtype} differs from the model's {weight.dtype}; cast the input "
                        f"(x.to({weight.dtype})), convert the model (model.to({x.dtype})), or run under torch.autocast")


@register_notrace_function
def check_range(x: torch.Tensor, low: int, high: int, what: str, interval: str = '') -> None:
    """Raise a clear error unless every value of the integer tensor x lies in [low, high] (`interval` says so)."""
    if x.numel() and (x.min() < low or x.max() > high):
        raise ValueError(f"{what} must lie in {interval or f'[{low}, {high}]'}, "
                         f"got min {int(x.min())}, max {int(x.max())}")


# Keyword arguments that timm's create_model / build_model_with_cfg take for themselves (never seen by a model class).
BUILD_KWARGS = frozenset({'pretrained_cfg', 'pretrained_cfg_overlay', 'cache_dir', 'pretrained_model_args', 'pruned',
                          'features_only', 'out_indices', 'feature_cls', 'feature_cfg'})


def _rate_ok(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value < 1.0


def check_model_args(model: str, in_chans=None, num_classes=None, drop_rate=None, drop_path_rate=None,
                     stochastic_depth: bool = True) -> None:
    """Raise a clear ValueError for a model argument outside its allowed values (None: not checked).

    in_chans >= 1; num_classes >= 0 (0: no classifier, the head returns pooled features); drop_rate and
    drop_path_rate in [0, 1); without stochastic depth (`stochastic_depth=False`) drop_path_rate must be 0, the value
    timm's train.py passes to every model unless told otherwise.
    """
    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if in_chans is not None and not (is_int(in_chans) and in_chans >= 1):
        raise ValueError(f"{model}: in_chans must be an integer >= 1, got {in_chans!r}")
    if num_classes is not None and not (is_int(num_classes) and num_classes >= 0):
        raise ValueError(f"{model}: num_classes must be an integer >= 0 (0: no classifier), got {num_classes!r}")
    for name, value in (('drop_rate', drop_rate), ('drop_path_rate', drop_path_rate)):
        if value is not None and not _rate_ok(value):
            raise ValueError(f"{model}: {name} must be a number in [0, 1), got {value!r}")
    if not stochastic_depth and drop_path_rate:
        raise ValueError(f"{model}: this model has no stochastic depth, so drop_path_rate must be 0 "
                         f"(accepted for timm's train.py, which passes it to every model), got {drop_path_rate!r}")


def _parameters(target: Callable) -> set:
    """Names of the keyword arguments a class or function accepts (without self, *args, **kwargs)."""
    fn = target.__init__ if inspect.isclass(target) else target
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n for n, p in inspect.signature(fn).parameters.items() if p.kind in kinds and n != 'self'}


def check_kwargs(model: str, kwargs: Iterable[str], *targets: Callable, exclude: Iterable[str] = (),
                 what: str = 'argument', where: str = '') -> None:
    """Raise a TypeError naming every key of `kwargs` that none of `targets` (classes or functions) accepts, and the
    accepted names. `exclude`: names the caller sets itself. Model arguments (`what='argument'`) may also be timm's
    own (`BUILD_KWARGS`); other dicts (e.g. `what='layer_kwargs key'`) only what the targets take. `where` is appended
    to the names (e.g. ' (for layer='s4d')')."""
    accepted = set().union(*(_parameters(t) for t in targets)) - set(exclude)
    allowed = accepted | BUILD_KWARGS if what == 'argument' else accepted
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        plural = 's' if len(unknown) > 1 else ''
        raise TypeError(f"{model}: unknown {what}{plural} {', '.join(map(repr, unknown))}{where}; accepted: "
                        f"{', '.join(sorted(accepted))}")
