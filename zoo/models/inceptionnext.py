"""InceptionNeXt under its official names, with a token mixer that runs on our kernels.

Paper: Yu, Zhou, Yan, Wang, "InceptionNeXt: When Inception Meets ConvNeXt", CVPR 2024, arXiv 2303.16900.
Official code and weights: https://github.com/sail-sg/inceptionnext

timm already ships this architecture as `inception_next_*`; we register the official `inceptionnext_*` names on
top of timm's `MetaNeXt` (stem, stages, MLP head, features, intermediates) and only swap the token mixer for ours,
so `kernel_backend` can route the Inception depthwise convolutions to the fused Triton kernel. Parameter names and
shapes are those of timm and of the official release, so state dicts load in every direction without a filter.
"""
from functools import partial

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import get_padding
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.inception_next import MetaNeXt

from kernels import check_backend, dwconv2d, inception_dw
from ._pretrained import pretrained_weights
from .layers import check_image_input, check_kwargs, check_model_args

__all__ = ['InceptionMixer', 'InceptionNeXt']


class InceptionMixer(nn.Module):
    """Inception depthwise token mixer: channels split into identity | kxk square | 1xband | bandx1.

    The identity split comes first, as in the official code (and therefore its weights).
    """

    def __init__(
            self,
            dim: int,
            square_kernel_size: int = 3,
            band_kernel_size: int = 11,
            branch_ratio: float = 0.125,
            dilation: int = 1,
            kernel_backend: str = 'auto',
            device=None,
            dtype=None,
    ):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        gc = int(dim * branch_ratio)  # channels per convolved branch
        if gc < 1:
            raise ValueError(f"InceptionMixer: dim={dim} with branch_ratio={branch_ratio} leaves no channel to convolve")
        square_pad = get_padding(square_kernel_size, dilation=dilation)
        band_pad = get_padding(band_kernel_size, dilation=dilation)
        # nn.Conv2d modules only hold the parameters (names match the official checkpoints); forward calls the kernels.
        self.dwconv_hw = nn.Conv2d(gc, gc, square_kernel_size, padding=square_pad, dilation=dilation, groups=gc, **dd)
        self.dwconv_w = nn.Conv2d(
            gc, gc, (1, band_kernel_size), padding=(0, band_pad), dilation=(1, dilation), groups=gc, **dd)
        self.dwconv_h = nn.Conv2d(
            gc, gc, (band_kernel_size, 1), padding=(band_pad, 0), dilation=(dilation, 1), groups=gc, **dd)
        self.split_sizes = [dim - 3 * gc, gc, gc, gc]
        self.dilation = dilation
        self.kernel_backend = kernel_backend

    def forward(self, x):
        if self.dilation == 1:
            # One fused pass over all four splits; the output is written without split/cat copies.
            return inception_dw(
                x, self.dwconv_hw.weight, self.dwconv_hw.bias, self.dwconv_w.weight, self.dwconv_w.bias,
                self.dwconv_h.weight, self.dwconv_h.bias, backend=self.kernel_backend)
        # Dilated mixers only occur with output_stride < 32 (dense prediction); run the branches one by one.
        x_id, x_hw, x_w, x_h = x.split(self.split_sizes, dim=1)
        return torch.cat((
            x_id,
            dwconv2d(x_hw, self.dwconv_hw.weight, self.dwconv_hw.bias, dilation=self.dilation,
                     backend=self.kernel_backend),
            dwconv2d(x_w, self.dwconv_w.weight, self.dwconv_w.bias, dilation=self.dilation, backend=self.kernel_backend),
            dwconv2d(x_h, self.dwconv_h.weight, self.dwconv_h.bias, dilation=self.dilation, backend=self.kernel_backend),
        ), dim=1)


