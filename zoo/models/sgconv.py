"""SGConv: structured global convolution with a multi-scale, decaying kernel.

Paper: Li, Cai, Zhang, Chen, Dey, "What Makes Convolutional Models Great on Long Sequence Modeling?", ICLR 2023,
arXiv 2210.09298. Official code: https://github.com/ctlllll/SGConv (`gconv_standalone.py` on `main`; training code
and LRA configs on the `preview` branch).

The kernel is built from `num_scales` small sub-kernels of `kernel_dim` weights each: sub-kernel i is upsampled
(linear interpolation) by 2^(max(0, i - 1) + init_scale) and weighted by multiplier^(num_scales - 1 - i), so the
kernel covers lengths d, d, 2d, 4d, ... with weights that halve from one scale to the next (multiplier 2); the
concatenation is cut (or zero-padded) to the sequence length and divided by its norm at initialization. The
official layer measures that norm during its first forward; here it is measured in `__init__` (it depends on the
initial weights only), so the module has no state that appears on first use.
"""
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LongConvLayer, refuse_options

__all__ = ['SGConv', 'SGCONV_UNSUPPORTED']

# Options of the official GConv that this layer does not have (name -> what they do).
SGCONV_UNSUPPORTED = {
    'ln': 'extra normalization before the output projection', 'weight_norm': 'weight normalization of the projection',
    'hyper_act': 'hypernetwork multiplication', 'initializer': 'projection initializer',
}


