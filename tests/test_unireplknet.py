"""UniRepLKNet: architecture, official weights (golden fixtures), structural reparameterization, bad input."""
import logging
import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timm.models import group_parameters
from timm.utils import reparameterize_model

import kernels
import zoo  # noqa: F401
from zoo.models.unireplknet import GlobalResponseNorm, UniRepLKNet, checkpoint_filter_fn

FIXTURES = Path(__file__).parent / 'fixtures' / 'unireplknet'
VARIANTS = ['unireplknet_a', 'unireplknet_f', 'unireplknet_p', 'unireplknet_n', 'unireplknet_t', 'unireplknet_s',
            'unireplknet_b', 'unireplknet_l', 'unireplknet_xl']

# Reduced configurations the fixtures were made with (see tests/fixtures/README.md), built through a registered
# name: 'mixed' has every block type (3x3, 5x5, no dw conv, a Dilated Reparam Block of every size 7..17),
# 'nols' has no layer scale and several blocks per stage.
FIXTURE_CFGS = {
    'mixed': dict(depths=(1, 1, 8, 1), dims=(8, 8, 8, 8),
                  kernel_sizes=((3,), (13,), (17, 3, 15, 11, 9, 7, 5, 0), (13,)), num_classes=10),
    'nols': dict(depths=(2, 1, 2, 1), dims=(4, 4, 8, 8), kernel_sizes=((3, 5), (7,), (13, 3), (11,)), num_classes=7,
                 layer_scale_init_value=0),
}
FIXTURE_FILES = {'mixed': 'mixed_train.safetensors', 'nols': 'nols_train.pth'}  # nols is wrapped {'model': ...}

# Paper / README parameter counts (M): training form, deploy form; official state-dict key counts.
PARAMS = {
    'unireplknet_a': (4.65, 4.44), 'unireplknet_f': (6.49, 6.24), 'unireplknet_p': (11.08, 10.74),
    'unireplknet_n': (18.82, 18.32), 'unireplknet_t': (31.69, 31.04), 'unireplknet_s': (56.46, 55.65),
    'unireplknet_b': (99.09, 98.01), 'unireplknet_l': (220.08, 218.45), 'unireplknet_xl': (388.69, 386.53),
}
KEYS = {'unireplknet_a': (626, 156), 'unireplknet_n': (738, 178), 'unireplknet_t': (1116, 321),
        'unireplknet_s': (1305, 420)}

OFFICIAL_FILES = {
    'unireplknet_a_in1k_224_acc77.03.pth', 'unireplknet_f_in1k_224_acc78.58.pth',
    'unireplknet_p_in1k_224_acc80.23.pth', 'unireplknet_n_in1k_224_acc81.64.pth',
    'unireplknet_t_in1k_224_acc83.21.pth', 'unireplknet_s_in1k_224_acc83.91.pth',
    'unireplknet_s_in22k_pretrain.pth', 'unireplknet_s_in22k_to_in1k_384_acc86.44.pth',
    'unireplknet_b_in22k_pretrain.pth', 'unireplknet_b_in22k_to_in1k_384_acc87.40.pth',
    'unireplknet_l_in22k_pretrain.pth', 'unireplknet_l_in22k_to_in1k_384_acc87.88.pth',
    'unireplknet_xl_in22k_pretrain.pth', 'unireplknet_xl_in22k_to_in1k_384_acc87.96.pth',
}
pytestmark = pytest.mark.usefixtures('one_thread')  # see conftest.py


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _fixture_io(tag):
    io = load_file(FIXTURES / f'{tag}_io.safetensors')
    return io['input'].float(), io['logits'], io['logits_deploy']


def _from_fixture(tag, file=None, num_classes=None, cfg_classes=None, **kwargs):
    cfg = dict(FIXTURE_CFGS[tag], **kwargs)
    if num_classes is not None:
        cfg['num_classes'] = num_classes
    overlay = dict(file=str(FIXTURES / (file or FIXTURE_FILES[tag])),
                   num_classes=cfg_classes or FIXTURE_CFGS[tag]['num_classes'])
    return timm.create_model('unireplknet_s', pretrained=True, pretrained_cfg_overlay=overlay, **cfg).eval()