class InceptionNeXt(MetaNeXt):
    """timm's MetaNeXt with our Inception mixer in every stage.

    Args:
        square_kernel_size / band_kernel_size / branch_ratio: mixer shape (atto: band 9, ratio 1/4; others: 11, 1/8).
        kernel_backend: 'auto' | 'torch' | 'triton', where the depthwise convolutions run (see `kernels`).
        **kwargs: MetaNeXt arguments (depths, dims, mlp_ratios, drop_path_rate, ls_init_value, output_stride...).
    """

    def __init__(
            self,
            square_kernel_size: int = 3,
            band_kernel_size: int = 11,
            branch_ratio: float = 0.125,
            kernel_backend: str = 'auto',
            **kwargs,
    ):
        check_backend(kernel_backend)
        check_model_args('InceptionNeXt', in_chans=kwargs.get('in_chans'), num_classes=kwargs.get('num_classes'),
                         drop_rate=kwargs.get('drop_rate'), drop_path_rate=kwargs.get('drop_path_rate'))
        mixer = partial(
            InceptionMixer,
            square_kernel_size=square_kernel_size,
            band_kernel_size=band_kernel_size,
            branch_ratio=branch_ratio,
            kernel_backend=kernel_backend,
        )
        super().__init__(token_mixers=mixer, **kwargs)
        self.kernel_backend = kernel_backend
        # Each of the stem and three downsamplings needs at least one output pixel (2x2 conv, stride 2).
        self.min_input_size = self.feature_info[-1]['reduction']

    def forward_features(self, x):
        if not torch.jit.is_scripting():
            check_image_input(x, self.in_chans, self.min_input_size, 'InceptionNeXt', weight=self.stem[0].weight)
        # MetaNeXt's own body: TorchScript cannot compile super() calls.
        return self.stages(self.stem(x))

    def forward(self, x):
        # Defined here so that FX tracing patches the input check in this module's globals.
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x, *args, **kwargs):
        check_image_input(x, self.in_chans, self.min_input_size, 'InceptionNeXt', weight=self.stem[0].weight)
        return super().forward_intermediates(x, *args, **kwargs)


def _cfg(file_name: str, timm_tag: str, **kwargs):
    """Official release file, with timm's HF mirror of the same tensors as the first source."""
    arch = file_name.removesuffix('_384').replace('inceptionnext', 'inception_next')
    return {
        'hf_hub_id': f'timm/{arch}.{timm_tag}',
        'url': f'https://github.com/sail-sg/inceptionnext/releases/download/model/{file_name}.pth',
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'stem.0', 'classifier': 'head.fc2',
        'license': 'apache-2.0',
        'origin_url': 'https://github.com/sail-sg/inceptionnext',
        'paper_name': 'InceptionNeXt: When Inception Meets ConvNeXt',
        'paper_ids': 'arXiv:2303.16900',
        **kwargs,
    }


default_cfgs = generate_default_cfgs({
    'inceptionnext_atto.sail_in1k': _cfg('inceptionnext_atto', 'sail_in1k'),
    'inceptionnext_tiny.sail_in1k': _cfg('inceptionnext_tiny', 'sail_in1k'),
    'inceptionnext_small.sail_in1k': _cfg('inceptionnext_small', 'sail_in1k'),
    'inceptionnext_base.sail_in1k': _cfg('inceptionnext_base', 'sail_in1k', crop_pct=0.95),
    'inceptionnext_base.sail_in1k_384': _cfg(
        'inceptionnext_base_384', 'sail_in1k_384', input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0),
    # The official name of the same weights (sail-sg `inceptionnext_base_384`): base fine-tuned at 384 for 30 epochs.
    'inceptionnext_base_384.sail_in1k': _cfg(
        'inceptionnext_base_384', 'sail_in1k_384', input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0,
        notes=('ImageNet-1K, base fine-tuned at 384 (30 epochs); official top-1 85.2',)),
})


def _create_inceptionnext(variant, pretrained=False, **kwargs):
    # Official and timm checkpoints share our parameter layout, so no checkpoint filter is needed.
    check_kwargs(variant, kwargs, InceptionNeXt, MetaNeXt, exclude=('token_mixers',))
    with pretrained_weights(variant, pretrained, kwargs):
        return build_model_with_cfg(
            InceptionNeXt, variant, pretrained,
            feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
            **kwargs,
        )


@register_model
def inceptionnext_atto(pretrained=False, **kwargs):
    model_args = dict(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), band_kernel_size=9, branch_ratio=0.25)
    return _create_inceptionnext('inceptionnext_atto', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def inceptionnext_tiny(pretrained=False, **kwargs):
    model_args = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
    return _create_inceptionnext('inceptionnext_tiny', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def inceptionnext_small(pretrained=False, **kwargs):
    model_args = dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768))
    return _create_inceptionnext('inceptionnext_small', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def inceptionnext_base(pretrained=False, **kwargs):
    model_args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create_inceptionnext('inceptionnext_base', pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def inceptionnext_base_384(pretrained=False, **kwargs):
    """InceptionNeXt-B at 384 px: the base network (no resolution-dependent parameters) with the 384 cfg and weights;
    the same model as `inceptionnext_base.sail_in1k_384`."""
    model_args = dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024))
    return _create_inceptionnext('inceptionnext_base_384', pretrained=pretrained, **dict(model_args, **kwargs))
