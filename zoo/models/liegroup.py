"""Affine-equivariant Lie-group CNNs: R^2 x SL(2,R) and R^2 x GL+(2,R) group convolutions.

"Lie Group Decompositions for Equivariant Neural Networks", Mironenco and Forre, ICLR 2024 (arXiv:2310.11366).
Original code: https://github.com/mirceamironenco/rgenn (MIT).

Every group element is split by the polar decomposition g = P R (P symmetric positive definite, R a rotation) and
given the global coordinates (log P, angle of R). Convolution kernels are continuous functions (SIREN MLPs) of the
kernel-grid position and of these coordinates, evaluated at Monte-Carlo samples of the group, so the images are
never warped: the lifting layer re-evaluates its kernel on the grid transformed by each sample, the group layers
on (g_out^-1 x, coords(g_out^-1 g_in)) for every pair of output and input samples.

Differences from the released code (same architecture and kernel maths otherwise, see tests/test_liegroup.py):
* evaluation is reproducible: eval mode uses fixed samples drawn from `eval_seed` (the release draws new ones at
  every call), and the generated kernels are cached until the weights or the samples change;
* each sample buffer is its own tensor (the release's two buffers share storage on the CPU, so its group convs
  see g_out^-1 in place of g_in);
* the final group conv is given the samples its input actually lives on (the lifting samples);
* the GL+(2) volume factor 1/|det g_in| is applied per input sample (the release broadcasts it over the output
  samples).
Options the release does not have, off in the paper configurations and on in the small CPU ones: stratified rotation
samples, the signed relative-angle chart, input padding, evaluation samples without the positive-definite factor,
kernel SIRENs with omega folded into their weights, a wider last conv (`final_width`). On the CPU, wide group convs
run as Winograd convolutions (`kernels.conv2d_winograd`, the same function to float32 rounding).

The timm feature map is the group-pooled map (max over the samples, or their mean with `group_pool='mean'`), so
`forward_features` is a (B, C, H, W) image-like map that transforms by the spatial action; the head's global max pool
over it is the paper's invariant max projection over samples and space (with the mean: the release's mean
projection, `global_pool='avg'`). The release's other model options (`--act relu`, `--conv_norm`, `--head_norm`,
trainable SIREN frequencies) are arguments here too, and `checkpoint_filter_fn` loads the release's state dicts.
"""
import logging
import math
import re
from functools import partial
from typing import List, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from timm.models import (
    build_model_with_cfg, generate_default_cfgs, register_model, register_notrace_module,
)
from timm.models._features import feature_take_indices

from kernels import WINOGRAD_KERNEL_SIZES, conv2d_winograd, winograd_supported
from ._pretrained import pretrained_weights
from ._state_dict import unwrap_state_dict
from .layers import check_image_input, check_kwargs, check_model_args

__all__ = ['GroupSampler', 'LiftingConv2d', 'GroupConv2d', 'LieGroupResNet', 'polar_coordinates',
           'checkpoint_filter_fn', 'rgenn_model_args']

_logger = logging.getLogger(__name__)

GROUP_DIMS = {'sl2': 3, 'gl2': 4}
CONV_BACKENDS = ('auto', 'direct', 'winograd')
# Packed (channel x sample) input width from which Winograd beats oneDNN's direct conv on the CPU (docs/benchmarks.md).
WINOGRAD_MIN_CHANNELS = 128


# ---------------------------------------------------------------------------------------------------------------
# Group maths: rotations, symmetric matrix functions, polar coordinates, samplers
# ---------------------------------------------------------------------------------------------------------------

def rotation_matrix(theta: torch.Tensor) -> torch.Tensor:
    """(...,) angles -> (..., 2, 2) rotations."""
    c, s = torch.cos(theta), torch.sin(theta)
    return torch.stack((torch.stack((c, -s), -1), torch.stack((s, c), -1)), -2)


