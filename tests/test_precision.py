"""Precision: a float64 model computes in float64 everywhere; under fp16 / bf16 autocast the parts that need float32
(S4D and SGConv kernels, the long convolution's FFTs, UniRepLKNet's GRN statistics, the Lie-group eigendecompositions)
still run in float32.

A float32 step hidden inside a float64 model (a cast and a cast back) leaves every output float64 but rounds it to
~1e-7. It shows in a finite difference: along a random direction of inputs and parameters, (f(p + h v) - f(p - h v)) /
2h agrees with autograd's directional derivative to ~1e-9 in float64 (h = 1e-6) and only to ~1e-7 / h = 0.1 with a
float32 step anywhere on the path.
"""
import pytest
import timm
import torch
from torch.func import functional_call

import zoo  # noqa: F401
from zoo.models.s4d import S4D
from zoo.models.sgconv import SGConv
from zoo.models.unireplknet import GlobalResponseNorm

pytestmark = pytest.mark.usefixtures('one_thread')

# Small float64 configurations of every family: (name, kwargs, input).
TINY_IMAGE = {
    'inceptionnext_atto': dict(depths=(1, 1, 1, 1), dims=(8, 8, 16, 16), num_classes=5),
    # no layer scale: at its initial 1e-6 it would hide every block's rounding
    'unireplknet_a': dict(depths=(1, 1, 2, 1), dims=(8, 8, 8, 8), kernel_sizes=((3,), (13,), (7, 0), (5,)),
                          num_classes=5, layer_scale_init_value=0),
    'liegroup_sl2_small': dict(num_samples=3, width=4, final_width=4, head_hidden_size=8, num_classes=5),
    'liegroup_gl2': dict(num_samples=2, width=3, head_hidden_size=8, num_classes=5,
                         kernel_mlp=dict(hidden=8, num_hidden=1)),
}
TINY_SEQUENCE = {
    's4d_lra_listops': dict(embed_dim=8, depth=2, layer_kwargs=dict(d_state=8)),
    's4d_lra_image': dict(embed_dim=8, depth=1, layer_kwargs=dict(d_state=8, disc='zoh', init='legs')),
    'sgconv_lra_listops': dict(embed_dim=8, depth=2, seq_len=64),
    'sgconv_lra_pathx': dict(embed_dim=8, depth=1, seq_len=256,
                             layer_kwargs=dict(kernel_dim=8)),
}


def _image_input(name, model):
    torch.manual_seed(1)
    side = 32 if name in ('inceptionnext_atto', 'unireplknet_a') else model.min_input_size + 4
    return torch.randn(2, model.in_chans, side, side, dtype=torch.float64)


def _sequence_input(name, model):
    torch.manual_seed(1)
    if model.vocab_size is not None:
        return torch.randint(0, model.vocab_size, (2, 48))
    return torch.randn(2, 48, model.in_chans, dtype=torch.float64)


def _finite_difference_error(model, x):
    """Relative gap between the central finite difference and autograd's derivative of a random projection of the
    output, along a random direction of every floating-point parameter and the input."""
    gen = torch.Generator().manual_seed(2)
    params = {n: p.detach() for n, p in model.named_parameters()}
    direction = {n: torch.randn(p.shape, generator=gen, dtype=p.dtype) * (p.abs().mean() + 1e-3)
                 for n, p in params.items()}
    dx = torch.randn(x.shape, generator=gen, dtype=x.dtype) if x.is_floating_point() else None
    with torch.no_grad():
        projection = torch.randn(model(x).shape, generator=gen, dtype=torch.float64)

    def f(t):
        shifted = {n: p + t * direction[n] for n, p in params.items()}
        return (functional_call(model, shifted, (x + t * dx if dx is not None else x,)) * projection).sum()

    t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(f(t), t)
    h = 1e-6
    with torch.no_grad():
        numeric = (f(torch.tensor(h, dtype=torch.float64)) - f(torch.tensor(-h, dtype=torch.float64))) / (2 * h)
    return (abs(numeric - slope) / abs(slope)).item()


