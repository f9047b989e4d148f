"""S4D layer: golden outputs of the official layers, initializations, kernel accuracy, optimizer hints, errors."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from zoo.models.s4d import S4D, S4DKernel, legs_diagonal, s4d_init, vandermonde_real
from zoo.official import s4block_state_dict, s4d_for_s4block

FIXTURES = Path(__file__).parent / 'fixtures' / 's4d'
BLOCK_FIXTURES = sorted(FIXTURES.glob('block_*.pt'))


def _load(path):
    return torch.load(path, weights_only=True)


def test_minimal_official_state_dict_loads_and_matches():
    fx = _load(FIXTURES / 'minimal_s4d.pt')
    layer = S4D(**fx['kwargs']).eval()
    layer.load_state_dict(fx['state_dict'])  # strict: same names and shapes as the official minimal layer
    with torch.no_grad():
        torch.testing.assert_close(layer(fx['input']), fx['output'], rtol=1e-4, atol=1e-5)
    assert {k: tuple(v.shape) for k, v in layer.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in fx['state_dict'].items()}


@pytest.mark.parametrize('path', BLOCK_FIXTURES, ids=[p.stem for p in BLOCK_FIXTURES])
def test_official_block_outputs(path):
    fx = _load(path)
    layer = s4d_for_s4block(fx['kwargs']).eval()
    layer.load_state_dict(s4block_state_dict(fx['state_dict'], layer))
    with torch.no_grad():
        torch.testing.assert_close(layer(fx['input']), fx['output'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('path', BLOCK_FIXTURES, ids=[p.stem for p in BLOCK_FIXTURES])
def test_initialization_matches_official(path):
    """Deterministic parts of the init equal the official ones (ours is the complex conjugate system)."""
    fx = _load(path)
    sd = fx['state_dict']
    kernel = s4d_for_s4block(fx['kwargs']).kernel
    torch.testing.assert_close(kernel.log_A_real, sd['layer.kernel.A_real'])
    torch.testing.assert_close(kernel.A_imag, sd['layer.kernel.A_imag'], rtol=1e-5, atol=1e-4)
    official_B = torch.view_as_complex(sd['layer.kernel.B'][0])
    torch.testing.assert_close(torch.view_as_complex(kernel.B), official_B.conj(), rtol=1e-4, atol=1e-4)
    assert kernel.C.shape == s4block_state_dict(sd)['kernel.C'].shape
    dt = kernel.dt(torch.float32)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 1e-1 * (1 + 1e-5)
    official_dt = sd['layer.kernel.inv_dt']
    ours = getattr(kernel, kernel.dt_name)
    assert ours.shape == (official_dt.shape[:1] if official_dt.shape[-1] == 1 else official_dt.shape)


def test_named_initializations():
    real, imag, B = s4d_init('lin', 8, 1)
    torch.testing.assert_close(imag[0], math.pi * torch.arange(4.0))
    assert torch.all(real == -0.5) and torch.all(B == 1)
    _, imag, _ = s4d_init('inv', 8, 1)
    torch.testing.assert_close(imag[0], 8 / math.pi * (8 / (2 * torch.arange(4.0) + 1) - 1))
    real, imag, _ = s4d_init('real', 8, 1)
    torch.testing.assert_close(real[0], -(torch.arange(4.0) + 1))
    assert torch.all(imag == 0)
    _, imag, _ = s4d_init('rand', 8, 3)
    assert imag.shape == (3, 4) and torch.all(imag > 0)
    imag, B = legs_diagonal(64)
    assert imag.shape == (32,) and torch.all(imag > 0) and torch.all(B.imag.abs() <= 2.0)


def _naive_kernel(kernel: S4DKernel, L: int) -> torch.Tensor:
    """The textbook kernel in complex128: materializes exp(l * log z) for every mode and lag."""
    k = kernel.double()
    dt = k.log_dt.exp()[:, None]
    A = torch.complex(-k.log_A_real.exp(), k.A_imag).repeat(k.d_model // k.n_ssm, 1)
    dtA = A * dt
    C = torch.view_as_complex(k.C).reshape(k.channels, k.d_model, -1)
    lags = torch.arange(L, dtype=torch.float64)
    if k.disc == 'zoh':
        coef, log_z, scale = C * (dtA.exp() - 1) / A, dtA, 2
    elif k.disc == 'bilinear':
        coef, log_z, scale = C * dt / (1 - dtA / 2), ((1 + dtA / 2) / (1 - dtA / 2)).log(), 2
    else:
        denom = ((dtA * L).exp() - 1) * A  # DSS regularizes 1 / denom with 1e-7
        coef, log_z, scale = C * (dtA.exp() - 1) * denom.conj() / (denom.abs() ** 2 + 1e-7), dtA, 1
    return scale * torch.einsum('chn,hnl->chl', coef, (log_z[..., None] * lags).exp()).real


@pytest.mark.parametrize('disc', ['zoh', 'bilinear', 'dss'])
@pytest.mark.parametrize('L', [1, 7, 1000])
def test_blocked_kernel_matches_naive_complex(disc, L):
    torch.manual_seed(0)
    kernel = S4DKernel(16, 32, channels=2, init='inv', disc=disc, dt_min=1e-3, dt_max=1e-1)
    with torch.no_grad():
        ours = kernel(L).double()
        reference = _naive_kernel(kernel, L)
    assert ours.shape == (2, 16, L)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-4 * reference.abs().max().item())  # float32 vs float64


def test_vandermonde_real_against_complex_powers():
    torch.manual_seed(0)
    coef = torch.randn(1, 3, 5, dtype=torch.complex128)
    log_z = torch.complex(-torch.rand(3, 5), torch.randn(3, 5)).to(torch.complex128)
    L = 37
    expected = torch.einsum('chn,hnl->chl', coef, (log_z[..., None] * torch.arange(L)).exp()).real
    torch.testing.assert_close(vandermonde_real(coef, log_z, L), expected)


def test_default_optimizer_hints_are_the_official_minimal_layers():
    """Official `S4DKernel(lr=None)`: dt and A get weight decay 0 and the global lr; C and D no hint."""
    layer = S4D(8, 16)
    for name in ('log_dt', 'log_A_real', 'A_imag'):
        assert getattr(layer.kernel, name)._optim == {'weight_decay': 0.0}
    assert not hasattr(layer.kernel.C, '_optim') and not hasattr(layer.D, '_optim')


def test_ssm_parameters_carry_their_optimizer_settings():
    layer = S4D(8, 16, learn_B=True, lr=1e-3)
    for name in ('log_dt', 'log_A_real', 'A_imag', 'B'):
        assert getattr(layer.kernel, name)._optim == {'lr': 1e-3, 'weight_decay': 0.0}
    assert not hasattr(layer.kernel.C, '_optim') and not hasattr(layer.D, '_optim')

    layer = S4D(8, 16, learn_B=True, lr={'dt': None, 'A': 5e-4, 'B': 0.0})
    assert layer.kernel.log_dt._optim == {'weight_decay': 0.0}
    assert layer.kernel.A_imag._optim == {'lr': 5e-4, 'weight_decay': 0.0}
    assert 'kernel.B' in dict(layer.named_buffers()) and 'kernel.B' not in dict(layer.named_parameters())

    frozen = S4D(8, 16, lr=0.0)
    assert {n for n, _ in frozen.named_parameters()} == {'D', 'kernel.C', 'output_linear.0.weight',
                                                         'output_linear.0.bias'}


def test_folded_B_keeps_the_initial_kernel():
    """Without a B parameter, B is folded into C: the LegS kernel at init is the same either way."""
    torch.manual_seed(0)
    with_B = S4D(8, 16, init='legs', learn_B=True)
    torch.manual_seed(0)
    folded = S4D(8, 16, init='legs')
    assert folded.kernel.B is None
    with torch.no_grad():
        torch.testing.assert_close(folded.compute_kernel(50), with_B.compute_kernel(50))


def test_layouts_options_and_gradients():
    torch.manual_seed(0)
    layer = S4D(8, 16, bidirectional=True, channels=2, n_ssm=4, disc='bilinear', init='legs', learn_B=True,
                dropout=0.1, transposed=False)
    assert isinstance(layer.dropout, nn.Dropout1d)
    assert isinstance(S4D(8, 16, dropout=0.1, tie_dropout=False).dropout, nn.Dropout)
    x = torch.randn(2, 40, 8)
    y = layer(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name

    layer.eval()
    transposed = S4D(8, 16, bidirectional=True, channels=2, n_ssm=4, disc='bilinear', init='legs', learn_B=True)
    transposed.load_state_dict(layer.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(transposed.eval()(x.transpose(1, 2)), layer(x).transpose(1, 2))
    assert S4D(8, 16, glu=False).output_linear.weight.shape == (8, 8, 1)


def test_causality_unidirectional():
    layer = S4D(4, 8).eval()
    x = torch.randn(1, 4, 30)
    x2 = x.clone()
    x2[..., 20:] += 1.0
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[..., :20], layer(x2)[..., :20])


def test_errors():
    with pytest.raises(ValueError, match='init'):
        S4D(4, 8, init='hippo')
    with pytest.raises(ValueError, match='discretization'):
        S4D(4, 8, disc='euler')
    with pytest.raises(ValueError, match='even'):
        S4D(4, 7)
    with pytest.raises(ValueError, match='n_ssm'):
        S4D(4, 8, n_ssm=3)
    with pytest.raises(ValueError, match='H=4'):
        S4D(4, 8)(torch.randn(1, 5, 10))
    with pytest.raises(ValueError, match='lr keys'):
        S4D(4, 8, lr={'C': 1e-3})


def test_low_precision_parameters_and_autocast_keep_a_float32_kernel():
    torch.manual_seed(0)
    layer = S4D(8, 16, bidirectional=True, disc='bilinear').eval()
    x = torch.randn(2, 8, 64)
    with torch.no_grad():
        reference = layer(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert layer.compute_kernel(64).dtype == torch.float32
            torch.testing.assert_close(layer(x).float(), reference, rtol=0.05, atol=0.05)
        layer = layer.to(torch.bfloat16)
        assert layer.compute_kernel(64).dtype == torch.float32
        y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), reference, rtol=0.05, atol=0.05)


# ------------------------------------------------------------------------------------------ recurrent mode

@pytest.mark.parametrize('options', [
    dict(),  # the minimal layer
    dict(disc='bilinear', init='inv', learn_B=True, channels=2, n_ssm=2),
    dict(init='diag', dt_transform='softplus', dt_tie=False, bandlimit=0.5, n_ssm=4),
    dict(init='legs', dt_fast=True, dt_transform='sigmoid', final_act='tanh', activation='relu', transposed=False),
], ids=['minimal', 'bilinear_channels', 'softplus_untied_bandlimit', 'legs_fast_tanh'])
def test_step_reproduces_the_convolution(options):
    """Stepping the recurrence through a sequence gives the convolution's outputs (float64: to rounding)."""
    torch.manual_seed(0)
    layer = S4D(8, 16, **options).double().eval()
    x = torch.randn(2, 8, 300, dtype=torch.float64)
    with torch.no_grad():
        y = layer(x if layer.transposed else x.transpose(1, 2))
        y = y if layer.transposed else y.transpose(1, 2)
        state = layer.default_state(2)
        assert state.shape == (2, 8, 8) and state.dtype == torch.complex128
        steps = []
        for t in range(x.shape[-1]):
            y_t, state = layer.step(x[..., t], state)
            steps.append(y_t)
    torch.testing.assert_close(torch.stack(steps, -1), y, rtol=0, atol=1e-12)


