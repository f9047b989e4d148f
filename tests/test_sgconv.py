"""SGConv layer: golden outputs of the official GConv, no first-use state, scale arithmetic, optimizer hints, errors."""
from pathlib import Path

import pytest
import torch

from zoo.models.sgconv import SGConv

FIXTURES = sorted((Path(__file__).parent / 'fixtures' / 'sgconv').glob('*.pt'))


def _ours(official_kwargs):
    return SGConv(**official_kwargs)  # the official argument names (postact, n_scales, linear, shift, ...)


@pytest.mark.parametrize('path', FIXTURES, ids=[p.stem for p in FIXTURES])
@pytest.mark.parametrize('taken', ['after_first_forward', 'before_first_forward'])
def test_official_state_dict_outputs(path, taken):
    fx = torch.load(path, weights_only=True)
    layer = _ours(fx['kwargs']).eval()
    sd = fx['state_dict'] if taken == 'after_first_forward' else fx['state_dict_before_forward']
    layer.load_state_dict(sd)
    with torch.no_grad():
        torch.testing.assert_close(layer(fx['input']), fx['output'], rtol=1e-4, atol=1e-5)
    # the norm the official layer measured at its first forward is the one ours measured at init
    torch.testing.assert_close(layer.kernel_norm, fx['state_dict']['kernel_norm'])


def test_init_normalizes_kernel_and_forward_changes_no_state():
    torch.manual_seed(0)
    layer = SGConv(8, l_max=256, kernel_dim=4, bidirectional=True, glu=True)
    full = layer._multiscale_kernel()
    assert full.shape == (2, 8, 4 * 2 ** (layer.num_scales - 1))
    torch.testing.assert_close((full / layer.kernel_norm).norm(dim=-1), torch.ones(2, 8))
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.eval()(torch.randn(1, 8, 100))
    after = layer.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize('l_max, kernel_dim, init_scale, expected', [
    (2048, 1, 0, 12),   # ListOps
    (4096, 2, 0, 12),   # Text
    (4000, 1, 0, 13),   # Retrieval
    (1024, 32, 0, 6),   # Image, Pathfinder
    (16384, 64, 1, 8),  # Path-X
])
def test_number_of_scales_follows_the_sequence_length(l_max, kernel_dim, init_scale, expected):
    layer = SGConv(2, l_max=l_max, kernel_dim=kernel_dim, init_scale=init_scale)
    assert layer.num_scales == expected == len(layer.kernel_list)
    assert layer._multiscale_kernel().shape[-1] >= l_max


def test_scales_concatenate_upsampled_and_decaying():
    layer = SGConv(1, l_max=16, kernel_dim=2, mode='cat_randn_nearest')
    with torch.no_grad():
        for weight in layer.kernel_list:
            weight.fill_(1.0)
    k = layer._multiscale_kernel()[0, 0]
    # lengths 2, 2, 4, 8; weights 2^3, 2^2, 2^1, 2^0
    expected = torch.tensor([8.0] * 2 + [4.0] * 2 + [2.0] * 4 + [1.0] * 8)
    torch.testing.assert_close(k, expected)
    assert layer.compute_kernel(5).shape == (1, 1, 5) and layer.compute_kernel(40).shape == (1, 1, 40)
    assert torch.all(layer.compute_kernel(40)[..., 16:] == 0)


def test_optimizer_hints_and_gradients():
    layer = SGConv(4, l_max=64, kernel_dim=4, mode='cat_randn_learnable', transposed=False, dropout=0.1)
    assert all(w._optim == {'lr': 1e-3} for w in layer.kernel_list)
    assert layer.decay._optim == {'lr': 1e-3}
    fixed = SGConv(4, l_max=64, kernel_dim=4, mode='cat_randn_learnable_fixed')
    assert 'decay' in dict(fixed.named_buffers())
    y = layer(torch.randn(2, 50, 4))
    assert y.shape == (2, 50, 4)
    y.square().mean().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_errors():
    with pytest.raises(ValueError, match='mode'):
        SGConv(4, l_max=64, mode='cat_sum_randn')
    with pytest.raises(ValueError, match='mode'):
        SGConv(4, l_max=64, mode='cat')
    with pytest.raises(ValueError, match='at least one scale'):
        SGConv(4, l_max=8, kernel_dim=64)
    with pytest.raises(ValueError, match='H=4'):
        SGConv(4, l_max=64, kernel_dim=4)(torch.randn(1, 3, 10))


def test_official_option_names():
    torch.manual_seed(0)
    assert SGConv(8, l_max=256, kernel_dim=4, n_scales=3).num_scales == 3
    with pytest.raises(ValueError, match='n_scales=3 differ'):
        SGConv(8, l_max=256, kernel_dim=4, n_scales=3, num_scales=4)
    assert SGConv(8, l_max=64, kernel_dim=4, postact=None).output_linear.weight.shape == (8, 8, 1)
    assert SGConv(8, l_max=64, kernel_dim=4, postact='glu').output_linear[0].weight.shape == (16, 8, 1)
    assert isinstance(SGConv(8, l_max=64, kernel_dim=4, linear=True).output_linear, torch.nn.Identity)
    for option, value in (('ln', True), ('weight_norm', True), ('hyper_act', 'gelu')):
        with pytest.raises(TypeError, match=rf'official option {option}=.* is not supported'):
            SGConv(8, l_max=64, kernel_dim=4, **{option: value})
    with pytest.raises(TypeError, match='unexpected keyword argument'):
        SGConv(8, l_max=64, kernel_dim=4, n_scale=3)


def test_seqnet_passes_unsupported_official_options_to_the_layer():
    import timm
    with pytest.raises(TypeError, match=r"SGConv: the official option ln=True .* is not supported"):
        timm.create_model('sgconv_lra_listops', embed_dim=8, depth=1, layer_kwargs=dict(ln=True))
    with pytest.raises(TypeError, match=r"S4D: the official option gate=4 .* is not supported"):
        timm.create_model('s4d_lra_listops', embed_dim=8, depth=1, layer_kwargs=dict(gate=4))
    with pytest.raises(TypeError, match="unknown layer_kwargs key 'gates'"):
        timm.create_model('s4d_lra_listops', embed_dim=8, depth=1, layer_kwargs=dict(gates=4))
