"""Official Long Range Arena checkpoints (state-spaces/s4 training runs with S4D layers, SGConv's pipeline layer)
load into the registered `s4d_lra_*` / `sgconv_lra_*` models and reproduce the official logits; what has no
equivalent is refused with the option named. Fixtures: tests/fixtures/make_lra_checkpoints.py."""
from pathlib import Path

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.models.seqnet import checkpoint_filter_fn, lra_model_args

FIXTURES = Path(__file__).parent / 'fixtures' / 'lra'
CASES = {  # fixture -> registered model it is a reduced run of
    's4_listops_v4': 's4d_lra_listops',
    's4_pathfinder_v3': 's4d_lra_pathfinder',
    's4_retrieval': 's4d_lra_retrieval',
    'sgconv_listops': 'sgconv_lra_listops',
}
pytestmark = pytest.mark.usefixtures('one_thread')


def _load(name):
    return torch.load(FIXTURES / f'{name}.pt', weights_only=True)


def _inputs(fx):
    """The official batch in this model's layout: retrieval pairs (2B, L), first documents first -> (B, 2, L)."""
    x, lengths = fx['input'], fx['lengths']
    if fx['config']['decoder'].get('_name_') == 'retrieval':
        half = x.shape[0] // 2
        x = torch.stack((x[:half], x[half:]), 1)
        lengths = torch.stack((lengths[:half], lengths[half:]), 1)
    return x, lengths


def _build(name, fx, **overrides):
    kwargs = lra_model_args(fx['config'])
    kwargs['layer_kwargs'].update(overrides.pop('layer_kwargs', {}))
    return timm.create_model(CASES[name], seq_len=fx['input'].shape[1], **dict(kwargs, **overrides)).eval()


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize('name', sorted(CASES))
def test_official_run_reproduced(name):
    fx = _load(name)
    model = _build(name, fx)
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    x, lengths = _inputs(fx)
    with torch.no_grad():
        logits = model(x, lengths)
    assert _rel_err(logits, fx['logits']) < 1e-5


def test_through_timm_pretrained_and_wrapped(tmp_path):
    fx = _load('s4_listops_v4')
    path = tmp_path / 'run.pt'
    torch.save({'state_dict': fx['state_dict']}, path)  # as a Lightning checkpoint wraps it
    kwargs = lra_model_args(fx['config'])
    model = timm.create_model('s4d_lra_listops', pretrained=True, seq_len=64,
                              pretrained_cfg_overlay=dict(file=str(path)), **kwargs).eval()
    with torch.no_grad():
        assert _rel_err(model(*_inputs(fx)), fx['logits']) < 1e-5


def test_config_reads_what_the_weights_do_not_show():
    fx = _load('s4_listops_v4')
    assert fx['config']['model']['layer']['rank'] == 1  # the official layer config's full set of keys
    kwargs = lra_model_args(fx['config'])
    assert kwargs['layer_kwargs']['dt_transform'] == 'softplus' and kwargs['layer_kwargs']['disc'] == 'zoh'
    assert kwargs['global_pool'] == 'avg' and kwargs['prenorm'] is False and kwargs['vocab_size'] == 20
    v3 = lra_model_args(_load('s4_pathfinder_v3')['config'])
    assert v3['layer_kwargs']['dt_transform'] == 'exp' and v3['global_pool'] == 'last' and v3['in_chans'] == 1
    # the same weights read with the wrong dt transform or discretization are wrong, not refused: hence the config
    model = _build('s4_listops_v4', fx, layer_kwargs=dict(dt_transform='exp'))
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    with torch.no_grad():
        assert _rel_err(model(*_inputs(fx)), fx['logits']) > 1e-4


def test_folded_B_and_untied_dt():
    fx = _load('s4_pathfinder_v3')
    model = _build('s4_pathfinder_v3', fx, layer_kwargs=dict(learn_B=False))
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    with torch.no_grad():
        assert _rel_err(model(*_inputs(fx)), fx['logits']) < 1e-5
    sd = dict(fx['state_dict'])
    for key in [k for k in sd if k.endswith('inv_dt')]:
        sd[key] = sd[key].expand(-1, 4).clone()  # untied, every mode the same dt
    with pytest.raises(ValueError, match=r'dt_tie=False'):
        checkpoint_filter_fn(sd, model)
    untied = _build('s4_pathfinder_v3', fx, layer_kwargs=dict(dt_tie=False))
    untied.load_state_dict(checkpoint_filter_fn(sd, untied), strict=True)
    with torch.no_grad():
        assert _rel_err(untied(*_inputs(fx)), fx['logits']) < 1e-5


@pytest.mark.parametrize('key, message', [
    ('model.layers.0.layer.input_gate.0.weight', 'gate'),
    ('model.layers.0.layer.input_linear.weight', 'bottleneck'),
    ('model.layers.0.layer.output_linear.0.weight_g', 'weight_norm'),
    ('model.layers.0.layer.layer.kernel.P', "mode='dplr'"),
    ('model.layers.0.residual.weight', 'residual'),
    ('encoder.1.pe', 'another encoder'),
    ('decoder.0.retrieval.classifier.4.weight', 'nli=False'),
])
def test_official_options_without_equivalent_are_refused(key, message):
    fx = _load('s4_retrieval' if 'retrieval' in key else 's4_listops_v4')
    name = 's4_retrieval' if 'retrieval' in key else 's4_listops_v4'
    model = _build(name, fx)
    sd = dict(fx['state_dict'], **{key: torch.zeros(1)})
    with pytest.raises(ValueError, match=message):
        checkpoint_filter_fn(sd, model)


def test_wrong_family_and_sizes_are_refused():
    fx = _load('sgconv_listops')
    with pytest.raises(ValueError, match='SGConv, the model.s S4D'):
        checkpoint_filter_fn(fx['state_dict'], timm.create_model('s4d_lra_listops', embed_dim=16, depth=2))
    fx = _load('s4_listops_v4')
    with pytest.raises(ValueError, match='20 tokens.*vocab_size=20'):
        checkpoint_filter_fn(fx['state_dict'], _build('s4_listops_v4', fx, vocab_size=30))
    sd = dict(_load('sgconv_listops')['state_dict'], **{'model.layers.0.layer.norm.norm.m': torch.zeros(1)})
    with pytest.raises(ValueError, match='ln=True'):
        checkpoint_filter_fn(sd, _build('sgconv_listops', _load('sgconv_listops')))


def test_config_settings_without_equivalent_are_refused():
    config = _load('s4_listops_v4')['config']
    for change, message in ((dict(mode='nplr'), "mode other than 'diag'"), ):
        bad = dict(config, model=dict(config['model'], layer=dict(config['model']['layer'], **change)))
        with pytest.raises(ValueError, match=message):
            lra_model_args(bad)
    with pytest.raises(ValueError, match="decoder.mode='sum'"):
        lra_model_args(dict(config, decoder=dict(config['decoder'], mode='sum')))
    for change, message in ((dict(real_transform='relu'), "real_transform='relu'"), (dict(rank=2), 'rank=2')):
        bad = dict(config, model=dict(config['model'], layer=dict(config['model']['layer'], **change)))
        with pytest.raises(TypeError, match=rf'{message} .* is not supported'):
            timm.create_model('s4d_lra_listops', **lra_model_args(bad))
    with pytest.raises(TypeError, match=r'gate=4 \(GSS multiplicative gating\) is not supported'):
        kwargs = lra_model_args(dict(config, model=dict(config['model'], layer=dict(config['model']['layer'],
                                                                                         gate=4))))
        timm.create_model('s4d_lra_listops', **kwargs)