@pytest.mark.parametrize('name', sorted(TINY_IMAGE) + sorted(TINY_SEQUENCE))
def test_float64_models_have_no_float32_step(name):
    torch.manual_seed(0)
    kwargs = TINY_IMAGE.get(name) or TINY_SEQUENCE[name]
    model = timm.create_model(name, **kwargs).double().eval()
    x = (_image_input if name in TINY_IMAGE else _sequence_input)(name, model)
    with torch.no_grad():
        assert model(x).dtype == torch.float64
    assert _finite_difference_error(model, x) < 1e-6


def test_the_detector_sees_a_float32_step():
    """The same check on a float64 GRN that rounds its statistics to float32 fails by orders of magnitude."""

    class Float32Grn(GlobalResponseNorm):
        def forward(self, x):
            return super().forward(x.float()).to(x.dtype)

    torch.manual_seed(0)
    for cls, bound in ((GlobalResponseNorm, 1e-6), (Float32Grn, None)):
        grn = cls(4).double()
        with torch.no_grad():
            grn.gamma.normal_()
            grn.beta.normal_()
        error = _finite_difference_error(grn, torch.randn(2, 5, 5, 4, dtype=torch.float64))
        if bound:
            assert error < bound
        else:
            assert error > 1e-4


def test_float64_kernels_are_float64():
    torch.manual_seed(0)
    assert S4D(8, 16, bidirectional=True, learn_B=True).double().compute_kernel(30).dtype == torch.float64
    assert SGConv(8, l_max=64, kernel_dim=4).double().compute_kernel(30).dtype == torch.float64
    grn = GlobalResponseNorm(4).double()
    assert grn(torch.randn(1, 3, 3, 4, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_keeps_the_float32_islands(dtype):
    torch.manual_seed(0)
    s4d = S4D(8, 16, bidirectional=True, disc='bilinear', learn_B=True).eval()
    sgconv = SGConv(8, l_max=64, kernel_dim=4, bidirectional=True, mode='cat_randn_learnable').eval()
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        references = [layer(x) for layer in (s4d, sgconv)]
        with torch.autocast('cpu', dtype=dtype):
            for layer, reference in zip((s4d, sgconv), references):
                assert layer.compute_kernel(64).dtype == torch.float32
                y = layer(x)
                assert y.dtype == dtype
                torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)
    # low-precision layers, not only autocast, also get float32 kernels
    for layer in (s4d, sgconv):
        assert layer.to(dtype).compute_kernel(64).dtype == torch.float32

    grn = GlobalResponseNorm(8)
    with torch.no_grad():
        grn.gamma.fill_(0.5)
        big = torch.full((1, 97, 97, 8), 1000.)  # spatial L2 norm 97000: beyond fp16 (65504)
        with torch.autocast('cpu', dtype=dtype):
            y = grn(big.to(dtype))
        assert y.dtype == dtype and torch.isfinite(y).all()
        torch.testing.assert_close(y.float(), grn(big), rtol=1e-2, atol=0)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_autocast_whole_models_stay_close_to_float32(dtype):
    for name, kwargs in (('s4d_lra_image', TINY_SEQUENCE['s4d_lra_image']),
                         ('unireplknet_a', TINY_IMAGE['unireplknet_a']),
                         ('liegroup_sl2_small', TINY_IMAGE['liegroup_sl2_small'])):
        torch.manual_seed(0)
        model = timm.create_model(name, **kwargs).eval()
        x = (_image_input if name in TINY_IMAGE else _sequence_input)(name, model).float()
        with torch.no_grad():
            reference = model(x)
            with torch.autocast('cpu', dtype=dtype):
                y = model(x)
        assert torch.isfinite(y).all(), name
        scale = reference.abs().max().item()
        assert (y.float() - reference).abs().max().item() < 0.05 * scale, name