class SGConv(LongConvLayer):
    """SGConv layer: multi-scale global convolution + D skip, GELU, dropout, output linear (+GLU).

    `mode` uses the official vocabulary: 'cat' (concatenate the scales, default) or 'sum' (overlay them), 'randn' or
    'cos' initialization, optional 'nearest' upsampling, optional 'learnable' power-law decay (l + 1)^-decay per
    feature ('learnable_fixed' freezes it), e.g. 'cat_randn', 'cat_cos', 'cat_randn_learnable_fixed'.
    `num_scales` (official name `n_scales`) defaults to 1 + ceil(log2(l_max / kernel_dim)) - init_scale. Sub-kernels
    and a learnable decay carry `_optim = {'lr': lr}` (their weight decay stays the global one, as officially).
    Defaults follow the official standalone `GConv` (glu=False is its `postact=None`). Official names also accepted:
    `postact` (None: a bare output linear map; 'glu'; or an activation after it), `activation`, `linear=True` (the
    bare long convolution with its D term: no activation, dropout or output projection), `shift` (stored and never
    used by the official layer; accepted, no effect). `ln`, `weight_norm` and `hyper_act` raise a TypeError that
    says they are not supported.
    """

    def __init__(
            self,
            d_model: int,
            l_max: int,
            kernel_dim: int = 64,
            num_scales: Optional[int] = None,
            init_scale: int = 0,
            mode: str = 'cat_randn',
            decay_min: float = 2.0,
            decay_max: float = 2.0,
            lr: Optional[float] = 0.001,
            channels: int = 1,
            bidirectional: bool = False,
            dropout: float = 0.0,
            tie_dropout: bool = True,
            glu: bool = False,
            transposed: bool = True,
            kernel_backend: str = 'auto',
            activation: str = 'gelu',
            postact: Optional[str] = 'default',
            n_scales: Optional[int] = None,
            linear: bool = False,
            shift: bool = False,
            drop_kernel: float = 0.0,
            **official_options,
    ):
        refuse_options(SGConv, official_options, SGCONV_UNSUPPORTED)
        if n_scales is not None:
            if num_scales is not None and num_scales != n_scales:
                raise ValueError(f"SGConv: num_scales={num_scales} and its official name n_scales={n_scales} differ")
            num_scales = n_scales
        # The official `postact`: None is a bare linear map (glu=False), 'glu' the GLU, else an activation after it.
        final_act = 'default' if postact == 'default' else 'glu' if postact == 'glu' else \
            ('plain' if postact is None else postact)
        if linear:  # the official `linear=True`: the convolution and D term alone
            if channels > 1:
                raise ValueError(f"SGConv: linear=True returns the {channels} channels unprojected; use channels=1")
            activation, dropout, final_act = 'id', 0.0, None
        super().__init__(
            d_model, channels=channels, bidirectional=bidirectional, dropout=dropout, tie_dropout=tie_dropout,
            glu=glu, transposed=transposed, kernel_backend=kernel_backend, activation=activation,
            final_act=final_act, drop_kernel=drop_kernel)
        self.shift = shift
        if ('cat' in mode) == ('sum' in mode) or ('randn' in mode) == ('cos' in mode):
            raise ValueError(f"SGConv mode must name one of 'cat'/'sum' and one of 'randn'/'cos', got {mode!r}")
        if num_scales is None:
            num_scales = 1 + math.ceil(math.log2(l_max / kernel_dim)) - init_scale
        if num_scales < 1:
            raise ValueError(f"SGConv needs at least one scale; l_max={l_max}, kernel_dim={kernel_dim}, "
                             f"init_scale={init_scale} give num_scales={num_scales}")
        self.l_max, self.kernel_dim, self.num_scales, self.init_scale = l_max, kernel_dim, num_scales, init_scale
        self.mode = mode
        self.concat = 'cat' in mode
        self.interpolation = 'nearest' if 'nearest' in mode else 'linear'
        self.learnable_decay = 'learnable' in mode
        n_kernels = channels * (2 if bidirectional else 1)

        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.kernel_list = nn.ParameterList()
        for _ in range(num_scales):
            if 'randn' in mode:
                weight = torch.randn(n_kernels, d_model, kernel_dim)
            else:  # feature h starts as h periods of a cosine; features shuffled per scale
                periods = torch.arange(d_model, dtype=torch.float32)[torch.randperm(d_model)]
                phase = torch.linspace(0, 2 * math.pi, kernel_dim)
                weight = torch.cos(periods[:, None] * phase).expand(n_kernels, -1, -1).clone()
            weight = nn.Parameter(weight)
            if lr is not None:
                weight._optim = {'lr': lr}
            self.kernel_list.append(weight)

        if self.learnable_decay:
            decay = torch.rand(d_model) * (decay_max - decay_min) + decay_min
            if 'fixed' in mode:
                self.register_buffer('decay', decay)
            else:
                self.decay = nn.Parameter(decay)
                if lr is not None:
                    self.decay._optim = {'lr': lr}
            self.register_buffer('multiplier', torch.tensor(1.0))
        else:
            self.register_buffer('multiplier', torch.linspace(decay_min, decay_max, d_model).view(1, -1, 1))
        with torch.no_grad():
            self.register_buffer('kernel_norm', self._multiscale_kernel().norm(dim=-1, keepdim=True))

    def _multiscale_kernel(self, weights=None, multiplier=None, decay=None) -> torch.Tensor:
        """The full-length kernel, (dirs * C, H, kernel_dim * 2^(num_scales - 1 + init_scale)), unnormalized.

        Built from this module's tensors unless others are given (a state dict being loaded), in at least float32
        (a float16 / bfloat16 layer still gets a float32 kernel; float64 stays float64).
        """
        weights = self.kernel_list if weights is None else weights
        multiplier = self.multiplier if multiplier is None else multiplier
        dtype = torch.promote_types(weights[0].dtype, torch.float32)
        weights = [weight.to(dtype) for weight in weights]
        multiplier = multiplier.to(dtype)
        n, d = self.num_scales, self.kernel_dim
        full_length = d * 2 ** (n - 1 + self.init_scale)
        pieces = []
        for i, weight in enumerate(weights):
            # cat: lengths d, d, 2d, 4d, ... (times 2^init_scale); sum: each scale spans twice the previous one
            factor = 2 ** (max(0, i - 1) + self.init_scale) if self.concat else 2 ** (i + self.init_scale)
            piece = F.interpolate(weight, scale_factor=factor, mode=self.interpolation)
            if not self.concat:
                piece = F.pad(piece, (0, full_length - piece.shape[-1]))
            pieces.append(piece * multiplier ** (n - i - 1))
        k = torch.cat(pieces, dim=-1) if self.concat else sum(pieces)
        if self.learnable_decay:
            lags = torch.arange(k.shape[-1], device=k.device, dtype=k.dtype)
            decay = self.decay if decay is None else decay
            k = k * torch.exp(-decay.view(1, -1, 1) * torch.log1p(lags))
        return k

    def compute_kernel(self, L: int) -> torch.Tensor:
        k = self._multiscale_kernel()
        k = k[..., :L] if k.shape[-1] >= L else F.pad(k, (0, L - k.shape[-1]))
        return k / self.kernel_norm.to(k.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Official checkpoints: a first-use flag instead of a norm measured at init; a 2-D projection weight;
        # before SGConv commit 97862df, one norm per feature shared by every kernel.
        initialized = state_dict.pop(prefix + 'kernel_norm_initialized', None)
        for key in (prefix + 'output_linear.0.weight', prefix + 'output_linear.weight'):
            if key in state_dict and state_dict[key].dim() == 2:
                state_dict[key] = state_dict[key].unsqueeze(-1)
        norm_key = prefix + 'kernel_norm'
        weight_keys = [f'{prefix}kernel_list.{i}' for i in range(self.num_scales)]
        if initialized is not None and not bool(initialized) and all(key in state_dict for key in weight_keys):
            # Saved before its first forward: the official layer would measure the norm of these weights then.
            with torch.no_grad():
                k = self._multiscale_kernel(
                    [state_dict[key] for key in weight_keys],
                    state_dict.get(prefix + 'multiplier'), state_dict.get(prefix + 'decay'))
            state_dict[norm_key] = k.norm(dim=-1, keepdim=True)
        elif norm_key in state_dict and state_dict[norm_key].dim() == 2:
            state_dict[norm_key] = state_dict[norm_key].expand_as(self.kernel_norm).clone()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, l_max={self.l_max}, kernel_dim={self.kernel_dim}, "
                f"num_scales={self.num_scales}, init_scale={self.init_scale}, mode={self.mode!r}")
