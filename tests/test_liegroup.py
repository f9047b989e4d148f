"""Lie-group (SL(2,R) / GL+(2,R)) CNNs: official parity, equivariance, sampling, caching, timm API."""
import math
from pathlib import Path

import pytest
import timm
import torch

import zoo  # noqa: F401  (registers the models)
from zoo.models.liegroup import (
    GROUP_DIMS, GroupConv2d, GroupSampler, KernelNet, LieGroupResNet, LiftingConv2d, checkpoint_filter_fn,
    polar_coordinates, rgenn_model_args, rotation_matrix,
)

FIXTURES = Path(__file__).parent / 'fixtures' / 'liegroup'
TINY = dict(num_samples=4, width=4, kernel_mlp=dict(hidden=16))


def tiny_model(group='sl2', **kwargs):
    torch.manual_seed(0)
    return LieGroupResNet(group=group, **dict(TINY, **kwargs)).double().eval()


def quarter_turn():
    # torch.rot90(x, 1, (-2, -1)) moves content by R(-pi/2) in (x = column, y = row) coordinates.
    return rotation_matrix(torch.tensor(-math.pi / 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ official parity

@pytest.mark.parametrize('group', ['sl2', 'gl2'])
@pytest.mark.parametrize('conv_backend', ['direct', 'winograd'])
def test_matches_official_rgenn(group, conv_backend):
    fx = torch.load(FIXTURES / f'rgenn_{group}_tiny.pt', weights_only=True)
    assert_matches_fixture(tiny_model(group, conv_backend=conv_backend), fx)


def assert_matches_fixture(model, fx):
    """Load the official state dict through the filter, use the fixture's samples, compare stem and logits."""
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    model.set_samples((fx['g_stem'], fx['g_stem_inv']), (fx['g_final'], fx['g_final_inv']))
    with torch.no_grad():
        stem = model.stem(fx['input'][:1], fx['g_stem_inv'])
        logits = model(fx['input'])
    torch.testing.assert_close(stem, fx['stem'], rtol=0, atol=1e-12)
    # The release keeps pi as a float32 buffer in its angle wrap-around, hence ~1e-7 and not 1e-12.
    torch.testing.assert_close(logits, fx['logits'], rtol=0, atol=1e-6)


def _config_kwargs(config):
    """The fixture's `config` (kernel_mlp options flattened as kernel_mlp_<name>) as LieGroupResNet arguments."""
    kwargs = {k: v for k, v in config.items() if not k.startswith('kernel_mlp_')}
    kwargs['kernel_mlp'] = {k[len('kernel_mlp_'):]: v for k, v in config.items() if k.startswith('kernel_mlp_')}
    return kwargs


def _load_variant(name, **overrides):
    fx = torch.load(FIXTURES / f'rgenn_{name}.pt', weights_only=True)
    kwargs = _config_kwargs(fx['config'])
    kwargs['kernel_mlp'].update(overrides.pop('kernel_mlp', {}))
    torch.manual_seed(0)
    model = LieGroupResNet(**dict(kwargs, **overrides)).double().eval()
    return fx, model


@pytest.mark.parametrize('name', ['sl2_mean_relu_bn', 'gl2_lng_trainable'])
def test_release_options_match_official_rgenn(name):
    """Checkpoints of the release's other model options (mean projection, ReLU, BatchNorm3d / channel LayerNorm,
    BatchNorm head, other or trained SIREN frequencies), as a SamplingWrapper state dict, load and match."""
    fx, model = _load_variant(name)
    assert_matches_fixture(model, fx)


def test_folded_frequencies_load_release_checkpoints():
    """A model with omega folded into its SIREN weights takes a release checkpoint's frequencies into them."""
    fx, model = _load_variant('sl2_mean_relu_bn', kernel_mlp=dict(fold_omega=True))
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    model.set_samples((fx['g_stem'], fx['g_stem_inv']), (fx['g_final'], fx['g_final_inv']))
    with torch.no_grad():
        torch.testing.assert_close(model(fx['input']), fx['logits'], rtol=0, atol=1e-6)


def test_trainable_frequencies_are_parameters():
    model = tiny_model(kernel_mlp=dict(hidden=16, trainable_omega=True))
    omega = model.stem.conv.kernel_net.omega
    assert isinstance(omega, torch.nn.Parameter) and omega.tolist() == [10.0, 10.0, 10.0]
    model.train()(torch.randn(1, 1, 24, 24, dtype=torch.float64)).sum().backward()
    assert omega.grad is not None and omega.grad.abs().sum() > 0
    with pytest.raises(ValueError, match='exclude each other'):
        KernelNet(2, 4, 4, fold_omega=True, trainable_omega=True)


@pytest.mark.parametrize('name, overrides, message', [
    # what the weights show, refused with the release option and the argument to build with
    ('sl2_mean_relu_bn', dict(conv_norm='layernorm3d'), "--conv_norm batchnorm3d.*conv_norm='batchnorm3d'"),
    ('sl2_mean_relu_bn', dict(head_norm='layernorm'), "--head_norm batchnorm.*head_norm='batchnorm'"),
    ('gl2_lng_trainable', dict(conv_norm='batchnorm3d'), "--conv_norm layernorm3dg"),
    ('sl2_mean_relu_bn', dict(kernel_mlp=dict(first_omega=10.0, omega=10.0)),
     r"--siren_first_w0 15 --siren_w0 20: build the model with kernel_mlp=dict\(first_omega=15, omega=20\)"),
    ('gl2_lng_trainable', dict(kernel_mlp=dict(trainable_omega=False)), r"trainable_omega=True"),
    ('gl2_lng_trainable', dict(group='sl2'), '--liegroup gl2'),
    # model options without a release equivalent
    ('sl2_mean_relu_bn', dict(group_pool='max'), "group_pool='max' with global_pool='avg'.*--global_pool mean"),
    ('sl2_mean_relu_bn', dict(global_pool='max'), "group_pool='mean' with global_pool='max'"),
    ('sl2_mean_relu_bn', dict(signed_angle=True), 'signed_angle=True'),
    ('sl2_mean_relu_bn', dict(stem_pool=True, input_pad=8), 'stem_pool=True.*input_pad=8'),
])
def test_release_checkpoints_refused_with_the_option(name, overrides, message):
    fx, model = _load_variant(name, **overrides)
    with pytest.raises(ValueError, match=message):
        checkpoint_filter_fn(fx['state_dict'], model)


def test_foreign_and_own_state_dicts_pass_the_filter_unchanged():
    model = tiny_model(stem_pool=True)  # an option the release lacks: refused for release files only
    own = model.state_dict()
    assert checkpoint_filter_fn(own, model) is own or checkpoint_filter_fn(own, model).keys() == own.keys()
    foreign = {'downsample_layers.0.0.weight': torch.zeros(1)}
    assert checkpoint_filter_fn(foreign, model) == foreign


def test_release_sampling_choices_are_warned(caplog):
    fx, model = _load_variant('sl2_mean_relu_bn', num_samples=6, spd_spread=0.2)
    with caplog.at_level('WARNING'):
        model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    assert '--gsamples 4' in caplog.text and 'num_samples=4' in caplog.text
    assert '--spd_bounds 0.1' in caplog.text and 'spd_spread=0.1' in caplog.text


def test_release_checkpoint_through_timm(tmp_path):
    """The pretrained path: a SamplingWrapper state dict saved by the release, loaded by file."""
    fx = torch.load(FIXTURES / 'rgenn_sl2_mean_relu_bn.pt', weights_only=True)
    torch.save(fx['state_dict'], tmp_path / 'rgenn.pth')
    kwargs = _config_kwargs(fx['config'])
    overlay = dict(file=str(tmp_path / 'rgenn.pth'))
    model = timm.create_model('liegroup_sl2', pretrained=True, pretrained_cfg_overlay=overlay, **kwargs).double().eval()
    model.set_samples((fx['g_stem'], fx['g_stem_inv']), (fx['g_final'], fx['g_final_inv']))
    with torch.no_grad():
        torch.testing.assert_close(model(fx['input']), fx['logits'], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='--conv_norm batchnorm3d'):
        timm.create_model('liegroup_sl2', pretrained=True, pretrained_cfg_overlay=overlay,
                          **dict(kwargs, conv_norm='layernorm3d'))


@pytest.mark.parametrize('name', ['sl2_mean_relu_bn', 'gl2_lng_trainable'])
def test_release_command_line_to_model_arguments(name):
    fx = torch.load(FIXTURES / f'rgenn_{name}.pt', weights_only=True)
    args = ['--gsamples', '4', '--blocks_dim', '4', '--inr_dim', '16', *fx['release_args'], '--amp', '--seed', '3']
    model_name, kwargs = rgenn_model_args(args)
    assert model_name == f"liegroup_{fx['config']['group']}"
    model = timm.create_model(model_name, **kwargs).double().eval()
    if fx['config'].get('kernel_mlp_trainable_omega'):  # not a command-line option of the release
        model = timm.create_model(model_name, **dict(kwargs, kernel_mlp=dict(kwargs['kernel_mlp'],
                                                                             trainable_omega=True))).double().eval()
    model.load_state_dict(checkpoint_filter_fn(fx['state_dict'], model), strict=True)
    model.set_samples((fx['g_stem'], fx['g_stem_inv']), (fx['g_final'], fx['g_final_inv']))
    with torch.no_grad():
        torch.testing.assert_close(model(fx['input']), fx['logits'], rtol=0, atol=1e-6)
    assert model.sampler.rotation == 'linspace' and model.num_samples == 4


def test_release_options_without_equivalent_are_named():
    for args, message in ((['--inr', 'wire'], '--inr wire'), (['--metric_alpha', '2'], '--metric_alpha 2'),
                          (['--stem_kernel', '7'], '--stem_kernel 7 with --conv_kernel 5'),
                          (['--nlayers', '1'], '--nlayers 1')):
        with pytest.raises(ValueError, match=message):
            rgenn_model_args(args)
    assert rgenn_model_args({'ortho_sampler': 'loguniform', 'ortho_bounds': 0.5})[1]['rotation_sampler'] == 'uniform'


def test_linspace_sampler_is_the_releases_equidistant():
    rot, rot_inv = GroupSampler('sl2', 'linspace', 0.5).rotations(5)
    theta = torch.atan2(rot[:, 1, 0], rot[:, 0, 0])
    torch.testing.assert_close(theta, torch.linspace(-math.pi / 2, math.pi / 2, 5, dtype=torch.float64))
    torch.testing.assert_close(rot @ rot_inv, torch.eye(2, dtype=torch.float64).expand(5, 2, 2))


def test_param_counts_match_release():
    # Counted from rgenn's GResNet at --gsamples 10 --blocks_dim 40 (SL2 339,102, GL2 339,282).
    counts = {n: sum(p.numel() for p in timm.create_model(n).parameters())
              for n in ('liegroup_sl2', 'liegroup_gl2', 'liegroup_cnn', 'liegroup_sl2_small', 'liegroup_cnn_small')}
    assert counts['liegroup_sl2'] == 339_102 and counts['liegroup_gl2'] == 339_282
    assert abs(counts['liegroup_cnn'] / counts['liegroup_sl2'] - 1) < 0.05
    assert abs(counts['liegroup_cnn_small'] / counts['liegroup_sl2_small'] - 1) < 0.05


# ------------------------------------------------------------------------------------------------ equivariance

@pytest.mark.parametrize('group', ['sl2', 'gl2'])
@pytest.mark.parametrize('num_samples', [4, 8])
def test_logits_invariant_to_rot90_with_rotation_sampling(group, num_samples):
    model = tiny_model(group, num_samples=num_samples, spd_spread=0.0)
    torch.manual_seed(1)
    x = torch.randn(2, 1, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        feats = model.forward_features(x)
        for k in (1, 2, 3):
            xr = torch.rot90(x, k, (-2, -1))
            torch.testing.assert_close(model(xr), ref, rtol=0, atol=1e-9)
            torch.testing.assert_close(model.forward_features(xr), torch.rot90(feats, k, (-2, -1)), rtol=0, atol=1e-9)


def test_logits_not_rot90_invariant_without_quarter_turns():
    # Control: 3 rotations (120 degrees apart) do not contain the quarter turn, so invariance must break.
    model = tiny_model('sl2', num_samples=3, spd_spread=0.0)
    x = torch.randn(2, 1, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        assert (model(torch.rot90(x, 1, (-2, -1))) - model(x)).abs().max() > 1e-4


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
@pytest.mark.parametrize('signed_angle', [False, True])
def test_kernels_commute_with_group_action(group, signed_angle):
    """K(a p; a g_out, a g_in) = K(p; g_out, g_in) (times 1/|det a| for GL+(2)) for any a in the group."""
    torch.manual_seed(0)
    sampler = GroupSampler(group, rotation='uniform', spd_spread=0.1)
    g_in, _ = sampler.sample(3)
    g_out, g_out_inv = sampler.sample(5)
    a, a_inv = sampler.sample(1)
    det_a = torch.det(a[0]).abs()
    lift = LiftingConv2d(2, 3, 5, group=group, kernel_mlp=dict(hidden=16)).double()
    conv = GroupConv2d(2, 3, 5, group=group, kernel_mlp=dict(hidden=16), signed_angle=signed_angle).double()
    scale = 1.0 if group == 'sl2' else 1 / det_a
    for layer, args, moved in (
            (lift, (g_out_inv,), (g_out_inv @ a_inv,)),
            (conv, (g_in, g_out_inv), (a @ g_in, g_out_inv @ a_inv)),
    ):
        ref = layer.weight(*args)
        layer.grid = layer.grid @ a[0].mT  # evaluate at a p
        torch.testing.assert_close(layer.weight(*moved), ref * scale, rtol=0, atol=1e-10)


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_layers_commute_with_quarter_turn_of_samples(group):
    """layer(rot90 f, r g) = rot90 layer(f, g) for arbitrary (non-grid) samples g and a quarter turn r."""
    torch.manual_seed(0)
    sampler = GroupSampler(group, rotation='uniform', spd_spread=0.1)
    r = quarter_turn()
    g, g_inv = sampler.sample(3)
    h, h_inv = sampler.sample(4)
    lift = LiftingConv2d(1, 2, 5, group=group, kernel_mlp=dict(hidden=16)).double()
    conv = GroupConv2d(2, 3, 5, padding=2, group=group, kernel_mlp=dict(hidden=16)).double()
    rot = lambda t: torch.rot90(t, 1, (-2, -1))  # noqa: E731
    x = torch.randn(2, 1, 14, 14, dtype=torch.float64)
    f = torch.randn(2, 2, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(lift(rot(x), g_inv @ r.mT), rot(lift(x, g_inv)), rtol=0, atol=1e-10)
        torch.testing.assert_close(conv(rot(f), r @ g, h_inv @ r.mT), rot(conv(f, g, h_inv)), rtol=0, atol=1e-10)


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_layers_translation_equivariant(group):
    torch.manual_seed(0)
    sampler = GroupSampler(group)
    g, g_inv = sampler.sample(4)
    lift = LiftingConv2d(1, 2, 5, group=group, kernel_mlp=dict(hidden=16)).double()
    conv = GroupConv2d(2, 2, 5, padding=2, group=group, kernel_mlp=dict(hidden=16)).double()
    shift = lambda t: torch.roll(t, (3, -2), (-2, -1))  # noqa: E731
    x = torch.randn(1, 1, 20, 20, dtype=torch.float64)
    f = torch.randn(1, 2, 4, 20, 20, dtype=torch.float64)
    with torch.no_grad():
        # Compare away from the rolled-over border, where the roll is a true translation.
        torch.testing.assert_close(lift(shift(x), g_inv)[..., 5:-5, 5:-5],
                                   shift(lift(x, g_inv))[..., 5:-5, 5:-5], rtol=0, atol=1e-12)
        torch.testing.assert_close(conv(shift(f), g, g_inv)[..., 5:-5, 5:-5],
                                   shift(conv(f, g, g_inv))[..., 5:-5, 5:-5], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------ group maths

@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_sampler_pairs_and_polar_coordinates(group):
    gen = torch.Generator().manual_seed(0)
    sampler = GroupSampler(group, rotation='equidistant', spd_spread=0.1)
    g, g_inv = sampler.sample(10, gen)
    torch.testing.assert_close(g @ g_inv, torch.eye(2, dtype=torch.float64).expand(10, 2, 2))
    det = torch.det(g)
    assert (det > 0).all()
    if group == 'sl2':
        torch.testing.assert_close(det, torch.ones(10, dtype=torch.float64))
    else:
        assert det.std() > 0.01
    # The polar angle of each sample is its equidistant angle; log P is symmetric (traceless for SL(2)).
    coords = polar_coordinates(g, group)
    angle = coords[:, 1] if group == 'sl2' else coords[:, 3]
    expected = torch.remainder(-math.pi + 2 * math.pi * torch.arange(10, dtype=torch.float64) / 10, 2 * math.pi)
    torch.testing.assert_close(angle, expected)
    assert coords.shape == (10, 3 if group == 'sl2' else 4)
    # Identity has all-zero coordinates (and the angle is 0, not 2 pi).
    assert polar_coordinates(torch.eye(2, dtype=torch.float64), group).abs().max() < 1e-12


def test_rotation_samplers():
    eq = GroupSampler('sl2', rotation='equidistant', spd_spread=0.0)
    g, _ = eq.sample(10)
    angles = torch.atan2(g[:, 1, 0], g[:, 0, 0])
    assert len(torch.unique(torch.round(torch.remainder(angles, 2 * math.pi), decimals=6))) == 10  # no +-pi twice
    gq, _ = eq.sample(8)
    for q in range(4):  # contains every quarter turn
        target = rotation_matrix(torch.tensor(q * math.pi / 2, dtype=torch.float64))
        assert ((gq - target).abs().amax((-2, -1)) < 1e-12).any()
    gen = torch.Generator().manual_seed(0)
    uni, uni_inv = GroupSampler('gl2', rotation='uniform', rotation_range=0.25, spd_spread=0.0).sample(200, gen)
    assert torch.atan2(uni[:, 1, 0], uni[:, 0, 0]).abs().max() <= math.pi / 4
    haar, haar_inv = GroupSampler('sl2', rotation='haar', spd_spread=0.0).sample(200, gen)
    torch.testing.assert_close(torch.det(haar), torch.ones(200, dtype=torch.float64))
    torch.testing.assert_close(haar @ haar_inv, torch.eye(2, dtype=torch.float64).expand(200, 2, 2))
    with pytest.raises(ValueError, match='rotation sampler'):
        GroupSampler('sl2', rotation='grid')
    with pytest.raises(ValueError, match='group must be'):
        GroupSampler('so3')


def test_stratified_sampler_one_angle_per_cell_and_midpoints_for_eval():
    sampler = GroupSampler('sl2', rotation='stratified', rotation_range=0.25, spd_spread=0.0)
    cell = 2 * (math.pi / 4) / 8
    lower = -math.pi / 4 + cell * torch.arange(8, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    draws = [sampler.sample(8, gen)[0] for _ in range(2)]
    for g in draws:
        theta = torch.atan2(g[:, 1, 0], g[:, 0, 0])
        assert ((theta >= lower) & (theta < lower + cell)).all()  # exactly one angle in each cell
    assert (draws[0] - draws[1]).abs().max() > 1e-3  # jittered anew at every draw
    mid, mid_inv = sampler.sample(8, gen, jitter=False)
    torch.testing.assert_close(torch.atan2(mid[:, 1, 0], mid[:, 0, 0]), lower + cell / 2)
    torch.testing.assert_close(mid @ mid_inv, torch.eye(2, dtype=torch.float64).expand(8, 2, 2))
    # The model's fixed evaluation samples are the midpoints.
    model = tiny_model('sl2', rotation_sampler='stratified', rotation_range=0.25, spd_spread=0.0, num_samples=8)
    torch.testing.assert_close(model.eval_samples[0, 0], mid)


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_eval_spd_identity_keeps_the_rotations_and_drops_the_positive_definite_factor(group):
    kw = dict(rotation_sampler='stratified', rotation_range=0.5, spd_spread=0.1)
    sampled, centred = tiny_model(group, **kw), tiny_model(group, eval_spd='identity', **kw)
    g, g_inv = centred.eval_samples[:, 0], centred.eval_samples[:, 1]
    eye = torch.eye(2, dtype=torch.float64).expand_as(g)
    torch.testing.assert_close(g @ g.mT, eye)  # pure rotations
    torch.testing.assert_close(g @ g_inv, eye)
    assert (sampled.eval_samples[:, 0] @ sampled.eval_samples[:, 0].mT - eye).abs().max() > 1e-2
    # the rotation factors are the same cell midpoints: R of g = P R is the orthogonal factor of the polar decomposition
    u, _, vh = torch.linalg.svd(sampled.eval_samples[:, 0])
    torch.testing.assert_close(u @ vh, g)
    with pytest.raises(ValueError, match='eval_spd'):
        tiny_model(group, eval_spd='mean')


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_signed_angle_chart_is_continuous_at_the_identity(group):
    index = 1 if group == 'sl2' else 3
    small = rotation_matrix(torch.tensor([-1e-3, 1e-3], dtype=torch.float64))
    release = polar_coordinates(small, group)[:, index]
    signed = polar_coordinates(small, group, signed_angle=True)[:, index]
    torch.testing.assert_close(release, torch.tensor([2 * math.pi - 1e-3, 1e-3], dtype=torch.float64))
    torch.testing.assert_close(signed, torch.tensor([-1e-3, 1e-3], dtype=torch.float64))
    # The rest of the coordinates do not depend on the chart, and the layer stays equivariant with it.
    g = GroupSampler(group, spd_spread=0.1).sample(3, torch.Generator().manual_seed(0))[0]
    keep = [i for i in range(GROUP_DIMS[group]) if i != index]
    torch.testing.assert_close(polar_coordinates(g, group)[:, keep], polar_coordinates(g, group, True)[:, keep])
    torch.testing.assert_close(torch.remainder(polar_coordinates(g, group, True)[:, index], 2 * math.pi),
                               polar_coordinates(g, group)[:, index])


# ------------------------------------------------------------------------------------------------ sampling, cache

def test_eval_is_reproducible_and_training_resamples():
    model = tiny_model('gl2')
    x = torch.randn(2, 1, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(x), model(x)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(tiny_model('gl2')(x), a, rtol=0, atol=0)  # same seed, same predictions
        model.eval_resample = True  # the release's behaviour: new samples at every call
        assert (model(x) - a).abs().max() > 1e-6
        model.eval_resample = False
        model.train()
        model.head.drop.p = 0.0
        assert (model(x) - model(x)).abs().max() > 1e-6


def test_conv_backend_choice():
    conv = GroupConv2d(16, 4, 5, group='sl2', kernel_mlp=dict(hidden=8))
    wide = torch.randn(1, 16 * 8, 9, 9)  # 16 channels x 8 samples = 128 packed input channels
    weight = torch.randn(32, 128, 5, 5)
    assert conv.use_winograd(wide, weight) and not conv.use_winograd(wide[:, :64], weight[:, :64])
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not conv.use_winograd(wide, weight)  # Winograd transforms are not for half precision
    conv.conv_backend = 'direct'
    assert not conv.use_winograd(wide, weight)
    conv.conv_backend = 'winograd'
    with pytest.raises(ValueError, match='float32/float64'):
        conv.use_winograd(wide.half(), weight.half())
    with pytest.raises(ValueError, match='conv_backend must be'):
        GroupConv2d(2, 2, 5, conv_backend='fft')


@pytest.mark.parametrize('group', ['sl2', 'gl2'])
def test_winograd_model_matches_direct_in_float32(group):
    # 16 channels x 8 samples = 128 packed channels: 'auto' takes the Winograd path on the CPU.
    x = torch.rand(2, 1, 40, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    logits = {}
    for backend in ('direct', 'auto'):
        torch.manual_seed(0)
        model = LieGroupResNet(group=group, num_samples=8, width=16).eval()
        with torch.no_grad():
            logits[backend] = model(x)
    with torch.no_grad():
        exact = model.double()(x.double())
    assert model.stages[0].conv1.use_winograd(torch.zeros(1, 128, 8, 8), torch.zeros(128, 128, 5, 5))
    # Both float32 paths are within float32 rounding of the float64 model.
    for backend in ('direct', 'auto'):
        torch.testing.assert_close(logits[backend].double(), exact, rtol=0, atol=2e-5)


def test_kernel_cache_reused_and_invalidated():
    model = tiny_model('sl2')
    conv = model.stages[0].conv1
    x = torch.randn(2, 1, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
        cached = conv._cache[1]
        model(x)
        assert conv._cache[1] is cached  # reused
        # Weight change in place (as an optimizer step does): new kernel, new output, equal to a fresh model's.
        conv.kernel_net.layers[0].weight.add_(0.05)
        changed = model(x)
        assert conv._cache[1] is not cached and (changed - ref).abs().max() > 1e-6
        fresh = tiny_model('sl2')
        fresh.load_state_dict(model.state_dict())
        torch.testing.assert_close(fresh(x), changed, rtol=0, atol=1e-12)
        # load_state_dict back, and new samples, invalidate too.
        model.load_state_dict(tiny_model('sl2').state_dict())
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-12)
        model.resample_eval(seed=123)
        assert (model(x) - ref).abs().max() > 1e-6
    # With autograd on, kernels are rebuilt with a graph: gradients reach the kernel networks.
    model(x).sum().backward()
    assert conv.kernel_net.layers[0].weight.grad is not None


def test_sample_buffers_are_independent_and_final_conv_sees_stem_samples():
    model = tiny_model('sl2')
    seen = {}
    model.stages[-1].conv.register_forward_pre_hook(lambda m, args: seen.update(final=args[1:]))
    model.stages[0].conv1.register_forward_pre_hook(lambda m, args: seen.update(block=args[1:]))
    with torch.no_grad():
        model(torch.randn(1, 1, 24, 24, dtype=torch.float64))
    g_stem, g_stem_inv, g_final, g_final_inv = model.samples(torch.zeros((), dtype=torch.float64))
    # g and g^-1 are different tensors that really are inverses (the release's aliasing made them equal).
    assert g_stem.data_ptr() != g_stem_inv.data_ptr()
    torch.testing.assert_close(g_stem @ g_stem_inv, torch.eye(2, dtype=torch.float64).expand(4, 2, 2))
    torch.testing.assert_close(seen['block'][0], g_stem)
    torch.testing.assert_close(seen['block'][1], g_stem_inv)
    torch.testing.assert_close(seen['final'][0], g_stem)  # input samples of the last conv = lifting samples
    torch.testing.assert_close(seen['final'][1], g_final_inv)
    assert (g_final - g_stem).abs().max() > 1e-3


# ------------------------------------------------------------------------------------------------ timm API

@pytest.mark.parametrize('name', ['liegroup_sl2_small', 'liegroup_cnn_small'])
def test_timm_api(name):
    model = timm.create_model(name, width=4, final_width=4, num_samples=2, stem_pool=False, input_pad=0).eval()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 4, 6, 6)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats)
        assert [t.shape[-1] for t in inter] == [20, 10, 6]
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), model.set_grad_checkpointing(False) or model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 256)
        model.reset_classifier(0)
        assert model(x).shape == (2, 256)
        model.reset_classifier(0, '')
        assert model(x).shape == (2, 4, 6, 6)
    fmodel = timm.create_model(name, width=4, final_width=4, num_samples=2, stem_pool=False, input_pad=0,
                               features_only=True).eval()
    with torch.no_grad():
        maps = fmodel(x)
    assert [m.shape[1] for m in maps] == fmodel.feature_info.channels()
    assert [m.shape[-1] for m in maps] == [20, 10, 6]


@pytest.mark.parametrize('group', ['gl2', 'none'])
def test_final_width_sets_the_invariant_features(group):
    model = LieGroupResNet(group=group, **dict(TINY, final_width=6)).eval()
    x = torch.randn(2, 1, 24, 24)
    with torch.no_grad():
        assert model.forward_features(x).shape[1] == model.num_features == 6
        assert model(x).shape == (2, 10)
    assert [info['num_chs'] for info in model.feature_info] == [4, 4, 6]
    with pytest.raises(ValueError, match='final_width'):
        LieGroupResNet(group=group, **dict(TINY, final_width=0))


@pytest.mark.parametrize('group', ['sl2', 'none'])
def test_input_padding_is_padding_with_empty_pixels(group):
    torch.manual_seed(0)
    padded = LieGroupResNet(group=group, **dict(TINY, input_pad=3)).double().eval()
    plain = LieGroupResNet(group=group, **TINY).double().eval()
    plain.load_state_dict(padded.state_dict())
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(padded(x), plain(torch.nn.functional.pad(x, (3,) * 4, value=-1.0)), rtol=0, atol=0)
        assert padded.forward_features(x).shape[-1] == 5 and plain.forward_features(x).shape[-1] == 2  # 22 vs 16 px
        padded(torch.randn(1, 1, 8, 8, dtype=torch.float64))  # 14 px after padding: the smallest size that runs
        with pytest.raises(ValueError, match='smaller than the minimum 8x8'):
            padded(torch.randn(1, 1, 7, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match='input_pad'):
        LieGroupResNet(group=group, input_pad=-1)


def test_small_configurations():
    for name in ('liegroup_sl2_small', 'liegroup_gl2_small', 'liegroup_cnn_small'):
        model = timm.create_model(name)
        assert model.input_pad == 8 and model.stem_pool
        assert model.pretrained_cfg['pool_size'] == model.forward_features(torch.zeros(1, 1, 40, 40)).shape[-2:]
        if model.sampler is not None:
            expected_range = 0.5 if model.group == 'gl2' else 0.25
            assert (model.sampler.rotation, model.sampler.rotation_range) == ('stratified', expected_range)
            assert all(m.signed_angle for m in model.modules() if isinstance(m, GroupConv2d))
            assert model.eval_spd == 'identity'
            assert model.num_features == 16 and model.stem.conv.out_chans == 8  # 16 invariant features, 8 elsewhere
            assert all(m.omegas == [1.0] * 3 for m in model.modules() if isinstance(m, KernelNet))  # folded
    # kernel_mlp options update the small defaults instead of replacing them
    model = timm.create_model('liegroup_sl2_small', kernel_mlp=dict(num_hidden=0))
    assert model.stem.conv.kernel_net.omegas == [1.0]
    unfolded = timm.create_model('liegroup_sl2_small', kernel_mlp=dict(fold_omega=False))
    assert unfolded.stem.conv.kernel_net.omegas[0] == 10


def test_fold_omega_keeps_the_function_and_slows_the_phases():
    # Folding omega into the sine weights gives the same kernels at init; Adam's first step (about lr * sign(grad)
    # per weight) then moves the first layer's phases omega = 10 times less far.
    x = torch.rand(64, 5) * 2 - 1
    nets = []
    for fold in (False, True):
        torch.manual_seed(0)
        nets.append(KernelNet(5, 6, fan_in=10, hidden=16, fold_omega=fold))
    torch.testing.assert_close(nets[0](x), nets[1](x))
    phase_steps = []
    for net in nets:
        before = net.omegas[0] * net.layers[0](x).detach()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net(x).square().sum().backward()
        opt.step()
        phase_steps.append((net.omegas[0] * net.layers[0](x).detach() - before).abs().mean().item())
    assert phase_steps[1] == pytest.approx(phase_steps[0] / 10, rel=1e-3)


def test_bad_input_is_named():
    model = tiny_model('sl2')
    with pytest.raises(ValueError, match='expected 1 input channels, got 3'):
        model(torch.randn(1, 3, 24, 24, dtype=torch.float64))
    with pytest.raises(ValueError, match='smaller than the minimum 14x14'):
        model(torch.randn(1, 1, 13, 13, dtype=torch.float64))
    with pytest.raises(ValueError, match="group must be"):
        LieGroupResNet(group='so2')