def _sym_eig(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    # eigh in at least float32 (it is unstable in half precision); float64 stays float64 for the tests.
    return torch.linalg.eigh(x.to(torch.promote_types(x.dtype, torch.float32)))


def polar_coordinates(h: torch.Tensor, group: str, signed_angle: bool = False) -> torch.Tensor:
    """Global coordinates of h = P R in the Lie algebra: log P (symmetric) plus the angle of R.

    (..., 2, 2) -> (..., 3) for 'sl2': (sqrt2 logP_01, angle, sqrt2 logP_00);
                   (..., 4) for 'gl2': (logP_00, sqrt2 logP_01, logP_11, angle).
    The angle lies in [0, 2 pi), as in the release, or in (-pi, pi] with `signed_angle`: that chart is continuous
    around the identity, where the relative elements of nearby samples fall (the release's jumps from 0 to 2 pi
    there). |sin| < 1e-6 is snapped to zero so that the identity maps to 0 under rounding noise.
    """
    e, v = _sym_eig(h @ h.mT)
    half_log = 0.5 * torch.log(e)
    log_p = (v * half_log.unsqueeze(-2)) @ v.mT
    rot = ((v * torch.exp(-half_log).unsqueeze(-2)) @ v.mT) @ h.to(v.dtype)
    sin, cos = rot[..., 1, 0], rot[..., 0, 0]
    sin = torch.where(sin.abs() < 1e-6, torch.zeros_like(sin), sin)
    angle = torch.atan2(sin, cos)
    if not signed_angle:
        angle = torch.remainder(angle, 2 * math.pi)
    sqrt2 = math.sqrt(2.0)
    if group == 'sl2':
        coords = [sqrt2 * log_p[..., 0, 1], angle, sqrt2 * log_p[..., 0, 0]]
    else:
        coords = [log_p[..., 0, 0], sqrt2 * log_p[..., 0, 1], log_p[..., 1, 1], angle]
    return torch.stack(coords, -1).to(h.dtype)


ROTATION_SAMPLERS = ('equidistant', 'linspace', 'stratified', 'uniform', 'haar')


class GroupSampler:
    """Monte-Carlo samples g = exp(X / 2) R of SL(2,R) or GL+(2,R), returned with their inverses.

    Args:
        group: 'sl2' (X traceless) or 'gl2'.
        rotation: 'equidistant' (angles -pi r + 2 pi r k / N, k < N: no angle counted twice), 'linspace' (the
            release's `EquiDistantSO2`: linspace(-pi r, pi r, N), both ends included), 'stratified' (one
            uniform angle in each of the N equal cells of [-pi r, pi r]; the cell midpoints when `jitter` is off, as
            for the fixed evaluation samples), 'uniform' (angles uniform in [-pi r, pi r]) or 'haar' (Haar-uniform
            on SO(2), by QR of a Gaussian matrix).
        rotation_range: r above, in (0, 1]; ignored by 'haar'.
        spd_spread: variance of the Gaussian coordinates of X in the symmetric (traceless for SL(2)) basis, i.e. a
            log-normal positive-definite factor (the release's `--spd_bounds`, 0.1). 0 gives rotations only.
    """

    def __init__(self, group: str = 'sl2', rotation: str = 'equidistant', rotation_range: float = 1.0,
                 spd_spread: float = 0.1):
        if group not in GROUP_DIMS:
            raise ValueError(f"group must be one of {sorted(GROUP_DIMS)}, got {group!r}")
        if rotation not in ROTATION_SAMPLERS:
            raise ValueError(f"rotation sampler must be one of {ROTATION_SAMPLERS}, got {rotation!r}")
        if not 0.0 < rotation_range <= 1.0:
            raise ValueError(f"rotation_range must be in (0, 1], got {rotation_range}")
        if spd_spread < 0.0:
            raise ValueError(f"spd_spread is a variance and must be >= 0, got {spd_spread}")
        self.group, self.rotation, self.rotation_range, self.spd_spread = group, rotation, rotation_range, spd_spread

    def rotations(self, n: int, generator: Optional[torch.Generator] = None,
                  jitter: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        r = self.rotation_range * math.pi
        if self.rotation == 'haar':
            q, upper = torch.linalg.qr(torch.randn(n, 2, 2, generator=generator, dtype=torch.float64))
            q = q * upper.diagonal(dim1=-2, dim2=-1).sign().unsqueeze(-2)
            q[..., 0] *= torch.det(q).sign().unsqueeze(-1)  # flip reflections into SO(2)
            return q, q.mT
        if self.rotation == 'linspace':
            theta = torch.linspace(-r, r, n, dtype=torch.float64)
        elif self.rotation in ('equidistant', 'stratified'):
            offset = 0.0
            if self.rotation == 'stratified':
                offset = torch.rand(n, generator=generator, dtype=torch.float64) if jitter else 0.5
            theta = -r + 2 * r * (torch.arange(n, dtype=torch.float64) + offset) / n
        else:
            theta = r * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
        return rotation_matrix(theta), rotation_matrix(-theta)

    def spd_halves(self, n: int, generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """exp(X / 2) and exp(-X / 2) for n log-normal draws of X."""
        dim = 2 if self.group == 'sl2' else 3
        z = math.sqrt(self.spd_spread) * torch.randn(n, dim, generator=generator, dtype=torch.float64)
        s = 1 / math.sqrt(2.0)
        if self.group == 'sl2':
            a, b = z.unbind(-1)
            x = torch.stack((torch.stack((s * a, s * b), -1), torch.stack((s * b, -s * a), -1)), -2)
        else:
            a, b, c = z.unbind(-1)
            x = torch.stack((torch.stack((a, s * b), -1), torch.stack((s * b, c), -1)), -2)
        e, v = torch.linalg.eigh(x)
        half = (v * torch.exp(0.5 * e).unsqueeze(-2)) @ v.mT
        half_inv = (v * torch.exp(-0.5 * e).unsqueeze(-2)) @ v.mT
        return half, half_inv

    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               jitter: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """(g, g^-1), each (n, 2, 2) float64 on the CPU; g^-1 = R^-1 exp(-X / 2) is exact, no matrix inverse."""
        rot, rot_inv = self.rotations(n, generator, jitter)
        if self.spd_spread == 0.0:
            return rot, rot_inv
        half, half_inv = self.spd_halves(n, generator)
        return half @ rot, rot_inv @ half_inv


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------

class KernelNet(nn.Module):
    """SIREN from kernel coordinates to the (C_out * C_in) kernel values at that point.

    in_features -> hidden (sin(first_omega * .)) -> hidden (sin(omega * .)) x num_hidden -> C_out * C_in.
    Initialisation as in SIREN / the release: first layer U(+-1/in), later U(+-sqrt(6/in)/omega) with zero bias,
    output layer U(+-sqrt(6/hidden)/sqrt(fan_in)) with zero bias, fan_in = C_in * k^2.

    fold_omega: keep omega inside the sine layers' weights and biases (sin(W' x + b') with W' = omega W) instead of
    multiplying in `forward`. The function at init is the same, but Adam's steps, whose size does not depend on the
    gradient's scale, move the sine phases omega times more slowly (why that matters: docs/liegroup.md). The
    release's checkpoints (W, b and omega stored apart) are folded on load.
    trainable_omega: learn the frequencies, one per sine layer (`omega`, (num_hidden + 1,)), as the release's
    `SineAct(trainable=True)` (`SIRENConfig.trainable_act`) does.
    """

    def __init__(self, in_features: int, out_features: int, fan_in: int, hidden: int = 60, num_hidden: int = 2,
                 first_omega: float = 10.0, omega: float = 10.0, fold_omega: bool = False,
                 trainable_omega: bool = False):
        super().__init__()
        if first_omega <= 0 or omega <= 0:
            raise ValueError(f"SIREN frequencies must be positive, got {first_omega}, {omega}")
        if fold_omega and trainable_omega:
            raise ValueError("fold_omega and trainable_omega exclude each other: folded frequencies live in the "
                             "weights")
        dims = [in_features] + [hidden] * (num_hidden + 1)
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))
        omegas = [first_omega] + [omega] * num_hidden
        self.fc = nn.Linear(hidden, out_features)
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                bound = 1 / layer.in_features if i == 0 else math.sqrt(6 / layer.in_features) / omegas[i]
                layer.weight.uniform_(-bound, bound)
                if i > 0:
                    layer.bias.zero_()
                if fold_omega:
                    layer.weight.mul_(omegas[i])
                    layer.bias.mul_(omegas[i])
            bound = math.sqrt(6 / hidden) / math.sqrt(fan_in)
            self.fc.weight.uniform_(-bound, bound)
            self.fc.bias.zero_()
        self.fold_omega = fold_omega
        self.nominal_omegas = list(omegas)  # the frequencies the function is defined with, folded or not
        self.omegas = [1.0] * len(omegas) if fold_omega else omegas
        if trainable_omega:
            self.omega = nn.Parameter(torch.tensor(omegas))
        else:
            self.register_parameter('omega', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            if self.omega is not None:
                x = torch.sin(self.omega[i] * layer(x))
            else:
                x = torch.sin(self.omegas[i] * layer(x))
        return self.fc(x)


def kernel_grid(kernel_size: int) -> torch.Tensor:
    """(k*k, 2) points (x, y) of a k x k kernel in [-1, 1]^2, pixel centres (align_corners=False), row-major."""
    c = (2 * torch.arange(kernel_size, dtype=torch.float64) + 1) / kernel_size - 1
    y, x = torch.meshgrid(c, c, indexing='ij')
    return torch.stack((x, y), -1).reshape(-1, 2).float()


class _SampledConv(nn.Module):
    """Shared parts of the lifting and group convolutions: kernel grid, mask, kernel cache."""

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int, padding: int, group: str,
                 coord_features: int, kernel_mlp: Optional[dict] = None):
        super().__init__()
        if group not in GROUP_DIMS:
            raise ValueError(f"group must be one of {sorted(GROUP_DIMS)}, got {group!r}")
        self.in_chans, self.out_chans, self.kernel_size, self.padding = in_chans, out_chans, kernel_size, padding
        self.group = group
        # SL(2) preserves areas, so a hard unit-disc mask stays equivariant; GL+(2) uses a smooth mask and a volume
        # factor, as in the release.
        self.volume_preserving = group == 'sl2'
        self.kernel_net = KernelNet(coord_features, out_chans * in_chans, in_chans * kernel_size ** 2,
                                    **(kernel_mlp or {}))
        self.register_buffer('grid', kernel_grid(kernel_size), persistent=False)
        self._cache = None

    def mask(self, points: torch.Tensor) -> torch.Tensor:
        """Mask over the last axis of `points` (..., D): hard |x| <= 1 on the spatial part for SL(2),
        sigmoid(2 (1 - |p|)) on the full coordinate vector for GL+(2) (as the release does)."""
        if self.volume_preserving:
            return (torch.linalg.vector_norm(points[..., :2], dim=-1) <= 1.0).to(points.dtype)
        return torch.sigmoid(2.0 * (1.0 - torch.linalg.vector_norm(points, dim=-1)))

    @torch.jit.unused
    def cached_weight(self, *samples: torch.Tensor) -> torch.Tensor:
        """The dense conv weight for these samples, reused while neither the weights nor the samples change.

        Only in eval mode without autograd (a cached tensor cannot carry a graph); the key holds the storage
        pointers and in-place version counters of every parameter and sample, so optimizer steps,
        load_state_dict, .to() and a resample all invalidate it. TorchScript generates the weight at every call.
        """
        if self.training or torch.is_grad_enabled():
            return self.weight(*samples)
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*self.parameters(), *samples))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.weight(*samples))
        return self._cache[1]

    def weight(self, *samples: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@register_notrace_module  # kernel generation and caching are data-dependent; FX keeps the layer whole
class LiftingConv2d(_SampledConv):
    """R^2 -> R^2 x G lifting convolution: one kernel per output sample g, K_g(x) = k(g^-1 x) (|det g^-1|).

    (B, C_in, H, W) -> (B, C_out, N, H', W'), where N is the number of samples g^-1 passed to `forward`.
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 5, padding: int = 0, group: str = 'sl2',
                 kernel_mlp: Optional[dict] = None):
        super().__init__(in_chans, out_chans, kernel_size, padding, group, 2, kernel_mlp)

    def weight(self, g_out_inv: torch.Tensor) -> torch.Tensor:
        n, k = g_out_inv.shape[0], self.kernel_size
        points = torch.einsum('nij,pj->npi', g_out_inv, self.grid.to(g_out_inv.dtype))  # (N, k*k, 2)
        w = self.kernel_net(points) * self.mask(points).unsqueeze(-1)  # (N, k*k, C_out * C_in)
        if not self.volume_preserving:
            w = w * torch.det(g_out_inv).abs().view(n, 1, 1)
        w = w.view(n, k, k, self.out_chans, self.in_chans).permute(3, 0, 4, 1, 2)
        return w.reshape(self.out_chans * n, self.in_chans, k, k)

    def forward(self, x: torch.Tensor, g_out_inv: Optional[torch.Tensor]) -> torch.Tensor:
        assert g_out_inv is not None, 'LiftingConv2d needs the output samples'
        if torch.jit.is_scripting():
            w = self.weight(g_out_inv)
        else:
            w = self.cached_weight(g_out_inv)
        y = F.conv2d(x, w.to(x.dtype), padding=self.padding)
        return y.view(y.shape[0], self.out_chans, g_out_inv.shape[0], y.shape[-2], y.shape[-1])


@register_notrace_module
class GroupConv2d(_SampledConv):
    """R^2 x G -> R^2 x G group convolution, Monte-Carlo over the input samples.

    The kernel for output sample g_out and input sample g_in is k(g_out^-1 x, coords(g_out^-1 g_in)) (divided by
    |det g_in| for GL+(2)); all pairs form one dense conv over the packed (channel, sample) axis.
    `signed_angle` picks the (-pi, pi] chart of the relative rotation (see `polar_coordinates`).
    `conv_backend`: 'direct' (F.conv2d), 'winograd' (`kernels.conv2d_winograd`, float32/64, kernel 3 or 5) or 'auto'
    (Winograd for CPU tensors outside autocast from WINOGRAD_MIN_CHANNELS packed input channels, else direct).
    (B, C_in, N_in, H, W) -> (B, C_out, N_out, H', W').
    """

    def __init__(self, in_chans: int, out_chans: int, kernel_size: int = 5, padding: int = 2, group: str = 'sl2',
                 kernel_mlp: Optional[dict] = None, signed_angle: bool = False, conv_backend: str = 'auto'):
        super().__init__(in_chans, out_chans, kernel_size, padding, group, 2 + GROUP_DIMS[group], kernel_mlp)
        if conv_backend not in CONV_BACKENDS:
            raise ValueError(f"conv_backend must be one of {CONV_BACKENDS}, got {conv_backend!r}")
        self.signed_angle = signed_angle
        self.conv_backend = conv_backend

    def weight(self, g_in: torch.Tensor, g_out_inv: torch.Tensor) -> torch.Tensor:
        n_out, n_in, k = g_out_inv.shape[0], g_in.shape[0], self.kernel_size
        relative = g_out_inv.unsqueeze(1) @ g_in.unsqueeze(0)  # (N_out, N_in, 2, 2)
        rel = polar_coordinates(relative, self.group, self.signed_angle)  # (N_out, N_in, d)
        points = torch.einsum('nij,pj->npi', g_out_inv, self.grid.to(g_out_inv.dtype))  # (N_out, k*k, 2)
        coords = torch.cat((
            points.unsqueeze(1).expand(-1, n_in, -1, -1),
            rel.unsqueeze(2).expand(-1, -1, k * k, -1),
        ), -1)  # (N_out, N_in, k*k, 2 + d)
        w = self.kernel_net(coords) * self.mask(coords).unsqueeze(-1)  # (N_out, N_in, k*k, C_out * C_in)
        if not self.volume_preserving:
            w = w / torch.det(g_in).abs().view(1, n_in, 1, 1)
        w = w.view(n_out, n_in, k, k, self.out_chans, self.in_chans).permute(4, 0, 5, 1, 2, 3)
        return w.reshape(self.out_chans * n_out, self.in_chans * n_in, k, k)

    def forward(self, x: torch.Tensor, g_in: Optional[torch.Tensor], g_out_inv: Optional[torch.Tensor]) -> torch.Tensor:
        assert g_in is not None and g_out_inv is not None, 'GroupConv2d needs the input and output samples'
        if torch.jit.is_scripting():
            w = self.weight(g_in, g_out_inv)
        else:
            self._check_input(x, g_in)
            w = self.cached_weight(g_in, g_out_inv)
        w = w.to(x.dtype)
        x = x.flatten(1, 2)
        if not torch.jit.is_scripting() and self.use_winograd(x, w):
            y = conv2d_winograd(x, w, self.padding)
        else:
            y = F.conv2d(x, w, padding=self.padding)
        return y.view(y.shape[0], self.out_chans, g_out_inv.shape[0], y.shape[-2], y.shape[-1])

    @torch.jit.unused
    def _check_input(self, x: torch.Tensor, g_in: torch.Tensor):
        if x.dim() != 5 or x.shape[1] != self.in_chans or x.shape[2] != g_in.shape[0]:
            raise ValueError(f"GroupConv2d expects (B, {self.in_chans}, {g_in.shape[0]}, H, W) input "
                             f"(channels, input samples), got {tuple(x.shape)}")

    @torch.jit.unused
    def use_winograd(self, x: torch.Tensor, w: torch.Tensor) -> bool:
        """Whether the packed input x (B, C_in * N_in, H, W) and weight w run through `conv2d_winograd`."""
        if self.conv_backend == 'direct':
            return False
        if self.conv_backend == 'winograd':
            if not winograd_supported(x, w):
                raise ValueError(f"conv_backend='winograd' needs float32/float64 inputs and a kernel size in "
                                 f"{WINOGRAD_KERNEL_SIZES}, got {x.dtype} and kernel {self.kernel_size}; "
                                 f"use 'auto' or 'direct'")
            return True
        return (x.device.type == 'cpu' and not torch.is_autocast_enabled('cpu')
                and x.shape[1] >= WINOGRAD_MIN_CHANNELS and winograd_supported(x, w))


@register_notrace_module
class PlainConv2d(nn.Conv2d):
    """Ordinary learned conv on a single-sample group axis: the layer of the plain CNN baseline."""

    def forward(self, x: torch.Tensor, g_in: Optional[torch.Tensor] = None,
                g_out_inv: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, C, H, W) or (B, C, 1, H, W) -> (B, C_out, 1, H', W'); the sample arguments are ignored."""
        if x.dim() == 5:
            x = x.flatten(1, 2)
        return self._conv_forward(x, self.weight, self.bias).unsqueeze(2)


class FrozenConv2d(nn.Module):
    """A lifting or group conv whose kernel was generated once, for fixed samples: one plain conv2d over the packed
    (channel, sample) axis, the export form made by `LieGroupResNet.freeze_kernels`.

    (B, C_in, H, W) or (B, C_in, N_in, H, W) -> (B, C_out, N_out, H', W'); the sample arguments are ignored.
    """

    def __init__(self, weight: torch.Tensor, out_chans: int, num_samples: int, padding: int):
        super().__init__()
        self.out_chans, self.num_samples, self.padding = out_chans, num_samples, padding
        self.register_buffer('weight', weight.detach().clone())  # (C_out * N_out, C_in * N_in, k, k)

    def forward(self, x: torch.Tensor, g_in: Optional[torch.Tensor] = None,
                g_out_inv: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.dim() == 5:
            x = x.flatten(1, 2)
        y = F.conv2d(x, self.weight.to(x.dtype), padding=self.padding)
        return y.view(y.shape[0], self.out_chans, self.num_samples, y.shape[-2], y.shape[-1])

    def extra_repr(self) -> str:
        return f"out_chans={self.out_chans}, num_samples={self.num_samples}, padding={self.padding}"


def layer_norm_3d(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over (channels, samples, H, W), no affine parameters (the release's LayerNorm3d)."""
    return F.layer_norm(x, x.shape[1:])


class LayerNorm3d(nn.Module):
    """`layer_norm_3d` as a module: the release's default `--conv_norm layernorm3d` (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm_3d(x)


class ChannelLayerNorm3d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, N, H, W) map, affine, eps 1e-6: the release's `--conv_norm
    layernorm3dg`."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 4, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 4, 1, 2, 3)


# The release's `--conv_norm` choices: per-map LayerNorm (default), BatchNorm3d over channels, channel LayerNorm.
CONV_NORMS = ('layernorm3d', 'batchnorm3d', 'layernorm3dg')
HEAD_NORMS = ('layernorm', 'batchnorm')  # the release's `--head_norm`
ACT_LAYERS = ('gelu', 'relu')  # the release's `--act`
GROUP_POOLS = ('max', 'mean')


def conv_norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == 'layernorm3d':
        return LayerNorm3d()
    if kind == 'batchnorm3d':
        return nn.BatchNorm3d(channels)
    if kind == 'layernorm3dg':
        return ChannelLayerNorm3d(channels)
    raise ValueError(f"conv_norm must be one of {CONV_NORMS}, got {kind!r}")


def act_layer_module(kind: str) -> nn.Module:
    if kind == 'gelu':
        return nn.GELU()
    if kind == 'relu':
        return nn.ReLU()
    raise ValueError(f"act_layer must be one of {ACT_LAYERS}, got {kind!r}")


def group_max_pool2d(x: torch.Tensor) -> torch.Tensor:
    """2x2 spatial max pool of a (B, C, N, H, W) map."""
    return F.max_pool2d(x.flatten(1, 2), 2).unflatten(1, (x.shape[1], x.shape[2]))


class LiftingStem(nn.Module):
    """Lifting conv (no padding: the release found padding hurts on affNIST) -> norm (LayerNorm3d) -> act (GELU)
    (-> 2x2 max pool when `pool`, a CPU-budget option that quarters the cost of the next layers)."""

    def __init__(self, conv: nn.Module, channels: int, pool: bool = False, norm: str = 'layernorm3d',
                 act: str = 'gelu'):
        super().__init__()
        self.conv = conv
        self.norm = conv_norm_layer(norm, channels)
        self.act = act_layer_module(act)
        self.pool = pool

    def forward(self, x: torch.Tensor, g_out_inv: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.act(self.norm(self.conv(x, g_out_inv)))
        return group_max_pool2d(x) if self.pool else x


class ResidualStage(nn.Module):
    """[group conv -> norm -> act] x 2 plus identity, act, then norm -> 2x2 max pool -> act (norm LayerNorm3d and act
    GELU by default; `norm1`, `norm2`, `norm3` are the release's block `norm1`, `norm2` and the pre-pool norm).

    Input and output live on the same samples (the identity shortcut needs it).
    """

    def __init__(self, conv1: nn.Module, conv2: nn.Module, channels: int, norm: str = 'layernorm3d',
                 act: str = 'gelu'):
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        self.norm1, self.norm2, self.norm3 = (conv_norm_layer(norm, channels) for _ in range(3))
        self.act = act_layer_module(act)

    def forward(self, x: torch.Tensor, g_in: Optional[torch.Tensor], g_out_inv: Optional[torch.Tensor]):
        y = self.act(self.norm1(self.conv1(x, g_in, g_out_inv)))
        y = self.act(self.norm2(self.conv2(y, g_in, g_out_inv)))
        x = self.act(x + y)
        return self.act(group_max_pool2d(self.norm3(x)))


class ConvStage(nn.Module):
    """Group conv (no padding) -> norm -> act, from the lifting samples to fresh output samples."""

    def __init__(self, conv: nn.Module, channels: int, norm: str = 'layernorm3d', act: str = 'gelu'):
        super().__init__()
        self.conv = conv
        self.norm = conv_norm_layer(norm, channels)
        self.act = act_layer_module(act)

    def forward(self, x: torch.Tensor, g_in: Optional[torch.Tensor], g_out_inv: Optional[torch.Tensor]):
        return self.act(self.norm(self.conv(x, g_in, g_out_inv)))


class MlpHead(nn.Module):
    """Global pool -> Linear (no bias) -> norm (LayerNorm or BatchNorm) -> act -> Dropout -> Linear, as the release's
    classifier.

    With `global_pool=''` the map is returned unpooled and the MLP is skipped (timm's no-pooling contract).
    """

    def __init__(self, in_features: int, hidden_size: int, num_classes: int, global_pool: str = 'max',
                 drop_rate: float = 0.3, norm: str = 'layernorm', act: str = 'gelu'):
        super().__init__()
        if norm not in HEAD_NORMS:
            raise ValueError(f"head_norm must be one of {HEAD_NORMS}, got {norm!r}")
        self.fc1 = nn.Linear(in_features, hidden_size, bias=False)
        self.norm = nn.LayerNorm(hidden_size) if norm == 'layernorm' else nn.BatchNorm1d(hidden_size)
        self.act = act_layer_module(act)
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, global_pool)

    def reset(self, num_classes: int, global_pool: Optional[str] = None):
        if global_pool is not None:
            if global_pool not in ('max', 'avg', ''):
                raise ValueError(f"global_pool must be 'max', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        self.fc = nn.Linear(self.fc1.out_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if not self.global_pool:
            return x
        x = x.amax(dim=(-2, -1)) if self.global_pool == 'max' else x.mean(dim=(-2, -1))
        x = self.drop(self.act(self.norm(self.fc1(x))))
        return x if pre_logits else self.fc(x)


# ---------------------------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------------------------

class LieGroupResNet(nn.Module):
    """The paper's residual group CNN (GResNet) for SL(2,R) / GL+(2,R), or its plain-CNN counterpart.

    stem: lifting conv k x k, no padding -> LN3d -> GELU                        (B, C, N, H-k+1, W-k+1)
    stages.0 .. depth-1: residual stage (2 group convs, padding k//2) + 2x2 max pool
    stages.depth: group conv k x k, no padding, to fresh samples -> LN3d -> GELU
    features: max (or mean) over samples (B, C, H', W'); head: global max pool -> MLP (256) -> classes.

    Args:
        group: 'sl2', 'gl2', or 'none' for the plain CNN baseline (ordinary learned kernels, one sample).
        num_samples: group samples N per sampled layer (the paper: 10). Compute grows as N^2.
        width: channels of every layer (the paper: 40); depth: residual stages (the paper: 1).
        final_width: channels of the last group conv, i.e. the invariant features the head sees (default: width).
        stem_pool: 2x2 max pool after the stem (not in the paper; the small CPU configurations use it).
        input_pad, pad_value: pad the image by `input_pad` pixels of `pad_value` (an empty pixel after normalization:
            -1 for the default mean = std = 0.5) before the stem, so that the inner convs' zero padding does not put
            artificial edges next to a digit moved towards the frame border (docs/liegroup.md). Not in the paper.
            Intermediate feature maps are cropped back to the positions centred on the image.
        rotation_sampler, rotation_range, spd_spread: see `GroupSampler`.
        signed_angle: give the group convs the relative rotation angle in (-pi, pi] instead of the release's
            [0, 2 pi), so that kernels are continuous around the identity (for samplers that are not on a fixed grid).
        conv_backend: how the group convs run their dense conv, 'auto' | 'direct' | 'winograd' (see `GroupConv2d`).
        eval_seed: seed of the fixed evaluation samples. eval_resample: draw new samples at every eval call, as the
            release does (non-deterministic predictions).
        eval_spd: positive-definite factor of the fixed evaluation samples: 'sampled' (drawn from eval_seed) or
            'identity' (the log-normal's median, so the samples are the rotations alone; with the stratified sampler,
            the centre of each cell).
        drop_rate: dropout in the head MLP. drop_path_rate: accepted for timm's train.py; this model has no
            stochastic depth, so it must be 0.
        kernel_mlp: SIREN options (hidden, num_hidden, first_omega, omega, fold_omega, trainable_omega); the paper:
            60 wide, 3 sine layers, omega 10, not folded, fixed. The small configurations fold omega (`KernelNet`).
        group_pool: how the features are pooled over the samples: 'max' (the paper) or 'mean'.
        act_layer: 'gelu' (the paper) or 'relu', everywhere (the release's `--act`).
        conv_norm: the norm after every conv, 'layernorm3d' (the paper: over channels, samples and space, no
            parameters), 'batchnorm3d' or 'layernorm3dg' (channels only, affine): the release's `--conv_norm`.
        head_norm: the head MLP's norm, 'layernorm' (the paper) or 'batchnorm' (the release's `--head_norm`).

    The release's `--global_pool max` is `group_pool='max', global_pool='max'` (the default); its `--global_pool mean`
    (the mean over samples and space) is `group_pool='mean', global_pool='avg'`. `global_pool='avg'` alone (a max
    over the samples, then a spatial mean) is not a release option.
    """

    def __init__(
            self,
            group: str = 'sl2',
            num_samples: int = 10,
            width: int = 40,
            final_width: Optional[int] = None,
            depth: int = 1,
            kernel_size: int = 5,
            stem_pool: bool = False,
            input_pad: int = 0,
            pad_value: float = -1.0,
            in_chans: int = 1,
            num_classes: int = 10,
            global_pool: str = 'max',
            head_hidden_size: int = 256,
            drop_rate: float = 0.3,
            drop_path_rate: float = 0.0,
            rotation_sampler: str = 'equidistant',
            rotation_range: float = 1.0,
            spd_spread: float = 0.1,
            signed_angle: bool = False,
            conv_backend: str = 'auto',
            eval_seed: int = 0,
            eval_resample: bool = False,
            eval_spd: str = 'sampled',
            kernel_mlp: Optional[dict] = None,
            group_pool: str = 'max',
            act_layer: str = 'gelu',
            conv_norm: str = 'layernorm3d',
            head_norm: str = 'layernorm',
    ):
        super().__init__()
        if group not in ('sl2', 'gl2', 'none'):
            raise ValueError(f"group must be 'sl2', 'gl2' or 'none' (plain CNN), got {group!r}")
        check_model_args('LieGroupResNet', in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate, stochastic_depth=False)
        if not (isinstance(kernel_size, int) and kernel_size >= 1 and kernel_size % 2):
            raise ValueError(f"LieGroupResNet: kernel_size must be an odd integer >= 1, got {kernel_size!r}")
        check_kwargs('LieGroupResNet', kernel_mlp or {}, KernelNet, exclude=('in_features', 'out_features', 'fan_in'),
                     what='kernel_mlp key')
        for name, value, allowed in (('group_pool', group_pool, GROUP_POOLS), ('act_layer', act_layer, ACT_LAYERS),
                                     ('conv_norm', conv_norm, CONV_NORMS), ('head_norm', head_norm, HEAD_NORMS)):
            if value not in allowed:
                raise ValueError(f"LieGroupResNet: {name} must be one of {allowed}, got {value!r}")
        final_width = width if final_width is None else final_width
        if min(num_samples, width, final_width, depth) < 1:
            raise ValueError(f"num_samples, width, final_width and depth must be >= 1, "
                             f"got {num_samples}, {width}, {final_width}, {depth}")
        self.group = group
        self.num_samples = 1 if group == 'none' else num_samples
        self.in_chans = in_chans
        self.kernel_size = kernel_size
        self.num_classes = num_classes
        self.num_features = final_width
        self.head_hidden_size = head_hidden_size
        if eval_spd not in ('sampled', 'identity'):
            raise ValueError(f"eval_spd must be 'sampled' or 'identity', got {eval_spd!r}")
        self.eval_seed = eval_seed
        self.eval_resample = eval_resample
        self.eval_spd = eval_spd
        self.depth = depth
        if input_pad < 0:
            raise ValueError(f"input_pad must be >= 0, got {input_pad}")
        self.input_pad, self.pad_value = input_pad, pad_value
        self.grad_checkpointing = False
        # Smallest input that leaves >= 1 pixel after the padding, the stem conv, the pools and the last conv.
        self.min_input_size = max(1, kernel_size * 2 ** (depth + stem_pool) + kernel_size - 1 - 2 * input_pad)
        self.min_size_reason = (f"(kernel {kernel_size}, {depth} pooling stage(s), stem_pool={stem_pool}, "
                                f"input_pad={input_pad})")

        if group == 'none':
            self.sampler = None
            lift = partial(PlainConv2d, bias=False)
            conv = partial(PlainConv2d, bias=False)
        else:
            self.sampler = GroupSampler(group, rotation_sampler, rotation_range, spd_spread)
            lift = partial(LiftingConv2d, group=group, kernel_mlp=kernel_mlp)
            conv = partial(GroupConv2d, group=group, kernel_mlp=kernel_mlp, signed_angle=signed_angle,
                           conv_backend=conv_backend)
        k = kernel_size
        self.stem_pool = stem_pool
        self.group_pool, self.act_layer, self.conv_norm, self.head_norm = group_pool, act_layer, conv_norm, head_norm
        self.signed_angle = signed_angle
        na = dict(norm=conv_norm, act=act_layer)
        self.stem = LiftingStem(lift(in_chans, width, k, padding=0), width, pool=stem_pool, **na)
        stages = [ResidualStage(conv(width, width, k, padding=k // 2), conv(width, width, k, padding=k // 2), width,
                                **na)
                  for _ in range(depth)]
        stages.append(ConvStage(conv(width, final_width, k, padding=0), final_width, **na))
        self.stages = nn.ModuleList(stages)
        self.head = MlpHead(final_width, head_hidden_size, num_classes, global_pool, drop_rate, norm=head_norm,
                            act=act_layer)

        r = 2 if stem_pool else 1
        self.feature_info = [dict(num_chs=width, reduction=r, module='stem')]
        self.feature_info += [dict(num_chs=width, reduction=r * 2 ** (i + 1), module=f'stages.{i}') for i in range(depth)]
        self.feature_info.append(dict(num_chs=final_width, reduction=r * 2 ** depth, module=f'stages.{depth}'))
        # (offset, stride) of each feature level on the image: position j is centred on offset + stride * j.
        offset = float(k // 2 - input_pad)  # the unpadded stem conv
        grid = [(offset + 0.5, 2) if stem_pool else (offset, 1)]
        for _ in range(depth):  # 'same' convs, then a 2x2 pool
            offset, stride = grid[-1]
            grid.append((offset + stride / 2, 2 * stride))
        offset, stride = grid[-1]
        grid.append((offset + stride * (k // 2), stride))  # the unpadded last conv
        self._feature_grid = grid

        # Fixed evaluation samples (g, g^-1) for the lifting layer and the final conv: (2, 2, N, 2, 2).
        # Not persistent: they are a function of (eval_seed, sampler, N), so checkpoints stay sampler-agnostic.
        self.register_buffer('eval_samples', torch.zeros(2, 2, self.num_samples, 2, 2), persistent=False)
        if self.sampler is not None:
            self.resample_eval(eval_seed)

    @torch.no_grad()
    def resample_eval(self, seed: Optional[int] = None):
        """Redraw the fixed evaluation samples from `seed` (default: `eval_seed`); invalidates kernel caches."""
        gen = torch.Generator().manual_seed(self.eval_seed if seed is None else seed)
        draw = self.sampler.sample if self.eval_spd == 'sampled' else self.sampler.rotations
        pairs = [torch.stack(draw(self.num_samples, gen, jitter=False)) for _ in range(2)]
        self.eval_samples.copy_(torch.stack(pairs))

    def set_samples(self, stem: Tuple[torch.Tensor, torch.Tensor], final: Tuple[torch.Tensor, torch.Tensor]):
        """Use these (g, g^-1) pairs, each (N, 2, 2), as the evaluation samples (e.g. a grid of quarter turns)."""
        with torch.no_grad():
            self.eval_samples.copy_(torch.stack([torch.stack(stem), torch.stack(final)]))

    @torch.no_grad()
    def freeze_kernels(self) -> 'LieGroupResNet':
        """Replace every lifting and group conv by a `FrozenConv2d` holding the kernel it generates for the fixed
        evaluation samples. The result is the eval-mode network as plain convs, without kernel networks,
        eigendecompositions or caches, so that exporters (ONNX, TorchScript, torch.export) take it.

        In place, returns self; for inference only (the kernels no longer train, resampling has no effect).
        """
        if self.group == 'none':
            return self  # the plain CNN has ordinary convs already
        if self.eval_resample:
            raise ValueError("freeze_kernels needs the fixed evaluation samples, but this model draws new ones at "
                             "every call (eval_resample=True)")
        # The samples each layer gets in eval mode, as in `samples` and `_forward_group`.
        s = self.eval_samples.to(next(self.parameters()).dtype)
        g, g_inv, g_final_inv = s[0, 0], s[0, 1], s[1, 1]
        conv = self.stem.conv
        self.stem.conv = FrozenConv2d(conv.weight(g_inv), conv.out_chans, g_inv.shape[0], conv.padding)
        for i, stage in enumerate(self.stages):
            out_inv = g_final_inv if i == self.depth else g_inv
            for name, conv in list(stage.named_children()):
                if isinstance(conv, GroupConv2d):
                    setattr(stage, name, FrozenConv2d(
                        conv.weight(g, out_inv), conv.out_chans, out_inv.shape[0], conv.padding))
        return self

    def samples(self, ref: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor],
                                                  Optional[torch.Tensor], Optional[torch.Tensor]]:
        """(g_stem, g_stem^-1, g_final, g_final^-1): fresh in training (global RNG), fixed in eval.

        A TorchScript model always uses the fixed evaluation samples (the sampler is Python code).
        """
        if self.group == 'none':
            return None, None, None, None
        if (self.training or self.eval_resample) and not torch.jit.is_scripting():
            s = self._draw_samples().to(ref.device, ref.dtype)
        else:
            s = self.eval_samples.to(ref.dtype)  # no copy when the dtype already matches
        return s[0, 0], s[0, 1], s[1, 0], s[1, 1]

    @torch.jit.unused
    def _draw_samples(self) -> torch.Tensor:
        """Two fresh (g, g^-1) pairs from the sampler: (2, 2, N, 2, 2), float64."""
        pairs = [self.sampler.sample(self.num_samples) for _ in range(2)]
        return torch.stack([torch.stack(p) for p in pairs])

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(stem=r'^stem', blocks=r'^stages\.(\d+)')

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def _forward_group(self, x: torch.Tensor, stop: int, collect: List[int]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Stem, then the first `stop` stages: the (B, C, N, H, W) map where it stopped, and the group-pooled maps
        (B, C, H, W) after the stem (0) and after stage i - 1 (i) for every i in `collect`."""
        if not torch.jit.is_scripting():
            check_image_input(x, self.in_chans, self.min_input_size, 'LieGroupResNet', self.min_size_reason,
                              weight=self.head.fc1.weight)
        if self.input_pad:
            x = F.pad(x, [self.input_pad] * 4, value=self.pad_value)
        g, g_inv, _, g_final_inv = self.samples(x)
        pooled: List[torch.Tensor] = []
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint(self.stem, x, g_inv, use_reentrant=False)
        else:
            x = self.stem(x, g_inv)
        if 0 in collect:
            pooled.append(self._group_pool(x))
        for i, stage in enumerate(self.stages):
            if i < stop:
                out_inv = g_final_inv if i == self.depth else g_inv  # the last conv maps to fresh samples
                if self.grad_checkpointing and not torch.jit.is_scripting():
                    x = checkpoint(stage, x, g, out_inv, use_reentrant=False)
                else:
                    x = stage(x, g, out_inv)
                if i + 1 in collect:
                    pooled.append(self._group_pool(x))
        return x, pooled

    def _group_pool(self, x: torch.Tensor) -> torch.Tensor:
        """Pooling over the samples: (B, C, N, H, W) -> (B, C, H, W)."""
        return x.mean(2) if self.group_pool == 'mean' else x.amax(2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self._forward_group(x, len(self.stages), [])
        return self._group_pool(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Group-pooled maps after the stem (index 0) and each stage (1 .. depth + 1)."""
        if output_fmt != 'NCHW':
            raise ValueError(f"only output_fmt='NCHW' is supported, got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        stop = max_index if (stop_early or intermediates_only) else len(self.stages)
        size = x.shape[-2:]
        x, pooled = self._forward_group(x, stop, take_indices)
        intermediates = [self._crop_to_image(f, i, size) for f, i in zip(pooled, sorted(take_indices))]
        if intermediates_only:
            return intermediates
        return self._group_pool(x), intermediates

    def _crop_to_image(self, x: torch.Tensor, level: int, size) -> torch.Tensor:
        """The positions of feature level `level` whose receptive field is centred on the (unpadded) image.

        Input padding and the unpadded stem conv shift the maps against the image: position j of a level with
        stride r (its `reduction`) is centred on image coordinate `offset + r * j`. Keeping the positions centred on
        [-1/2, size - 1/2] leaves at most ceil(size / r) + 1 of them, as `feature_info` promises.
        """
        offset, stride = self._feature_grid[level]
        for dim, n in ((2, size[0]), (3, size[1])):
            first = max(0, math.ceil((-0.5 - offset) / stride))
            last = min(x.shape[dim], math.floor((n - 0.5 - offset) / stride) + 1)
            if last > first:
                x = x.narrow(dim, first, last - first)
        return x

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices, max_index = feature_take_indices(len(self.stages) + 1, indices)
        self.stages = self.stages[:max_index]
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices


_RELEASE_BUFFERS = ('g_tilde', 'g_inv', 'grid')  # per-layer samples and sampling grid: not weights


def _frequency_advice(found: List[List[float]]) -> str:
    """What the release was run with, given every kernel network's frequencies `act_layer.a`."""
    first, rest = found[0][0], found[0][1:] or found[0][:1]
    if all(f == found[0] for f in found) and max(rest) - min(rest) <= 1e-6 * abs(rest[0]):
        return (f"--siren_first_w0 {first:g} --siren_w0 {rest[0]:g}: build the model with "
                f"kernel_mlp=dict(first_omega={first:g}, omega={rest[0]:g})")
    return ("frequencies that differ between layers, i.e. trained ones (SineAct(trainable=True)): build the model "
            "with kernel_mlp=dict(trainable_omega=True)")


def _check_release_compatible(model: 'LieGroupResNet'):
    """ValueError naming the first option of `model` that a released rgenn checkpoint cannot have been trained with."""
    problems = []
    if model.group == 'none':
        problems.append("group='none' (the plain CNN has no release counterpart)")
    if model.stem_pool:
        problems.append('stem_pool=True (the release has no pool after the stem)')
    if model.input_pad:
        problems.append(f'input_pad={model.input_pad} (the release does not pad its input)')
    if model.signed_angle:
        problems.append('signed_angle=True (the release feeds the relative angle in [0, 2 pi) to its kernels)')
    if model.num_features != model.stem.conv.out_chans:
        problems.append(f'final_width={model.num_features} (the release keeps the width, {model.stem.conv.out_chans})')
    pools = (model.group_pool, model.head.global_pool)
    if model.head.global_pool and pools not in (('max', 'max'), ('mean', 'avg')):
        problems.append(
            f"group_pool={pools[0]!r} with global_pool={pools[1]!r} (the release's --global_pool max is "
            f"group_pool='max', global_pool='max'; its --global_pool mean, the mean over samples and space, is "
            f"group_pool='mean', global_pool='avg')")
    if problems:
        raise ValueError('LieGroupResNet: a released rgenn checkpoint has no equivalent of this model\'s '
                         + '; '.join(problems) + '. Build the model without it to load the file.')


def checkpoint_filter_fn(state_dict: dict, model: LieGroupResNet) -> dict:
    """Map a released rgenn GResNet state dict (plain, under `model.` of its SamplingWrapper, or in a
    `{'state_dict': ...}` / `{'model': ...}` wrapper) onto `model`, or refuse it with the option that differs.

    Converted: parameter names; the norms of `--conv_norm batchnorm3d | layernorm3dg` and `--head_norm batchnorm`;
    the SIREN frequencies `act_layer.a` (equal to the model's: dropped; trainable frequencies,
    `kernel_mlp=dict(trainable_omega=True)`: loaded; a model with `fold_omega`: folded into the weights).
    Refused (ValueError naming the release option and the argument to build with): another group (`--liegroup`),
    `--metric_alpha` other than 1 (no equivalent), other SIREN frequencies (`--siren_w0`, `--siren_first_w0`),
    another conv or head norm (`--conv_norm`, `--head_norm`), and a model with options the release does not have
    (stem_pool, input_pad, signed_angle, final_width, or a pooling that is neither `--global_pool max` nor `mean`).
    Warned: another number of samples (`--gsamples`) or positive-definite spread (`--spd_bounds`) than the model's
    sampler: sampling choices, not weights.
    Not visible in a state dict, hence the caller's to match: `--global_pool mean` (group_pool='mean',
    global_pool='avg') and `--act relu` (act_layer='relu').
    """
    state_dict = unwrap_state_dict(state_dict)
    if not any('inr.kernel_net.' in k or 'inr.final_linear.' in k for k in state_dict):
        return state_dict  # this project's layout, or another model's (the loader reports what does not fit)
    state_dict = {k.removeprefix('model.'): v for k, v in state_dict.items()}
    _check_release_compatible(model)

    def constant(suffix):
        key = next((k for k in state_dict if k == suffix or k.endswith('.' + suffix)), None)
        return state_dict.get(key) if key else None

    # Group and sampler constants the release stores as buffers.
    basis = constant('group.basis.basis_matrix')
    if basis is not None:
        release_group = {3: 'sl2', 4: 'gl2'}.get(basis.shape[0])
        if release_group and release_group != model.group:
            raise ValueError(f"LieGroupResNet: the checkpoint was trained with --liegroup {release_group}, the model "
                             f"is group={model.group!r}; build liegroup_{release_group}")
    rotation_basis = constant('group.orthogonal.basis_matrix')
    if rotation_basis is not None:
        alpha = 1.0 / (2.0 * float(rotation_basis.reshape(-1)[2]) ** 2)
        if abs(alpha - 1.0) > 1e-4:
            raise ValueError(f"LieGroupResNet: the checkpoint was trained with --metric_alpha {alpha:.4g}, which "
                             f"rescales the kernels' group coordinates; this model has no equivalent (only 1)")
    cov = constant('group.spd_sampler.cov')
    if cov is not None and abs(float(cov[0, 0]) - model.sampler.spd_spread) > 1e-6:
        _logger.warning(f"LieGroupResNet: the checkpoint was trained with --spd_bounds {float(cov[0, 0]):.4g}, the "
                        f"model samples with spd_spread={model.sampler.spd_spread:g} (a sampling choice: pass "
                        f"spd_spread={float(cov[0, 0]):.4g} to sample as in training)")
    samples = next((v for k, v in state_dict.items() if k.endswith('.g_tilde')), None)
    if samples is not None and samples.shape[0] != model.num_samples:
        _logger.warning(f"LieGroupResNet: the checkpoint was trained with --gsamples {samples.shape[0]}, the model "
                        f"uses num_samples={model.num_samples} (a sampling choice: pass num_samples="
                        f"{samples.shape[0]} to sample as in training)")

    # Norm variants, read off the keys.
    ckpt_conv_norm = 'batchnorm3d' if 'stem.1.bn.weight' in state_dict else \
        'layernorm3dg' if 'stem.1.weight' in state_dict else 'layernorm3d'
    if ckpt_conv_norm != model.conv_norm:
        raise ValueError(f"LieGroupResNet: the checkpoint was trained with --conv_norm {ckpt_conv_norm}, the model "
                         f"has conv_norm={model.conv_norm!r}; build it with conv_norm={ckpt_conv_norm!r}")
    ckpt_head_norm = 'batchnorm' if 'fc.1.running_mean' in state_dict else 'layernorm'
    if ckpt_head_norm != model.head_norm:
        raise ValueError(f"LieGroupResNet: the checkpoint was trained with --head_norm {ckpt_head_norm}, the model "
                         f"has head_norm={model.head_norm!r}; build it with head_norm={ckpt_head_norm!r}")

    depth = len(model.stages) - 1
    out, frequencies = {}, {}
    for key, value in state_dict.items():
        if key.startswith('group.') or '.group.' in key or key.rsplit('.', 1)[-1] in _RELEASE_BUFFERS:
            continue
        key = key.replace('.bn.', '.')  # BatchNorm3d is wrapped in the release
        if key.startswith('stem.0.'):
            key = 'stem.conv.' + key[len('stem.0.'):]
        elif key.startswith('stem.1.'):
            key = 'stem.norm.' + key[len('stem.1.'):]
        elif key.startswith('blocks.'):
            index, rest = key[len('blocks.'):].split('.', 1)
            index = int(index)
            # Release: per stage [block, norm, pool, act] at 4 i .. 4 i + 3, then the final conv and its norm.
            if index < 4 * depth:
                stage, part = divmod(index, 4)
                if rest.startswith('downsample.'):
                    raise ValueError('LieGroupResNet: the checkpoint has a residual block with a downsampling '
                                     'shortcut (unequal --blocks_dim widths), which this model does not have')
                key = f'stages.{stage}.{rest}' if part == 0 else f'stages.{stage}.norm3.{rest}'
            else:
                key = f'stages.{depth}.{"conv" if index == 4 * depth else "norm"}.{rest}'
        elif key.startswith('fc.'):
            key = key.replace('fc.0.', 'head.fc1.').replace('fc.1.', 'head.norm.').replace('fc.4.', 'head.fc.')
        match = re.match(r'(.*)inr\.kernel_net\.net\.(\d+)\.act_layer\.a$', key)
        if match:
            frequencies.setdefault(match.group(1), {})[int(match.group(2))] = float(value.reshape(-1)[0])
            continue
        key = re.sub(r'inr\.kernel_net\.net\.(\d+)\.linear\.', r'kernel_net.layers.\1.', key)
        out[key.replace('inr.final_linear.', 'kernel_net.fc.')] = value

    # SIREN frequencies: per conv, compared with (or loaded into, or folded into) the model's kernel network.
    mismatched = []
    for name, net in model.named_modules():
        if not isinstance(net, KernelNet):
            continue
        prefix = name[:-len('kernel_net')]
        found = frequencies.get(prefix)
        a = [found[i] for i in sorted(found)] if found else list(net.nominal_omegas)
        if found and len(a) != len(net.layers):
            continue  # another depth of SIREN: the shape check reports it
        if net.omega is not None:
            out[name + '.omega'] = torch.tensor(a, dtype=net.omega.dtype)
        elif net.fold_omega:
            for i, w in enumerate(a):
                for leaf in ('weight', 'bias'):
                    k = f'{name}.layers.{i}.{leaf}'
                    if k in out:
                        out[k] = out[k] * w
        elif any(abs(x - y) > 1e-6 * abs(y) for x, y in zip(a, net.nominal_omegas)):
            mismatched.append((prefix, a, net.nominal_omegas))
    if mismatched:
        prefix, a, own = mismatched[0]
        raise ValueError(
            f"LieGroupResNet: the checkpoint's SIREN frequencies (act_layer.a) differ from the model's in "
            f"{len(mismatched)} kernel network(s), e.g. {prefix}kernel_net: {[round(x, 6) for x in a]} vs {own}. "
            f"It was trained with {_frequency_advice([m[1] for m in mismatched])}")
    return out


# The release's train.py model options and their defaults (everything else it takes is about training).
RGENN_MODEL_OPTIONS = dict(
    nlayers=2, blocks_dim=40, stem_kernel=5, conv_kernel=5, global_pool='max', act='gelu', conv_norm='layernorm3d',
    head_norm='layernorm', inr='siren', inr_dim=60, inr_nlayers=2, siren_w0=10.0, siren_first_w0=10.0, gsamples=10,
    liegroup='sl2', metric_alpha=1.0, spd_bounds=0.1, ortho_sampler='equi_distant', ortho_bounds=1.0)


def rgenn_model_args(args) -> Tuple[str, dict]:
    """The registered name and keyword arguments of the model a release `train.py` run builds, e.g.
    `name, kwargs = rgenn_model_args(['--liegroup', 'gl2', '--global_pool', 'mean'])`, then
    `timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...), **kwargs)`.

    `args`: the run's command-line arguments (a list of strings), or its options as a dict or argparse Namespace
    (release names; missing ones take the release defaults, training options are ignored). An option without an
    equivalent raises ValueError naming it: `--inr wire`, `--metric_alpha` other than 1, `--stem_kernel` unlike
    `--conv_kernel`, `--nlayers` below 2. Evaluation keeps this project's fixed samples (the release draws new ones
    at every call: add `eval_resample=True` for that).
    """
    if isinstance(args, (list, tuple)):
        import argparse
        parser = argparse.ArgumentParser(add_help=False)
        for name, default in RGENN_MODEL_OPTIONS.items():
            parser.add_argument(f'--{name}', type=type(default), default=default)
        args = vars(parser.parse_known_args(list(args))[0])
    elif not isinstance(args, dict):
        args = vars(args)
    o = dict(RGENN_MODEL_OPTIONS, **{k: v for k, v in args.items() if k in RGENN_MODEL_OPTIONS})
    refused = []
    if o['inr'] != 'siren':
        refused.append(f"--inr {o['inr']} (only the SIREN kernel network exists here)")
    if float(o['metric_alpha']) != 1.0:
        refused.append(f"--metric_alpha {o['metric_alpha']} (the group coordinates here use the metric 1)")
    if o['stem_kernel'] != o['conv_kernel']:
        refused.append(f"--stem_kernel {o['stem_kernel']} with --conv_kernel {o['conv_kernel']} (one kernel_size "
                       f"serves every layer here)")
    if o['nlayers'] < 2:
        refused.append(f"--nlayers {o['nlayers']} (no residual block; depth must be >= 1 here)")
    samplers = {'equi_distant': 'linspace', 'loguniform': 'uniform', 'haar': 'haar'}
    if o['ortho_sampler'] not in samplers:
        refused.append(f"--ortho_sampler {o['ortho_sampler']}")
    for name, allowed in (('global_pool', ('max', 'mean')), ('act', ACT_LAYERS), ('conv_norm', CONV_NORMS),
                          ('head_norm', HEAD_NORMS), ('liegroup', ('sl2', 'gl2'))):
        if o[name] not in allowed:
            refused.append(f"--{name} {o[name]} (choices here: {', '.join(allowed)})")
    if refused:
        raise ValueError('rgenn options without an equivalent in LieGroupResNet: ' + '; '.join(refused))
    kwargs = dict(
        group=o['liegroup'], num_samples=o['gsamples'], width=o['blocks_dim'], depth=o['nlayers'] - 1,
        kernel_size=o['conv_kernel'], act_layer=o['act'], conv_norm=o['conv_norm'], head_norm=o['head_norm'],
        spd_spread=o['spd_bounds'], rotation_sampler=samplers[o['ortho_sampler']], rotation_range=o['ortho_bounds'],
        kernel_mlp=dict(hidden=o['inr_dim'], num_hidden=o['inr_nlayers'], first_omega=float(o['siren_first_w0']),
                        omega=float(o['siren_w0'])))
    if o['global_pool'] == 'mean':
        kwargs.update(group_pool='mean', global_pool='avg')
    return f"liegroup_{o['liegroup']}", kwargs


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------

def _cfg(**kwargs):
    # The group models have no input-conv weight: their first layer is generated by the stem's kernel network,
    # whose output layer (C_out * C_in wide) is the closest thing to timm's `first_conv`.
    return {
        'url': '', 'num_classes': 10, 'input_size': (1, 40, 40), 'pool_size': (14, 14),
        'crop_pct': 1.0, 'interpolation': 'bilinear', 'mean': (0.5,), 'std': (0.5,),
        'first_conv': 'stem.conv.kernel_net.fc', 'classifier': 'head.fc',
        'license': 'mit',
        'origin_url': 'https://github.com/mirceamironenco/rgenn',
        'paper_name': 'Lie Group Decompositions for Equivariant Neural Networks',
        'paper_ids': 'arXiv:2310.11366',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'liegroup_sl2': _cfg(description='R^2 x SL(2,R) GResNet, paper configuration (width 40, 10 samples)'),
    'liegroup_gl2': _cfg(description='R^2 x GL+(2,R) GResNet, paper configuration (width 40, 10 samples)'),
    'liegroup_sl2_small': _cfg(
        pool_size=(9, 9), description='R^2 x SL(2,R) GResNet, CPU configuration (width 8, 16 invariant features, '
                                      '4 stratified samples within +-45 degrees, stem pool, input padding 8)'),
    'liegroup_gl2_small': _cfg(
        pool_size=(9, 9), description='R^2 x GL+(2,R) GResNet, CPU configuration (width 8, 16 invariant features, '
                                      '4 stratified samples within +-90 degrees, stem pool, input padding 8)'),
    'liegroup_cnn': _cfg(
        first_conv='stem.conv', description='plain CNN with the GResNet layout, parameter count of liegroup_sl2'),
    'liegroup_cnn_small': _cfg(
        first_conv='stem.conv', pool_size=(9, 9),
        description='plain CNN with the small GResNet layout (input padding 8) and parameter count'),
})


def _create_liegroup(variant: str, pretrained: bool = False, **kwargs) -> LieGroupResNet:
    check_kwargs(variant, kwargs, LieGroupResNet)
    depth = kwargs.get('depth', 1)
    with pretrained_weights(variant, pretrained, kwargs):
        return build_model_with_cfg(
            LieGroupResNet, variant, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            feature_cfg=dict(out_indices=tuple(range(depth + 2)), feature_cls='getter'),
            **kwargs,
        )


# The CPU configurations (not in the paper; how each value was chosen: docs/liegroup.md): 4 samples per layer with
# rotations stratified over +-45 degrees (SL(2)) or +-90 degrees (GL+(2)), the signed relative-angle chart, input
# padding, evaluation samples without the positive-definite factor, SIRENs with omega folded in, and a 16-wide last
# conv (the invariant features the head sees).
_SMALL_GROUP_ARGS = dict(num_samples=4, width=8, final_width=16, stem_pool=True, input_pad=8,
                         rotation_sampler='stratified', signed_angle=True, eval_spd='identity',
                         kernel_mlp=dict(fold_omega=True))
_SMALL_ROTATION_RANGE = dict(sl2=0.25, gl2=0.5)


@register_model
def liegroup_sl2(pretrained=False, **kwargs) -> LieGroupResNet:
    model_args = dict(group='sl2', num_samples=10, width=40)
    return _create_liegroup('liegroup_sl2', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def liegroup_gl2(pretrained=False, **kwargs) -> LieGroupResNet:
    model_args = dict(group='gl2', num_samples=10, width=40)
    return _create_liegroup('liegroup_gl2', pretrained=pretrained, **dict(model_args, **kwargs))


def _small_group_args(group: str, kwargs: dict) -> dict:
    # kernel_mlp options given by the caller update the small defaults rather than replace them (fold_omega stays on).
    kernel_mlp = dict(_SMALL_GROUP_ARGS['kernel_mlp'], **(kwargs.pop('kernel_mlp', None) or {}))
    defaults = dict(_SMALL_GROUP_ARGS, rotation_range=_SMALL_ROTATION_RANGE[group])
    return dict(defaults, group=group, kernel_mlp=kernel_mlp, **kwargs)


@register_model
def liegroup_sl2_small(pretrained=False, **kwargs) -> LieGroupResNet:
    return _create_liegroup('liegroup_sl2_small', pretrained=pretrained, **_small_group_args('sl2', kwargs))


@register_model
def liegroup_gl2_small(pretrained=False, **kwargs) -> LieGroupResNet:
    return _create_liegroup('liegroup_gl2_small', pretrained=pretrained, **_small_group_args('gl2', kwargs))


@register_model
def liegroup_cnn(pretrained=False, **kwargs) -> LieGroupResNet:
    model_args = dict(group='none', width=64)
    return _create_liegroup('liegroup_cnn', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def liegroup_cnn_small(pretrained=False, **kwargs) -> LieGroupResNet:
    model_args = dict(group='none', width=24, stem_pool=True, input_pad=8)
    return _create_liegroup('liegroup_cnn_small', pretrained=pretrained, **dict(model_args, **kwargs))
