"""UniRepLKNet: a universal perception large-kernel ConvNet.

Paper: "UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and
Image Recognition", Ding et al., CVPR 2024, https://arxiv.org/abs/2311.15599
TPAMI extension: "Scaling Up Your Kernels: Large Kernel Design in ConvNets towards Universal Representations",
https://arxiv.org/abs/2410.08049
Original code: https://github.com/AILab-CVC/UniRepLKNet (`unireplknet.py`, Apache-2.0)

This is a timm-native version of the official architecture with the official parameter names, so the official
checkpoints (hf.co/DingXiaoH/UniRepLKNet) load as they are. It adds what the official file lacks: pretrained cfgs
and loading through `pretrained=True`, `features_only`, `forward_intermediates`, `reset_classifier`, gradient
checkpointing, layer-decay groups, and a choice of depthwise-conv backend (`kernel_backend`, see `kernels`).

Structural reparameterization: `timm.utils.reparameterize_model(model)` (or `model.reparameterize_unireplknet()`)
folds every Dilated Reparam Block, BatchNorm, GRN bias and layer scale into single convs / linears, exactly as the
official `reparameterize_unireplknet`; `deploy=True` builds that inference structure directly. A training-form
checkpoint loaded into a deploy-form model is reparameterized on the fly by `checkpoint_filter_fn`.
"""
import logging
import re
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, SelectAdaptivePool2d, trunc_normal_
from timm.models import (
    build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model)
from timm.models._features import feature_take_indices

from kernels import check_backend, dwconv2d
from ._pretrained import pretrained_weights
from ._state_dict import unwrap_state_dict
from .layers import check_image_input, check_kwargs, check_model_args

__all__ = ['UniRepLKNet', 'UniRepLKNetBlock', 'DilatedReparamBlock']

_logger = logging.getLogger(__name__)

# Parallel dilated branches of a Dilated Reparam Block, per large kernel size K: (branch kernel sizes, dilations).
# Hard-coded in the official code ("not tuned carefully"); every branch's equivalent size (k - 1) * r + 1 is <= K.
DILATED_BRANCHES: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
}
# A block with kernel size 0 has no depthwise conv at all, 3 and 5 a plain depthwise conv ("SmaK"),
# 7 and up a Dilated Reparam Block ("LarK").
SMALL_KERNEL_SIZES = (3, 5)
BLOCK_KERNEL_SIZES = (0,) + SMALL_KERNEL_SIZES + tuple(sorted(DILATED_BRANCHES))

# Official per-block kernel sizes, looked up by depths (stage 1: 3x3, stages 2 and 4: 13x13, stage 3: a mix).
DEFAULT_KERNEL_SIZES = {
    (2, 2, 6, 2): ((3,) * 2, (13,) * 2, (13,) * 6, (13,) * 2),  # A, F, P
    (2, 2, 8, 2): ((3,) * 2, (13,) * 2, (13,) * 8, (13,) * 2),  # N
    (3, 3, 18, 3): ((3,) * 3, (13,) * 3, (13, 3) * 9, (13,) * 3),  # T
    (3, 3, 27, 3): ((3,) * 3, (13,) * 3, (13, 3, 3) * 9, (13,) * 3),  # S, B, L, XL
}


def _is_batchnorm(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm)