def test_step_in_float32_and_refusals():
    torch.manual_seed(0)
    layer = S4D(8, 16, init='inv', disc='bilinear').eval()
    x = torch.randn(1, 8, 100)
    with torch.no_grad():
        state, steps = layer.default_state(1), []
        for t in range(100):
            y_t, state = layer.step(x[..., t], state)
            steps.append(y_t)
        torch.testing.assert_close(torch.stack(steps, -1), layer(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match='bidirectional'):
        S4D(8, 16, bidirectional=True).step(x[..., 0], None)
    with pytest.raises(ValueError, match="'dss'"):
        S4D(8, 16, disc='dss').default_state(1)
    with pytest.raises(ValueError, match=r'\(B, H=8\)'):
        layer.step(x, layer.default_state(1))


# ------------------------------------------------------------------------------------------ official options

def test_official_init_names_and_new_inits():
    for official, ours in (('diag-lin', 'lin'), ('diag-inv', 'inv'), ('diag-inv2', 'inv2'), ('diag-quad', 'quad'),
                           ('diag-legs', 'legs'), ('diag-real', 'real')):
        torch.testing.assert_close(s4d_init(official, 8, 2)[1], s4d_init(ours, 8, 2)[1])
    _, imag, _ = s4d_init('inv2', 8, 1)
    torch.testing.assert_close(imag[0], 8 / math.pi * (8 / (torch.arange(4.0) + 1) - 1))
    _, imag, _ = s4d_init('quad', 8, 1)
    torch.testing.assert_close(imag[0], (2 * torch.arange(4.0) + 1) ** 2 / math.pi)
    _, imag, _ = s4d_init('diag', 8, 4)  # half S4D-Inv copies, then half S4D-Lin
    torch.testing.assert_close(imag[:2], s4d_init('inv', 8, 2)[1])
    torch.testing.assert_close(imag[2:], s4d_init('lin', 8, 2)[1])
    with pytest.raises(ValueError, match='even'):
        s4d_init('diag', 8, 3)


def test_dt_parameterizations_keep_the_initial_step_sizes():
    for transform in ('exp', 'softplus', 'sigmoid', 'relu', 'none'):
        for fast in (False, True):
            torch.manual_seed(0)
            kernel = S4D(8, 16, dt_transform=transform, dt_fast=fast).kernel
            torch.manual_seed(0)
            reference = S4D(8, 16).kernel
            name = 'log_dt' if transform == 'exp' and not fast else 'inv_dt'
            assert kernel.dt_name == name and name in dict(kernel.named_parameters())
            expected = reference.dt(torch.float64) + (1e-4 if transform == 'relu' else 0.0)  # official: relu + 1e-4
            torch.testing.assert_close(kernel.dt(torch.float64), expected, rtol=1e-5, atol=1e-7)
    assert S4D(8, 16, dt_tie=False).kernel.log_dt.shape == (8, 8)
    with pytest.raises(ValueError, match='dt_transform'):
        S4D(8, 16, dt_transform='tanh')


def test_bandlimit_masks_the_fast_modes():
    torch.manual_seed(0)
    layer = S4D(8, 16, init='inv', bandlimit=0.2)
    coef, _, _ = layer.kernel.discretize()
    freqs = layer.kernel.dt(torch.float32) * layer.kernel.A_imag.abs() / (2 * math.pi)  # n_ssm = H
    assert torch.equal(coef[0] == 0, freqs >= 0.1) and (freqs >= 0.1).any() and (freqs < 0.1).any()


def test_final_act_activation_and_drop_kernel():
    assert isinstance(S4D(8, 16, final_act=None).output_linear, nn.Identity)  # official: no output projection
    assert isinstance(S4D(8, 16, final_act='tanh').output_linear[1], nn.Tanh)
    assert isinstance(S4D(8, 16, final_act='id').output_linear[1], nn.Identity)
    assert isinstance(S4D(8, 16, activation='relu').activation, nn.ReLU)
    with pytest.raises(ValueError, match='channels=1'):
        S4D(8, 16, final_act=None, channels=2)
    with pytest.raises(ValueError, match="activation 'modrelu' is not supported"):
        S4D(8, 16, activation='modrelu')
    torch.manual_seed(0)
    layer = S4D(8, 16, drop_kernel=0.5)
    x = torch.randn(1, 8, 32)
    assert not torch.equal(layer.train()(x), layer(x))  # the kernel is dropped differently each call
    layer.eval()
    assert torch.equal(layer(x), layer(x))


@pytest.mark.parametrize('option, value, what', [
    ('gate', 4, 'GSS multiplicative gating'), ('bottleneck', 2, 'GSS bottleneck'), ('gate_act', 'tanh', 'gate'),
    ('mult_act', 'sigmoid', 'gate'), ('weight_norm', True, 'weight normalization'),
    ('swap_channels', True, 'swapping'), ('is_real', True, 'real-valued'), ('mode', 'dplr', 'S4 DPLR'),
])
def test_official_options_without_equivalent_say_so(option, value, what):
    with pytest.raises(TypeError, match=rf"official option {option}=.*{what}.* is not supported"):
        S4D(8, 16, **{option: value})
    S4D(8, 16, **{option: None if option != 'weight_norm' else False})  # inactive defaults are accepted
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'gates'; accepted: activation"):
        S4D(8, 16, gates=4)