def _randomize(model, seed=0):
    """Non-trivial weights and BN statistics, so that every fold in the reparameterization matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() in (2, 4) and not name.endswith(('act.1.gamma', 'act.1.beta')):
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
            else:
                p.copy_(0.5 + 0.3 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.2 * torch.randn(b.shape, generator=g))
            elif name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
    return model.eval()


# ------------------------------------------------------------------------------------------------ architecture

@pytest.mark.parametrize('name', VARIANTS)
def test_param_counts_match_paper(name):
    train = timm.create_model(name, device='meta')
    deploy = timm.create_model(name, deploy=True, device='meta')
    count = lambda m: round(sum(p.numel() for p in m.parameters()) / 1e6, 2)  # noqa: E731
    assert (count(train), count(deploy)) == PARAMS[name]
    if name in KEYS:
        assert (len(train.state_dict()), len(deploy.state_dict())) == KEYS[name]
    assert not train.deploy and deploy.deploy


def test_official_kernel_layout():
    model = timm.create_model('unireplknet_t', device='meta')
    ks = model.kernel_sizes
    assert ks[0] == (3, 3, 3) and ks[1] == ks[3] == (13, 13, 13) and ks[2] == (13, 3) * 9
    keys = model.state_dict().keys()
    for k, r in [(5, 1), (7, 2), (3, 3), (3, 4), (3, 5)]:  # K=13 branches
        assert f'stages.1.0.dwconv.dil_conv_k{k}_{r}.weight' in keys
    assert 'stages.0.0.dwconv.weight' in keys and 'stages.0.0.dwconv.bias' not in keys  # SmaK: no bias
    assert 'stages.2.1.dwconv.weight' in keys  # the 3x3 blocks of stage 3


def test_bad_arguments():
    with pytest.raises(ValueError, match='no official kernel sizes'):
        timm.create_model('unireplknet_a', depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match='kernel size must be one of'):
        timm.create_model('unireplknet_a', depths=(1, 1, 1, 1), dims=(8, 8, 8, 8),
                          kernel_sizes=((3,), (4,), (3,), (3,)))
    with pytest.raises(ValueError, match='do not match depths'):
        timm.create_model('unireplknet_a', kernel_sizes=((3,), (13,), (13,), (13,)))
    with pytest.raises(ValueError, match='kernel_backend'):
        timm.create_model('unireplknet_a', kernel_backend='cuda')


def test_default_cfgs_cover_every_official_file():
    files = set()
    for name in VARIANTS:
        tags = timm.list_pretrained(f'{name}.*')
        assert tags, name
        for tag in tags:
            cfg = timm.models.get_pretrained_cfg(tag).to_dict()
            assert cfg['hf_hub_id'] == 'DingXiaoH/UniRepLKNet' and cfg['url'].endswith(cfg['hf_hub_filename'])
            assert cfg['license'] == 'apache-2.0' and cfg['paper_ids'] == 'arXiv:2311.15599'
            files.add(cfg['hf_hub_filename'])
            size = cfg['input_size'][-1]
            assert cfg['pool_size'] == (size // 32, size // 32)
            if 'in22k' in cfg['hf_hub_filename'] and 'to_in1k' not in cfg['hf_hub_filename']:
                assert cfg['num_classes'] == 21841
                assert size == (192 if name in ('unireplknet_l', 'unireplknet_xl') else 224)
            elif '384' in cfg['hf_hub_filename']:
                assert cfg['num_classes'] == 1000 and size == 384 and cfg['crop_pct'] == 1.0
            else:
                assert cfg['num_classes'] == 1000 and size == 224 and cfg['crop_pct'] == 0.875
        # the default tag of every name is a 1000-class model
        assert timm.models.get_pretrained_cfg(name).num_classes == 1000
    assert files == OFFICIAL_FILES


def test_group_matcher_stage_order():
    model = timm.create_model('unireplknet_a', **FIXTURE_CFGS['nols'])
    groups = group_parameters(model, model.group_matcher())
    names = [n for group in groups.values() for n in group]
    assert len(names) == len(list(model.parameters()))
    first = next(iter(groups.values()))
    assert all(n.startswith('downsample_layers.0.') for n in first)  # the stem comes first
    # the downsampling layer in front of stage 2 shares the group of that stage's first block
    group_of = {n: gid for gid, group in groups.items() for n in group}
    assert group_of['downsample_layers.2.0.weight'] == group_of['stages.2.0.pwconv1.1.weight']


def test_features_only_and_intermediates():
    model = timm.create_model('unireplknet_a', features_only=True, **FIXTURE_CFGS['mixed']).eval()
    x = torch.randn(1, 3, 45, 45)
    feats = model(x)
    assert [f.shape[1] for f in feats] == model.feature_info.channels() == [8, 8, 8, 8]
    assert [f.shape[-1] for f in feats] == [12, 6, 3, 2]
    full = timm.create_model('unireplknet_a', **FIXTURE_CFGS['mixed']).eval()
    final, inter = full.forward_intermediates(x, indices=[1, -1])
    assert torch.equal(final, full.forward_features(x)) and [t.shape[-1] for t in inter] == [6, 2]


def test_kernel_backend_routes_depthwise_convs():
    model = timm.create_model('unireplknet_a', kernel_backend='torch', **FIXTURE_CFGS['mixed']).eval()
    with torch.no_grad(), kernels.record_calls() as recorded:
        model(torch.randn(1, 3, 32, 32))
    calls = [(info['weight'][-1], info['dilation'][0], info['backend']) for op, info in recorded if op == 'dwconv2d']
    assert {b for _, _, b in calls} == {'torch'}
    assert (17, 1, 'torch') in calls and (9, 2, 'torch') in calls and (3, 7, 'torch') in calls


# ------------------------------------------------------------------------------------- official weights (golden)

@pytest.mark.parametrize('tag', ['mixed', 'nols'])
def test_golden_official_training_form(tag):
    x, logits, _ = _fixture_io(tag)
    model = _from_fixture(tag)
    with torch.no_grad():
        assert _rel_err(model(x), logits) < 1e-5


def test_golden_official_deploy_form():
    x, _, logits_deploy = _fixture_io('mixed')
    model = _from_fixture('mixed', file='mixed_deploy.safetensors', deploy=True)
    assert model.deploy
    with torch.no_grad():
        assert _rel_err(model(x), logits_deploy) < 1e-5


@pytest.mark.parametrize('tag', ['mixed', 'nols'])
def test_training_checkpoint_into_deploy_model(tag):
    """A training-form official file is reparameterized on load when the model is built with deploy=True."""
    x, logits, logits_deploy = _fixture_io(tag)
    model = _from_fixture(tag, deploy=True)
    assert model.deploy
    with torch.no_grad():
        y = model(x)
    assert _rel_err(y, logits_deploy) < 1e-5 and _rel_err(y, logits) < 1e-5


def test_deploy_checkpoint_into_training_model_fails():
    with pytest.raises(ValueError, match='deploy'):
        _from_fixture('mixed', file='mixed_deploy.safetensors')


def test_checkpoint_of_another_variant_fails():
    with pytest.raises(ValueError, match=r"dims \(8, 8, 8, 8\), depths \(1, 1, 8, 1\)"):
        _from_fixture('mixed', **{k: v for k, v in FIXTURE_CFGS['nols'].items() if k != 'num_classes'},
                      num_classes=10)
    with pytest.raises(ValueError, match='shapes do not match'):  # same keys, other widths
        _from_fixture('mixed', dims=(8, 8, 8, 16))
    with pytest.raises(ValueError, match='shapes do not match'):  # also on the way to a deploy-form model
        _from_fixture('mixed', dims=(8, 8, 8, 16), deploy=True)


def test_foreign_head_is_dropped_with_a_warning(caplog):
    """Like a 21841-class ImageNet-22K file into a 1000-class model: backbone loaded, head dropped, logged."""
    x, _, _ = _fixture_io('mixed')
    reference = _from_fixture('mixed')
    # the cfg says 10 classes, the model asks for 5: timm's own loader drops the classifier
    model = _from_fixture('mixed', num_classes=5)
    # the cfg (wrongly) says 5 classes: the filter notices the checkpoint's 10-class head, drops it and says so
    with caplog.at_level(logging.WARNING):
        lying = _from_fixture('mixed', num_classes=5, cfg_classes=5)
    assert 'classifier was dropped' in caplog.text
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        for m in (model, lying):
            assert m(x).shape == (2, 5)
            assert torch.allclose(m.forward_head(m.forward_features(x), pre_logits=True), expected)


# The reduced official dense-prediction backbone of backbone_det.pth (tests/fixtures/README.md).
BACKBONE_CFG = dict(depths=(1, 1, 2, 1), dims=(4, 8, 8, 16), kernel_sizes=((3,), (9,), (13, 5), (7,)))


def _backbone_io():
    io = load_file(FIXTURES / 'backbone_io.safetensors')
    return io['input'].float(), [io[f'features_{i}'] for i in range(4)]


def _from_detection_checkpoint(**kwargs):
    overlay = dict(file=str(FIXTURES / 'backbone_det.pth'))
    return timm.create_model('unireplknet_a', pretrained=True, pretrained_cfg_overlay=overlay,
                             **BACKBONE_CFG, **kwargs).eval()


@pytest.mark.parametrize('deploy', [False, True])
def test_detection_checkpoint_stage_norms_reproduce_official_features(deploy, caplog):
    """features_only with stage_norms=True is the official dense-prediction backbone: an official detection /
    segmentation checkpoint ({'state_dict': {'backbone.*', 'neck.*', ...}}) loads its norm0..3 and the four feature
    maps match the official ones (also reparameterized on the way into a deploy-form model)."""
    x, expected = _backbone_io()
    model = _from_detection_checkpoint(features_only=True, stage_norms=True, deploy=deploy)
    assert model.feature_info.channels() == [4, 8, 8, 16]
    with torch.no_grad():
        feats = model(x)
    assert [f.shape for f in feats] == [f.shape for f in expected]
    assert max(_rel_err(f, e) for f, e in zip(feats, expected)) < 1e-5
    # the same outputs from a full model's forward_intermediates
    full = _from_detection_checkpoint(stage_norms=True, deploy=deploy)
    assert 'norm3.weight' in full.state_dict()
    with torch.no_grad():
        inter = full.forward_intermediates(x, intermediates_only=True)
    assert max(_rel_err(f, e) for f, e in zip(inter, expected)) < 1e-5


def test_stage_norms_absent_or_fresh_are_reported(caplog):
    x, expected = _backbone_io()
    with caplog.at_level(logging.WARNING):
        plain = _from_detection_checkpoint(features_only=True)
    assert 'stage_norms=True' in caplog.text and 'norm0..3' in caplog.text
    with torch.no_grad():
        feats = plain(x)  # raw stage outputs: the official features before their norms
    assert _rel_err(feats[0], expected[0]) > 0.1
    # they are the official features before the official norms
    sd = torch.load(FIXTURES / 'backbone_det.pth', weights_only=True)['state_dict']
    normed = [F.layer_norm(f.permute(0, 2, 3, 1), f.shape[1:2], sd[f'backbone.norm{i}.weight'],
                           sd[f'backbone.norm{i}.bias'], eps=1e-6).permute(0, 3, 1, 2) for i, f in enumerate(feats)]
    assert max(_rel_err(f, e) for f, e in zip(normed, expected)) < 1e-5

    caplog.clear()
    with caplog.at_level(logging.WARNING):  # a classification checkpoint has no stage norms
        model = _from_fixture('mixed', stage_norms=True, features_only=True)
    assert 'lacks the per-stage output norms' in caplog.text
    norm2 = model.model.norm2  # features_only wraps the model
    assert torch.equal(norm2.weight, torch.ones(8)) and torch.equal(norm2.bias, torch.zeros(8))
    with pytest.raises(ValueError, match='stage norm shapes'):
        sd = torch.load(FIXTURES / 'backbone_det.pth', weights_only=True)
        sd['state_dict']['backbone.norm1.weight'] = torch.ones(3)
        checkpoint_filter_fn(sd, timm.create_model('unireplknet_a', stage_norms=True, **BACKBONE_CFG))


def test_stage_norms_pruned_with_their_stages():
    model = timm.create_model('unireplknet_a', stage_norms=True, **BACKBONE_CFG).eval()
    assert [f'norm{i}.weight' in model.state_dict() for i in range(4)] == [True] * 4
    model.prune_intermediate_layers(indices=[0, 1])
    assert [hasattr(model, f'norm{i}') for i in range(4)] == [True, True, False, False]
    with torch.no_grad():
        feats = model.forward_intermediates(torch.randn(1, 3, 32, 32), indices=[0, 1], intermediates_only=True)
    assert [f.shape[1] for f in feats] == [4, 8]


def test_filter_unwraps_official_wrappers():
    model = timm.create_model('unireplknet_a', **FIXTURE_CFGS['mixed'])
    sd = load_file(FIXTURES / 'mixed_train.safetensors')
    for wrapped in ({'model': sd}, {'state_dict': {f'module.{k}': v for k, v in sd.items()}}):
        out = checkpoint_filter_fn(wrapped, model)
        assert out.keys() == model.state_dict().keys()


# ------------------------------------------------------------------------------ structural reparameterization

@pytest.mark.parametrize('name,cfg', [
    ('unireplknet_a', {}),  # the real A (64 px)
    ('unireplknet_s', dict(FIXTURE_CFGS['mixed'], layer_scale_init_value=1e-6)),
    ('unireplknet_s', FIXTURE_CFGS['nols']),
])
def test_reparameterize_model_equal_outputs(name, cfg):
    model = _randomize(timm.create_model(name, **cfg))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        deployed = reparameterize_model(model)  # timm's utility, a copy
        assert deployed.deploy and not model.deploy
        assert _rel_err(deployed(x), y) < 1e-5
        # the reparameterized state dict loads strictly into a model built with deploy=True
        direct = timm.create_model(name, deploy=True, **cfg).eval()
        direct.load_state_dict(deployed.state_dict(), strict=True)
        assert _rel_err(direct(x), y) < 1e-5
        # idempotent, and the official method name works in place
        model.reparameterize_unireplknet()
        model.reparameterize_unireplknet()
        assert _rel_err(model(x), y) < 1e-5


@pytest.mark.slow
def test_torchscript_both_forms():
    model = _randomize(timm.create_model('unireplknet_a', **FIXTURE_CFGS['mixed']))
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        y = model(x)
        assert torch.allclose(torch.jit.script(model)(x), y, atol=1e-6)
        deployed = reparameterize_model(model)
        assert torch.allclose(torch.jit.script(deployed)(x), y, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------ mixed precision

def test_grn_statistics_do_not_overflow_in_fp16():
    grn = GlobalResponseNorm(8)
    with torch.no_grad():
        grn.gamma.fill_(0.5)
        grn.beta.fill_(0.1)
    x = torch.full((1, 97, 97, 8), 1000.)  # spatial L2 norm 97000 > fp16 max (65504)
    y16 = grn(x.half())
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    assert torch.allclose(y16.float(), grn(x), rtol=1e-3)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('size', [97, 225])
def test_autocast_odd_resolutions_finite(dtype, size):
    model = timm.create_model('unireplknet_a', **FIXTURE_CFGS['mixed']).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=dtype):
            y = model(x)
    assert torch.isfinite(y).all()
    assert torch.allclose(y.float(), ref, atol=0.05 * ref.abs().max().item())


def test_autocast_real_variant_finite():
    model = timm.create_model('unireplknet_a').eval()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        y = model(torch.randn(1, 3, 97, 97))
    assert torch.isfinite(y).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_triton_backend_matches_torch_on_gpu():
    cfg = dict(FIXTURE_CFGS['mixed'])
    ref = _randomize(timm.create_model('unireplknet_a', kernel_backend='torch', **cfg)).cuda()
    fast = timm.create_model('unireplknet_a', kernel_backend='triton', **cfg).cuda().eval()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64, device='cuda')
    with torch.no_grad():
        assert _rel_err(fast(x), ref(x)) < 1e-4