def _fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.Module) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of `bn(conv(x))` as one conv; weight is (C_out, ...), bias (C_out,) or None."""
    scale = bn.weight / (bn.running_var + bn.eps).sqrt()
    bias = -bn.running_mean if bias is None else bias - bn.running_mean
    return weight * scale.reshape(-1, *([1] * (weight.dim() - 1))), bn.bias + bias * scale


def _dilate_kernel(weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """The dense kernel equivalent to a dilated one: (C, 1, k, k) -> (C, 1, (k-1)*r+1, (k-1)*r+1), zeros between."""
    if dilation == 1:
        return weight
    c, _, kh, kw = weight.shape
    dense = weight.new_zeros(c, 1, (kh - 1) * dilation + 1, (kw - 1) * dilation + 1)
    dense[:, :, ::dilation, ::dilation] = weight
    return dense


class DepthwiseConv2d(nn.Module):
    """Stride-1 'same' depthwise conv computed by `kernels.dwconv2d` (official key layout: `weight`, `bias`)."""

    def __init__(
            self,
            channels: int,
            kernel_size: int,
            dilation: int = 1,
            bias: bool = False,
            kernel_backend: str = 'auto',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.channels = channels
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.padding = dilation * (kernel_size - 1) // 2
        self.kernel_backend = kernel_backend
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, **dd))
        if bias:
            self.bias = nn.Parameter(torch.zeros(channels, **dd))
        else:
            self.register_parameter('bias', None)
        if not self.weight.is_meta:  # (timm's truncated normal is slow on meta tensors)
            trunc_normal_(self.weight, std=.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwconv2d(x, self.weight, self.bias, padding=(self.padding, self.padding), dilation=self.dilation,
                        backend=self.kernel_backend)

    def extra_repr(self) -> str:
        return (f'{self.channels}, kernel_size={self.kernel_size}, dilation={self.dilation}, '
                f'bias={self.bias is not None}, kernel_backend={self.kernel_backend!r}')


class DilatedReparamBlock(nn.Module):
    """Large-kernel depthwise conv plus parallel dilated small-kernel depthwise convs, each followed by its own BN.

    Training form: BN(conv_KxK(x)) + sum_b BN_b(dilated_conv_b(x)). Deploy form: one KxK depthwise conv with bias.
    """

    def __init__(
            self,
            channels: int,
            kernel_size: int,
            deploy: bool = False,
            use_sync_bn: bool = False,
            kernel_backend: str = 'auto',
            device=None,
            dtype=None,
    ):
        super().__init__()
        if kernel_size not in DILATED_BRANCHES:
            raise ValueError(
                f"a Dilated Reparam Block needs a kernel size in {sorted(DILATED_BRANCHES)}, got {kernel_size}")
        dd = dict(device=device, dtype=dtype)
        norm_layer = nn.SyncBatchNorm if use_sync_bn else nn.BatchNorm2d
        self.kernel_size = kernel_size
        self.kernel_backend = kernel_backend
        self.branch_kernel_sizes, self.branch_dilations = DILATED_BRANCHES[kernel_size]
        self.deploy = deploy
        self.lk_origin = DepthwiseConv2d(channels, kernel_size, bias=deploy, kernel_backend=kernel_backend, **dd)
        self.origin_bn = nn.Identity() if deploy else norm_layer(channels, **dd)
        if not deploy:
            for k, r in zip(self.branch_kernel_sizes, self.branch_dilations):
                self.add_module(f'dil_conv_k{k}_{r}', DepthwiseConv2d(
                    channels, k, dilation=r, kernel_backend=kernel_backend, **dd))
                self.add_module(f'dil_bn_k{k}_{r}', norm_layer(channels, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.origin_bn(self.lk_origin(x))
        # Branch modules are found by name (their official names); each dil_conv is followed by its dil_bn.
        branch = x
        for name, module in self.named_children():
            if name.startswith('dil_conv'):
                branch = module(x)
            elif name.startswith('dil_bn'):
                out = out + module(branch)
        return out

    @torch.no_grad()
    def merge_dilated_branches(self):
        """Fold every branch and BN into `lk_origin` (a KxK depthwise conv with bias). Idempotent."""
        if self.deploy:
            return
        weight, bias = _fold_bn(self.lk_origin.weight, None, self.origin_bn)
        for k, r in zip(self.branch_kernel_sizes, self.branch_dilations):
            branch_weight, branch_bias = _fold_bn(
                self.get_submodule(f'dil_conv_k{k}_{r}').weight, None, self.get_submodule(f'dil_bn_k{k}_{r}'))
            branch_weight = _dilate_kernel(branch_weight, r)
            pad = (self.kernel_size - branch_weight.shape[-1]) // 2
            weight = weight + F.pad(branch_weight, [pad] * 4)
            bias = bias + branch_bias
        merged = DepthwiseConv2d(
            weight.shape[0], self.kernel_size, bias=True, kernel_backend=self.kernel_backend,
            device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(weight)
        merged.bias.copy_(bias)
        self.lk_origin = merged
        self.origin_bn = nn.Identity()
        for k, r in zip(self.branch_kernel_sizes, self.branch_dilations):
            delattr(self, f'dil_conv_k{k}_{r}')
            delattr(self, f'dil_bn_k{k}_{r}')
        self.deploy = True


class SqueezeExcite(nn.Module):
    """SE with a ReLU bottleneck of 1x1 convs named `down` / `up` as in the official code. x: (B, C, H, W)."""

    def __init__(self, channels: int, hidden: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.down = nn.Conv2d(channels, hidden, 1, bias=True, **dd)
        self.up = nn.Conv2d(hidden, channels, 1, bias=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.up(F.relu(self.down(x.mean((2, 3), keepdim=True))))
        return x * scale.sigmoid()


class GlobalResponseNorm(nn.Module):
    """ConvNeXt-V2 GRN on channels-last input (B, H, W, C); `gamma`, `beta` shaped (1, 1, 1, C) as officially.

    The statistics are taken in at least float32 (float64 input stays float64): the spatial L2 norm of a large
    low-precision activation overflows fp16 (inf / inf = NaN downstream), one of the AMP NaN sources reported for
    the official code.
    """

    def __init__(self, dim: int, use_bias: bool = True, eps: float = 1e-6, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim, **dd))
        if use_bias:
            self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim, **dd))
        else:
            self.register_parameter('beta', None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        gx = torch.linalg.vector_norm(wide, ord=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + self.eps)
        out = (self.gamma * nx + 1) * wide
        if self.beta is not None:
            out = out + self.beta
        return out.to(x.dtype)


class ToChannelsLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class ToChannelsFirst(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class UniRepLKNetBlock(nn.Module):
    """x + drop_path(gamma * BN(Linear2(GRN(GELU(Linear1(SE(BN(dwconv(x))))))))).

    Submodule names and Sequential indices follow the official checkpoints (`pwconv1.1`, `act.1`, `pwconv2.0`,
    `pwconv2.2`). Deploy form: the BNs, GRN bias and layer scale are folded into the depthwise conv and Linear2.
    """

    def __init__(
            self,
            dim: int,
            kernel_size: int,
            drop_path: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            deploy: bool = False,
            use_sync_bn: bool = False,
            ffn_factor: float = 4,
            kernel_backend: str = 'auto',
            device=None,
            dtype=None,
    ):
        super().__init__()
        if kernel_size not in BLOCK_KERNEL_SIZES:
            raise ValueError(f"block kernel size must be one of {BLOCK_KERNEL_SIZES}, got {kernel_size}")
        dd = dict(device=device, dtype=dtype)
        norm_layer = nn.SyncBatchNorm if use_sync_bn else nn.BatchNorm2d
        if kernel_size == 0:
            self.dwconv = nn.Identity()
        elif kernel_size in SMALL_KERNEL_SIZES:
            self.dwconv = DepthwiseConv2d(dim, kernel_size, bias=deploy, kernel_backend=kernel_backend, **dd)
        else:
            self.dwconv = DilatedReparamBlock(
                dim, kernel_size, deploy=deploy, use_sync_bn=use_sync_bn, kernel_backend=kernel_backend, **dd)
        self.norm = nn.Identity() if deploy or kernel_size == 0 else norm_layer(dim, **dd)
        self.se = SqueezeExcite(dim, dim // 4, **dd)

        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(ToChannelsLast(), nn.Linear(dim, ffn_dim, **dd))
        self.act = nn.Sequential(nn.GELU(), GlobalResponseNorm(ffn_dim, use_bias=not deploy, **dd))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim, bias=True, **dd), ToChannelsFirst())
        else:
            self.pwconv2 = nn.Sequential(
                nn.Linear(ffn_dim, dim, bias=False, **dd), ToChannelsFirst(), norm_layer(dim, **dd))
        if not deploy and layer_scale_init_value:
            self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init_value), **dd))
        else:
            self.register_parameter('gamma', None)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + self.drop_path(y)

    @torch.no_grad()
    def reparameterize(self):
        """Switch to the deploy form in place, as the official `UniRepLKNetBlock.reparameterize`. Idempotent."""
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.merge_dilated_branches()
        if _is_batchnorm(self.norm):
            conv = self.dwconv.lk_origin if isinstance(self.dwconv, DilatedReparamBlock) else self.dwconv
            weight, bias = _fold_bn(conv.weight, conv.bias, self.norm)
            fused = DepthwiseConv2d(
                conv.channels, conv.kernel_size, bias=True, kernel_backend=conv.kernel_backend,
                device=weight.device, dtype=weight.dtype)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = fused
            else:
                self.dwconv = fused
            self.norm = nn.Identity()
        if len(self.pwconv2) == 3:
            # Linear2 (no bias) -> BN -> * gamma, fed by GRN(..) + beta: W (y + beta) = W y + W beta.
            linear, bn, grn = self.pwconv2[0], self.pwconv2[2], self.act[1]
            bias = linear.weight @ grn.beta.reshape(-1)
            weight, bias = _fold_bn(linear.weight, bias, bn)
            if self.gamma is not None:
                weight = weight * self.gamma.unsqueeze(1)
                bias = bias * self.gamma
            fused = nn.Linear(linear.in_features, linear.out_features, bias=True,
                              device=weight.device, dtype=weight.dtype)
            fused.weight.copy_(weight)
            fused.bias.copy_(bias)
            self.pwconv2 = nn.Sequential(fused, ToChannelsFirst())
            del grn.beta
            grn.register_parameter('beta', None)
            del self.gamma
            self.register_parameter('gamma', None)


class UniRepLKNet(nn.Module):
    """UniRepLKNet. Stem and downsampling layers are `downsample_layers.{0..3}`, blocks `stages.{i}.{j}`, the head
    is global pooling -> LayerNorm (`norm`) -> Linear (`head`): the official checkpoint layout.
    """
    __jit_unused_properties__ = ['deploy']

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            depths: Sequence[int] = (3, 3, 27, 3),
            dims: Sequence[int] = (96, 192, 384, 768),
            kernel_sizes: Optional[Sequence[Sequence[int]]] = None,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            head_init_scale: float = 1.,
            ffn_factor: float = 4,
            deploy: bool = False,
            use_sync_bn: bool = False,
            with_cp: bool = False,
            stage_norms: bool = False,
            kernel_backend: str = 'auto',
            device=None,
            dtype=None,
    ):
        """
        Args:
            depths: blocks per stage (4 stages).
            dims: channels per stage.
            kernel_sizes: per-block depthwise kernel sizes, one tuple per stage (0: no depthwise conv, 3/5: plain
                depthwise conv, 7..17: Dilated Reparam Block). None: the official table for these depths.
            layer_scale_init_value: initial layer scale; 0 or None: no layer scale.
            head_init_scale: multiplies the initial classifier weight and bias (0.001 for 22K->1K fine-tuning).
            deploy: build the reparameterized inference structure.
            use_sync_bn: SyncBatchNorm everywhere (the official detection / segmentation setting).
            with_cp: start with gradient checkpointing on (official name; same as `set_grad_checkpointing()`).
            stage_norms: the per-stage output LayerNorms `norm0` .. `norm3` of the official detection / segmentation
                backbone (channels-first, eps 1e-6). When present they are applied to every intermediate that
                `forward_intermediates` returns, hence to `features_only` outputs, exactly as the official backbone
                does for its feature pyramid; the classification path (`forward`) does not use them. The official
                detection / segmentation checkpoints load them.
            kernel_backend: backend for the depthwise convs, passed to `kernels.dwconv2d`.
        """
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        depths, dims = tuple(depths), tuple(dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"UniRepLKNet has 4 stages: got depths {depths} and dims {dims}")
        if kernel_sizes is None:
            if depths not in DEFAULT_KERNEL_SIZES:
                raise ValueError(
                    f"no official kernel sizes for depths {depths} (known: {sorted(DEFAULT_KERNEL_SIZES)}); "
                    f"pass kernel_sizes, one tuple per stage, e.g. ((3, 3), (13, 13), (13,) * 6, (13, 13))")
            kernel_sizes = DEFAULT_KERNEL_SIZES[depths]
        kernel_sizes = tuple(tuple(int(k) for k in stage) for stage in kernel_sizes)
        if len(kernel_sizes) != 4 or tuple(len(k) for k in kernel_sizes) != depths:
            raise ValueError(f"kernel_sizes {kernel_sizes} do not match depths {depths}")
        check_backend(kernel_backend)
        check_model_args('UniRepLKNet', in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate,
                         drop_path_rate=drop_path_rate)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.depths, self.dims, self.kernel_sizes = depths, dims, kernel_sizes
        self.kernel_backend = kernel_backend
        self.grad_checkpointing = False
        # What a training-form twin needs (used to reparameterize training-form checkpoints for a deploy model).
        self._arch_args = dict(
            in_chans=in_chans, depths=depths, dims=dims, kernel_sizes=kernel_sizes, ffn_factor=ffn_factor,
            layer_scale_init_value=layer_scale_init_value, kernel_backend=kernel_backend)

        norm_layer = lambda chs: LayerNorm2d(chs, eps=1e-6, **dd)  # noqa: E731  (channels-first LN, eps 1e-6)
        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(  # stem: keys .0, .1, .3, .4 (the GELU has none)
            nn.Conv2d(in_chans, dims[0] // 2, 3, stride=2, padding=1, **dd),
            norm_layer(dims[0] // 2),
            nn.GELU(),
            nn.Conv2d(dims[0] // 2, dims[0], 3, stride=2, padding=1, **dd),
            norm_layer(dims[0]),
        ))
        for i in range(3):
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(dims[i], dims[i + 1], 3, stride=2, padding=1, **dd),
                norm_layer(dims[i + 1]),
            ))

        dp_rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.stages = nn.ModuleList()
        self.feature_info = []
        cur = 0
        for i in range(4):
            self.stages.append(nn.Sequential(*[
                UniRepLKNetBlock(
                    dims[i], kernel_sizes[i][j], drop_path=dp_rates[cur + j],
                    layer_scale_init_value=layer_scale_init_value, deploy=deploy, use_sync_bn=use_sync_bn,
                    ffn_factor=ffn_factor, kernel_backend=kernel_backend, **dd)
                for j in range(depths[i])
            ]))
            cur += depths[i]
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))

        self.num_stage_norms = 4 if stage_norms else 0
        for i in range(self.num_stage_norms):  # official names, registered before `norm` / `head` as officially
            self.add_module(f'norm{i}', norm_layer(dims[i]))

        self.num_features = self.head_hidden_size = dims[-1]
        self.global_pool = self._make_pool(global_pool)
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()

        self.apply(self._init_weights)
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)
                self.head.bias.mul_(head_init_scale)
        if with_cp:
            self.set_grad_checkpointing(True)

    @staticmethod
    def _make_pool(pool_type: str) -> SelectAdaptivePool2d:
        pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))
        if pool.feat_mult() != 1:
            raise ValueError(f"global_pool {pool_type!r} changes the width; the head LayerNorm needs 1x")
        return pool

    @staticmethod
    def _init_weights(m: nn.Module):
        # DepthwiseConv2d initialises itself the same way (truncated normal, std .02, zero bias).
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not m.weight.is_meta:
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def deploy(self) -> bool:
        """True when no block has a training-only branch left (BNs, GRN bias, layer scale)."""
        return not any(_is_batchnorm(m) for m in self.stages.modules())

    @torch.no_grad()
    def reparameterize_unireplknet(self):
        """Fold every block into its deploy form in place (official name)."""
        for m in self.modules():
            if isinstance(m, UniRepLKNetBlock):
                m.reparameterize()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict:
        # The downsampling layer in front of stage i belongs to stage i (as in the official layer-decay table).
        return dict(
            stem=r'^downsample_layers\.0\.',
            blocks=r'^(?:downsample_layers|stages)\.(\d+)' if coarse else [
                (r'^downsample_layers\.(\d+)', (0,)),
                (r'^stages\.(\d+)\.(\d+)', None),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # The official optimizer excludes 1-D parameters and biases (BN, LN, layer scale), as timm does by
        # default; GRN gamma/beta are 4-D (1, 1, 1, C) and were decayed in the official recipe, so nothing to add.
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._make_pool(global_pool)
        stem_weight = self.downsample_layers[0][0].weight
        device, dtype = stem_weight.device, stem_weight.dtype
        self.head = nn.Linear(self.num_features, num_classes, device=device, dtype=dtype) \
            if num_classes > 0 else nn.Identity()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (B, C_i, H/4/2^i, W/4/2^i), through the stage norms `norm{i}` if the model has them (the
        official dense-prediction outputs); otherwise `norm` applies the head LayerNorm (per position) to the last
        stage's output when it is taken."""
        if output_fmt != 'NCHW':
            raise ValueError(f"UniRepLKNet intermediates are NCHW, got output_fmt={output_fmt!r}")
        check_image_input(x, self.in_chans, 1, 'UniRepLKNet', weight=self.downsample_layers[0][0].weight)
        intermediates = []
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        last_idx = len(self.stages) - 1
        num_stages = max_index + 1 if stop_early else len(self.stages)
        for i in range(num_stages):
            x = self.downsample_layers[i](x)
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(self.stages[i], x)
            else:
                x = self.stages[i](x)
            if i in take_indices:
                if i < self.num_stage_norms:
                    intermediates.append(getattr(self, f'norm{i}')(x))
                else:
                    intermediates.append(self._norm_map(x) if norm and i == last_idx else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.downsample_layers = self.downsample_layers[:max_index + 1]
        self.stages = self.stages[:max_index + 1]
        for i in range(max_index + 1, self.num_stage_norms):
            delattr(self, f'norm{i}')
        self.num_stage_norms = min(self.num_stage_norms, max_index + 1)
        prune_end = max_index < len(self.depths) - 1
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]['num_chs']
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for (and only applied to) the last stage
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            check_image_input(x, self.in_chans, 1, 'UniRepLKNet', weight=self.downsample_layers[0][0].weight)
        for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = downsample(x)
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint_seq(stage, x)
            else:
                x = stage(x)
        return x

    def _norm_map(self, x: torch.Tensor) -> torch.Tensor:
        """The head LayerNorm over channels at every position of a (B, C, H, W) map."""
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.global_pool.is_identity():  # global_pool='': no pooling, norm and classifier act per position
            x = self._norm_map(x)
            x = self.head_drop(x)
            if pre_logits:
                return x
            return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = self.head_drop(self.norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# ----------------------------------------------------------------------------------------------------------------
# Official checkpoints -> this model

_STAGE_KEY = re.compile(r'^stages\.(\d+)\.(\d+)\.')


def _describe(state_dict: Dict[str, torch.Tensor]) -> str:
    """'dims (40, 80, 160, 320), depths (2, 2, 6, 2)' read off an official-layout state dict."""
    dim_keys = ['downsample_layers.0.3.weight'] + [f'downsample_layers.{i}.0.weight' for i in range(1, 4)]
    dims = tuple(state_dict[k].shape[0] for k in dim_keys if k in state_dict)
    blocks = {tuple(int(g) for g in m.groups()) for m in map(_STAGE_KEY.match, state_dict) if m}
    depths = tuple(len({j for s, j in blocks if s == i}) for i in range(4))
    return f'dims {dims}, depths {depths}'


def _is_training_form(keys) -> bool:
    return any(k.endswith('pwconv2.2.running_var') for k in keys)


def _unwrap(checkpoint: Dict) -> Dict[str, torch.Tensor]:
    """Official file wrappers and prefixes -> a flat official-layout state dict."""
    state_dict = unwrap_state_dict(checkpoint)
    if not any(k.startswith('downsample_layers.') for k in state_dict) \
            and any(k.startswith('backbone.downsample_layers.') for k in state_dict):
        # Official detection / segmentation checkpoint: the backbone, with its per-stage output norms (norm0..3).
        _logger.info('UniRepLKNet: using the backbone of a detection/segmentation checkpoint')
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    return state_dict


_HEAD_PREFIXES = ('norm.', 'head.')  # the classifier side: replaceable; everything else must match exactly
_STAGE_NORM_KEY = re.compile(r'^norm\d\.')  # the dense-prediction backbone's per-stage output norms


def _split_stage_norms(state_dict: Dict[str, torch.Tensor]):
    """(everything else, the stage-norm tensors `norm{i}.*`)."""
    norms = {k: v for k, v in state_dict.items() if _STAGE_NORM_KEY.match(k)}
    return {k: v for k, v in state_dict.items() if k not in norms}, norms


def _stage_norms_for(norms: Dict[str, torch.Tensor], model_sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The checkpoint's stage norms fitted to the model's: loaded when both have them, dropped with a warning
    when only the checkpoint has them, the model's own (fresh) ones kept with a warning when only it has them."""
    _, wanted = _split_stage_norms(model_sd)
    if norms and not wanted:
        _logger.warning(
            'UniRepLKNet: the checkpoint has the per-stage output norms norm0..3 of the official detection / '
            'segmentation backbone, which this model lacks: they were dropped; build it with stage_norms=True '
            '(e.g. with features_only=True) to use them')
        return {}
    if wanted and set(norms) != set(wanted):
        _logger.warning(
            'UniRepLKNet: the checkpoint lacks the per-stage output norms norm0..3 (stage_norms=True): they keep '
            'their fresh initialisation (weight 1, bias 0)')
        return dict(wanted)
    mismatched = [f'{k}: {tuple(norms[k].shape)} vs {tuple(wanted[k].shape)}' for k in wanted
                  if norms[k].shape != wanted[k].shape]
    if mismatched:
        raise ValueError(f'UniRepLKNet: checkpoint stage norm shapes do not match this model: {mismatched[:4]}')
    return norms


def _check_backbone(state_dict: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor]):
    """ValueError unless `state_dict` has the keys and shapes of `reference` outside the head."""
    ckpt_keys = {k for k in state_dict if not k.startswith(_HEAD_PREFIXES)}
    ref_keys = {k for k in reference if not k.startswith(_HEAD_PREFIXES)}
    described = f'checkpoint has {_describe(state_dict)}, the model {_describe(reference)}'
    if ckpt_keys != ref_keys:
        raise ValueError(
            f'UniRepLKNet: checkpoint does not match this model: {described}; missing '
            f'{sorted(ref_keys - ckpt_keys)[:5]}, unexpected {sorted(ckpt_keys - ref_keys)[:5]}')
    mismatched = [
        f'{k}: {tuple(state_dict[k].shape)} vs {tuple(reference[k].shape)}' for k in ref_keys
        if state_dict[k].shape != reference[k].shape
        # another number of input channels: timm adapts the first conv after this filter
        and not (k == 'downsample_layers.0.0.weight' and state_dict[k].shape[0] == reference[k].shape[0])
    ]
    if mismatched:
        raise ValueError(
            f'UniRepLKNet: checkpoint shapes do not match this model ({described}): '
            + '; '.join(sorted(mismatched)[:5]))


def _reparameterize_state_dict(state_dict: Dict[str, torch.Tensor], model: UniRepLKNet) -> Dict[str, torch.Tensor]:
    """Training-form official state dict -> the deploy-form state dict of the same network (as `model` is built)."""
    args = dict(model._arch_args)
    args['in_chans'] = state_dict['downsample_layers.0.0.weight'].shape[1]
    args['layer_scale_init_value'] = 1e-6 if any(re.match(r'^stages\.\d+\.\d+\.gamma$', k) for k in state_dict) \
        else None
    num_classes = state_dict['head.weight'].shape[0] if 'head.weight' in state_dict else 0
    # A training-form twin on the meta device: its storage comes from the checkpoint (no allocation, no init).
    twin = UniRepLKNet(num_classes=num_classes, deploy=False, device='meta', **args)
    _check_backbone(state_dict, twin.state_dict())
    twin.load_state_dict(state_dict, strict=False, assign=True)
    twin.reparameterize_unireplknet()
    return {k: v for k, v in twin.state_dict().items() if not v.is_meta}  # a head the checkpoint lacked stays out


def checkpoint_filter_fn(state_dict: Dict, model: UniRepLKNet) -> Dict[str, torch.Tensor]:
    """Map an official UniRepLKNet checkpoint onto `model`.

    - unwraps `{'model': ...}` (and 'state_dict' / EMA wrappers, `module.` prefixes, the `backbone.` of the
      official detection / segmentation checkpoints);
    - the detection / segmentation backbone's per-stage output norms `norm0..3`: loaded into a model built with
      `stage_norms=True`, dropped with a warning otherwise;
    - training-form checkpoint into a deploy-form model: reparameterized here, as the official code would;
    - deploy-form checkpoint into a training-form model: ValueError (the fold cannot be undone);
    - a head of another size or none (e.g. the 21841-class ImageNet-22K classifier into a 1000-class model): the
      backbone loads, the head keeps its fresh initialisation, and a warning says so;
    - a different variant (other widths / depths / kernel sizes): ValueError naming both.
    """
    state_dict, stage_norms = _split_stage_norms(_unwrap(state_dict))
    model_sd = model.state_dict()
    stage_norms = _stage_norms_for(stage_norms, model_sd)
    model_sd, _ = _split_stage_norms(model_sd)
    ckpt_training, model_training = _is_training_form(state_dict), _is_training_form(model_sd)
    if model_training and not ckpt_training and any(k.endswith('pwconv2.0.bias') for k in state_dict):
        raise ValueError(
            'UniRepLKNet: this checkpoint is in deploy (reparameterized) form; build the model with deploy=True '
            'to load it (a reparameterized network cannot be unfolded into its training branches)')
    if ckpt_training and not model_training:
        state_dict = _reparameterize_state_dict(state_dict, model)
    _check_backbone(state_dict, model_sd)

    for prefix in _HEAD_PREFIXES:
        ckpt_part = {k: v.shape for k, v in state_dict.items() if k.startswith(prefix)}
        model_part = {k: v for k, v in model_sd.items() if k.startswith(prefix)}
        if ckpt_part != {k: v.shape for k, v in model_part.items()}:
            if not ckpt_part:  # e.g. a detection / segmentation backbone: nothing to drop
                _logger.warning(f'UniRepLKNet: the checkpoint has no `{prefix[:-1]}` (a backbone-only file): '
                                f'`{prefix[:-1]}` keeps its fresh initialisation')
            else:
                shapes = ckpt_part.get(prefix + 'weight', 'none')
                _logger.warning(
                    f'UniRepLKNet: checkpoint `{prefix[:-1]}` ({shapes}) does not fit this model '
                    f'(num_classes={model.num_classes}): the classifier was dropped (backbone loaded, '
                    f'`{prefix[:-1]}` freshly initialised)')
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith(prefix)}
            state_dict.update(model_part)
    return {**state_dict, **stage_norms}


