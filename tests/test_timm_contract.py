"""The timm model contract, checked for every image model the zoo registers (after timm's tests/test_models.py).

Inputs are shrunk to at most MAX_SIZE pixels (unless a model's input size is fixed) so the suite runs on a CPU.
The default run checks the smallest variant of each family; the largest ones are `slow` (run by `pytest -m slow`,
and by CI); the variants in between differ only in widths and depths and are `exhaustive` (`pytest -m exhaustive`). `python tests/timm_suite.py /path/to/pytorch-image-models` runs timm's own test file on every zoo image model.
"""
import math

import pytest
import timm
import torch
from timm.layers import create_feature_extractor, get_graph_node_names, set_scriptable

import zoo.models

# The smallest variant of each family (the Lie-group CPU configurations: one per group and the CNN baseline).
DEFAULT_RUN = ('inceptionnext_atto', 'unireplknet_a', 'liegroup_sl2_small', 'liegroup_gl2_small', 'liegroup_cnn_small')
# The largest variant of each family, and the Lie-group paper configurations.
SLOW_RUN = ('inceptionnext_base_384', 'unireplknet_xl', 'liegroup_sl2', 'liegroup_gl2', 'liegroup_cnn')
IMAGE_MODELS = [name if name in DEFAULT_RUN else
                pytest.param(name, marks=pytest.mark.slow if name in SLOW_RUN else pytest.mark.exhaustive)
                for name in zoo.models.image_model_names()]
MAX_SIZE = 64
ODD_SIZE = 37  # every model's features must keep feature_info's reductions at odd sizes too
# Models whose head pools before its MLP (timm's MetaNeXt): pooling cannot be switched off, as in timm.
EARLY_POOL_PREFIXES = ('inceptionnext_',)
REQUIRED_CFG_KEYS = ('num_classes', 'input_size', 'mean', 'std', 'crop_pct', 'interpolation', 'first_conv',
                     'classifier', 'license', 'origin_url', 'paper_ids')


def input_size(name: str) -> tuple[int, int, int]:
    cfg = timm.get_pretrained_cfg(name).to_dict()
    chans, h, w = cfg['input_size']
    if cfg.get('fixed_input_size'):
        return chans, h, w
    min_size = (cfg.get('min_input_size') or (chans, 32, 32))[-1]
    side = max(min(h, MAX_SIZE), min_size)
    return chans, side, side


def sample(name: str, batch: int = 1, side: int = None) -> torch.Tensor:
    torch.manual_seed(0)
    chans, h, w = input_size(name)
    return torch.randn(batch, chans, side or h, side or w)


def assert_reductions_hold(maps, reductions, size: int):
    for f, r in zip(maps, reductions):
        assert f.shape[-2] <= spatial_size(size, r) + 1 and f.shape[-1] <= spatial_size(size, r) + 1, \
            f"a map of {tuple(f.shape[-2:])} from {size}x{size} input exceeds reduction {r}"


def spatial_size(size: int, reduction: int) -> int:
    return math.ceil(size / reduction)


def build(name: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, **kwargs)


# Each test builds its model once and checks everything that instance can show: building the large variants
# dominates the suite's time on a CPU.

@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_cfg_forward_intermediates_checkpointing_and_fx(name):
    cfg = timm.get_pretrained_cfg(name).to_dict()
    missing = [k for k in REQUIRED_CFG_KEYS if cfg.get(k) in (None, '')]
    assert not missing, f"{name}: default cfg lacks {missing}"
    model = build(name).eval()
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state, f"first_conv {cfg['first_conv']} is not a module"
    assert cfg['classifier'] + '.weight' in state, f"classifier {cfg['classifier']} is not a module"
    assert model.num_classes == cfg['num_classes']
    assert model.num_features > 0 and model.head_hidden_size > 0

    x = sample(name)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        pre_logits = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
        final, intermediates = model.forward_intermediates(x, output_fmt='NCHW')
        last_only = model.forward_intermediates(x, indices=1, intermediates_only=True)
    assert out.shape == (1, model.num_classes) and torch.isfinite(out).all()
    torch.testing.assert_close(logits, out)
    assert feats.dim() == 4 and feats.shape[1] == model.num_features
    assert pre_logits.shape == (1, model.head_hidden_size)
    # forward_intermediates: its final output is forward_features, one intermediate per feature_info entry, each
    # no larger than its reduction allows (timm's check: ceil(size / reduction) + 1).
    torch.testing.assert_close(final, feats)
    assert [t.shape[1] for t in intermediates] == [info['num_chs'] for info in model.feature_info]
    assert len(last_only) == 1
    for size in (x.shape[-1], ODD_SIZE):
        with torch.no_grad():
            maps = model.forward_intermediates(sample(name, side=size), intermediates_only=True)
        assert_reductions_hold(maps, [info['reduction'] for info in model.feature_info], size)

    # Gradient checkpointing changes memory, not results.
    model.set_grad_checkpointing(True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.forward_intermediates(x)[0], feats, rtol=1e-4, atol=1e-5)
    model.set_grad_checkpointing(False)

    # torch.fx with timm's leaf modules / functions (what FeatureGraphNet and torchvision use): exactly eager.
    _, eval_nodes = get_graph_node_names(model)
    fx_model = create_feature_extractor(model, return_nodes=[eval_nodes[-1]])
    with torch.no_grad():
        traced = next(iter(fx_model(x).values()))
    torch.testing.assert_close(traced, out, rtol=0, atol=0)


@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_backward_then_reset_classifier(name):
    model = build(name, num_classes=42).train()
    model.set_grad_checkpointing(True)
    out = model(sample(name, batch=2))
    assert out.shape == (2, 42)
    out.mean().backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"{name}: no gradient for {pname}"
            assert p.grad.numel() == p.numel()
            assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"

    model.eval()
    x = sample(name, batch=2)
    model.reset_classifier(7)
    assert model.get_classifier().weight.shape[0] == 7
    with torch.no_grad():
        assert model(x).shape == (2, 7)
    model.reset_classifier(0)
    with torch.no_grad():
        assert model(x).shape == (2, model.head_hidden_size)
    if not name.startswith(EARLY_POOL_PREFIXES):
        model.reset_classifier(0, '')
        with torch.no_grad():
            unpooled = model(x)
        assert unpooled.dim() == 4 and unpooled.shape[1] == model.num_features


@pytest.mark.parametrize('name', IMAGE_MODELS)
@pytest.mark.parametrize('feature_cls', [None, 'getter'])
def test_features_only(name, feature_cls):
    model = build(name, features_only=True, **({'feature_cls': feature_cls} if feature_cls else {})).eval()
    info = model.feature_info
    assert len(info.channels()) >= 3
    for size in (input_size(name)[-1], ODD_SIZE):
        with torch.no_grad():
            feats = model(sample(name, side=size))
        assert len(feats) == len(info.channels())
        assert [f.shape[1] for f in feats] == info.channels()
        assert_reductions_hold(feats, info.reduction(), size)
        assert all(torch.isfinite(f).all() for f in feats)


@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_torchscript_and_fx_torchscript(name):
    # TorchScript runs the kernels' references and, for the Lie-group models, the fixed evaluation samples.
    with set_scriptable(True):
        model = build(name).eval()
    x = sample(name)
    with torch.no_grad():
        eager = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), eager, rtol=1e-4, atol=1e-5)
        _, eval_nodes = get_graph_node_names(model)
        fx_model = torch.jit.script(create_feature_extractor(model, return_nodes=[eval_nodes[-1]]))
        torch.testing.assert_close(next(iter(fx_model(x).values())), eager, rtol=1e-4, atol=1e-5)