# ----------------------------------------------------------------------------------------------------------------
# Pretrained cfgs, factories

_HF_REPO = 'DingXiaoH/UniRepLKNet'


def _cfg(file: str = '', **kwargs):
    return {
        'url': f'https://huggingface.co/{_HF_REPO}/resolve/main/{file}' if file else '',
        'hf_hub_id': _HF_REPO if file else None,
        'hf_hub_filename': file or None,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'downsample_layers.0.0', 'classifier': 'head',
        'license': 'apache-2.0', 'origin_url': 'https://github.com/AILab-CVC/UniRepLKNet',
        'paper_name': 'UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, '
                      'Time-Series and Image Recognition',
        'paper_ids': 'arXiv:2311.15599',
        **kwargs,
    }


def _in1k(file: str, top1: float):
    return _cfg(file, notes=(f'ImageNet-1K, 300 epochs at 224; official top-1 {top1}',))


def _in22k(file: str, size: int = 224):
    return _cfg(
        file, num_classes=21841, input_size=(3, size, size), pool_size=(size // 32, size // 32),
        notes=(f'ImageNet-22K pretraining (21841 classes), 90 epochs at {size}',))


def _in22k_ft_384(file: str, top1: float):
    # The official evaluation warps (resizes without cropping) at 384 and above.
    return _cfg(
        file, input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, crop_mode='squash',
        notes=(f'ImageNet-22K pretraining, ImageNet-1K fine-tuning at 384; official top-1 {top1}',))


default_cfgs = generate_default_cfgs({
    'unireplknet_a.in1k': _in1k('unireplknet_a_in1k_224_acc77.03.pth', 77.03),
    'unireplknet_f.in1k': _in1k('unireplknet_f_in1k_224_acc78.58.pth', 78.58),
    'unireplknet_p.in1k': _in1k('unireplknet_p_in1k_224_acc80.23.pth', 80.23),
    'unireplknet_n.in1k': _in1k('unireplknet_n_in1k_224_acc81.64.pth', 81.64),
    'unireplknet_t.in1k': _in1k('unireplknet_t_in1k_224_acc83.21.pth', 83.21),
    'unireplknet_s.in1k': _in1k('unireplknet_s_in1k_224_acc83.91.pth', 83.91),
    'unireplknet_s.in22k_ft_in1k_384': _in22k_ft_384('unireplknet_s_in22k_to_in1k_384_acc86.44.pth', 86.44),
    'unireplknet_s.in22k': _in22k('unireplknet_s_in22k_pretrain.pth'),
    'unireplknet_b.in22k_ft_in1k_384': _in22k_ft_384('unireplknet_b_in22k_to_in1k_384_acc87.40.pth', 87.40),
    'unireplknet_b.in22k': _in22k('unireplknet_b_in22k_pretrain.pth'),
    'unireplknet_l.in22k_ft_in1k_384': _in22k_ft_384('unireplknet_l_in22k_to_in1k_384_acc87.88.pth', 87.88),
    'unireplknet_l.in22k': _in22k('unireplknet_l_in22k_pretrain.pth', size=192),
    'unireplknet_xl.in22k_ft_in1k_384': _in22k_ft_384('unireplknet_xl_in22k_to_in1k_384_acc87.96.pth', 87.96),
    'unireplknet_xl.in22k': _in22k('unireplknet_xl_in22k_pretrain.pth', size=192),
})


def _create_unireplknet(variant: str, pretrained: bool = False, **kwargs) -> UniRepLKNet:
    check_kwargs(variant, kwargs, UniRepLKNet)
    with pretrained_weights(variant, pretrained, kwargs):
        return build_model_with_cfg(
            UniRepLKNet, variant, pretrained,
            pretrained_filter_fn=checkpoint_filter_fn,
            # Stem/downsampling and blocks sit in separate ModuleLists (official layout): features via
            # forward_intermediates.
            feature_cfg=dict(out_indices=(0, 1, 2, 3), feature_cls='getter'),
            **kwargs,
        )


@register_model
def unireplknet_a(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320))
    return _create_unireplknet('unireplknet_a', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_f(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(2, 2, 6, 2), dims=(48, 96, 192, 384))
    return _create_unireplknet('unireplknet_f', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_p(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(2, 2, 6, 2), dims=(64, 128, 256, 512))
    return _create_unireplknet('unireplknet_p', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_n(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(2, 2, 8, 2), dims=(80, 160, 320, 640))
    return _create_unireplknet('unireplknet_n', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_t(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(3, 3, 18, 3), dims=(80, 160, 320, 640))
    return _create_unireplknet('unireplknet_t', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_s(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
    return _create_unireplknet('unireplknet_s', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_b(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create_unireplknet('unireplknet_b', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_l(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536))
    return _create_unireplknet('unireplknet_l', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def unireplknet_xl(pretrained: bool = False, **kwargs) -> UniRepLKNet:
    model_args = dict(depths=(3, 3, 27, 3), dims=(256, 512, 1024, 2048))
    return _create_unireplknet('unireplknet_xl', pretrained=pretrained, **dict(model_args, **kwargs))
