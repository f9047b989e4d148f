"""Sequence-model contract over every sequence model the zoo registers, plus the LRA recipes and input errors."""
import pytest
import timm
import torch
from timm.models import group_parameters

import kernels
from zoo.models import sequence_model_names
from zoo.models.s4d import S4D
from zoo.models.seqnet import SeqNet
from zoo.models.sgconv import SGConv

SEQUENCE_MODELS = sequence_model_names()
SMALL = dict(embed_dim=16, depth=2)


def _small(name, **kwargs):
    layer_kwargs = {'d_state': 8} if name.startswith('s4d') else {}
    return timm.create_model(name, **SMALL, layer_kwargs=layer_kwargs, **kwargs)


def _input(model, batch=2, length=24, generator=None):
    """A small valid input and its lengths, as the model's cfg describes it."""
    g = generator or torch.Generator().manual_seed(0)
    if model.vocab_size is not None:
        shape = (batch, 2, length) if model.num_docs == 2 else (batch, length)
        x = torch.randint(0, model.vocab_size, shape, generator=g)
        lengths = torch.randint(1, length + 1, shape[:-1], generator=g)
        return x, lengths
    return torch.randn(batch, model.in_chans, 4, length // 4, generator=g), None


def test_registry_lists_both_families():
    assert {n.split('_lra_')[0] for n in SEQUENCE_MODELS} == {'s4d', 'sgconv'}
    for family in ('s4d', 'sgconv'):
        assert {f'{family}_lra_{t}' for t in ('listops', 'text', 'retrieval', 'image', 'pathfinder', 'pathx')} \
            <= set(SEQUENCE_MODELS)


@pytest.mark.parametrize('name', SEQUENCE_MODELS)
def test_default_cfg_describes_the_input(name):
    model = _small(name)
    cfg = model.pretrained_cfg
    assert cfg['num_classes'] == model.num_classes > 0
    assert cfg['description']
    if model.vocab_size is not None:
        assert cfg['input_size'] == ((2, model.seq_len) if model.num_docs == 2 else (model.seq_len,))
        assert 'token ids' in cfg['description']
    else:
        C, H, W = cfg['input_size']
        assert C == model.in_chans and H * W == model.seq_len
    state = model.state_dict()
    assert cfg['first_conv'] + '.weight' in state and cfg['classifier'] + '.weight' in state


@pytest.mark.parametrize('name', SEQUENCE_MODELS)
def test_head_api_and_shapes(name):
    torch.manual_seed(0)
    model = _small(name).eval()
    x, lengths = _input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == ((2, 2, 24, 16) if model.num_docs == 2 else (2, 24, 16))
        logits = model(x, lengths=lengths)
        assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
        torch.testing.assert_close(model.forward_head(feats, lengths), logits)
        assert model.forward_head(feats, lengths, pre_logits=True).shape == (2, model.head_hidden_size)
        assert model.num_features == model.head_hidden_size == 16
        assert model.get_classifier() is model.head

        model.reset_classifier(5)
        assert model(x, lengths).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x, lengths).shape == (2, model.head_hidden_size)
        other = 'last' if model.global_pool == 'avg' else 'avg'
        model.reset_classifier(3, other)
        assert model.global_pool == other and model(x, lengths).shape == (2, 3)


@pytest.mark.parametrize('name', SEQUENCE_MODELS)
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = _small(name, num_classes=7).train()
    x, lengths = _input(model)
    out = model(x, lengths)
    assert out.shape == (2, 7)
    out.mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize('name', ['s4d_lra_text', 'sgconv_lra_retrieval', 'sgconv_lra_image'])
def test_grad_checkpointing_keeps_outputs(name):
    torch.manual_seed(0)
    model = _small(name).eval()
    x, lengths = _input(model)
    with torch.no_grad():
        expected = model(x, lengths)
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x, lengths), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.triton
@pytest.mark.parametrize('name', ['s4d_lra_text', 'sgconv_lra_image'])
def test_triton_backend_matches_torch(name):
    torch.manual_seed(0)
    reference = _small(name, kernel_backend='torch').eval()
    triton = _small(name, kernel_backend='triton').eval()
    triton.load_state_dict(reference.state_dict())
    x, lengths = _input(reference, length=16)
    torch.testing.assert_close(triton(x, lengths), reference(x, lengths), rtol=1e-4, atol=1e-5)


def test_pooling_over_valid_positions():
    torch.manual_seed(0)
    model = _small('s4d_lra_text', num_classes=0).eval()
    feats = torch.randn(3, 10, 16)
    lengths = torch.tensor([10, 4, 1])
    pooled = model.forward_head(feats, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(pooled[i], feats[i, :n].mean(0))
    model.reset_classifier(0, 'last')
    last = model.forward_head(feats, lengths)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(last[i], feats[i, n - 1])
    torch.testing.assert_close(model.forward_head(feats), feats[:, -1])


def test_retrieval_head_combines_the_two_documents():
    torch.manual_seed(0)
    model = _small('s4d_lra_retrieval').eval()
    feats = torch.randn(2, 2, 6, 16)
    lengths = torch.tensor([[6, 3], [2, 5]])
    a = torch.stack([feats[0, 0, :6].mean(0), feats[1, 0, :2].mean(0)])
    b = torch.stack([feats[0, 1, :3].mean(0), feats[1, 1, :5].mean(0)])
    expected = model.head(model.pre_logits(torch.cat((a, b, a - b, a * b), dim=-1)))
    torch.testing.assert_close(model.forward_head(feats, lengths), expected)
    assert model.pre_logits[0].weight.shape == (16, 64)


def test_pixel_models_read_images_and_sequences_alike():
    model = _small('sgconv_lra_pathfinder').eval()
    image = torch.randn(2, 1, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(model(image), model(image.flatten(2).transpose(1, 2)))


def test_bad_inputs_raise_clear_errors():
    tokens = _small('s4d_lra_listops')
    with pytest.raises(ValueError, match=r'\[0, 20\)'):
        tokens(torch.tensor([[1, 2, 20]]))
    with pytest.raises(ValueError, match=r'\[0, 20\)'):
        tokens(torch.tensor([[1, -1, 2]]))
    with pytest.raises(ValueError, match='integer token ids'):
        tokens(torch.randn(1, 5))
    with pytest.raises(ValueError, match='exceeds the model'):
        tokens(torch.zeros(1, 2049, dtype=torch.long))
    with pytest.raises(ValueError, match='lengths must have shape'):
        tokens(torch.zeros(2, 5, dtype=torch.long), lengths=torch.tensor([[1, 2]]))
    with pytest.raises(ValueError, match=r'lengths must lie in \[1, 5\]'):
        tokens(torch.zeros(2, 5, dtype=torch.long), lengths=torch.tensor([3, 6]))
    with pytest.raises(ValueError, match='integer token ids of shape'):
        _small('sgconv_lra_retrieval')(torch.zeros(2, 5, dtype=torch.long))
    pixels = _small('s4d_lra_image')
    with pytest.raises(ValueError, match='expected 1 input channels'):
        pixels(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match='exceeds the model'):
        pixels(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='exactly one of vocab_size'):
        SeqNet(vocab_size=10, in_chans=1)


def test_optimizer_hints_reach_the_training_side():
    model = _small('s4d_lra_listops')
    assert {'blocks.0.layer.kernel.log_dt', 'blocks.0.layer.kernel.A_imag', 'blocks.0.layer.kernel.B'} \
        <= model.no_weight_decay()
    assert model.blocks[0].layer.kernel.log_dt._optim == {'weight_decay': 0.0}  # dt at the global lr (v3)
    assert model.blocks[0].layer.kernel.log_A_real._optim == {'lr': 1e-3, 'weight_decay': 0.0}
    groups = group_parameters(model, model.group_matcher())
    assert len(groups) == 1 + len(model.blocks) + 1  # encoder, blocks, final norm + head


@pytest.mark.slow
def test_published_lra_sizes():
    expected = {  # name: (depth, width, norm, prenorm, pool, seq_len)
        's4d_lra_listops': (8, 128, 'BatchNorm1d', False, 'avg', 2048),
        's4d_lra_text': (6, 256, 'BatchNorm1d', True, 'avg', 4096),
        's4d_lra_retrieval': (6, 256, 'BatchNorm1d', True, 'avg', 4000),
        's4d_lra_image': (6, 512, 'ChannelLayerNorm', False, 'avg', 1024),
        's4d_lra_pathfinder': (6, 256, 'BatchNorm1d', True, 'last', 1024),
        's4d_lra_pathx': (6, 256, 'BatchNorm1d', True, 'avg', 16384),
        'sgconv_lra_listops': (8, 128, 'BatchNorm1d', False, 'avg', 2048),
        'sgconv_lra_image': (6, 512, 'ChannelLayerNorm', False, 'avg', 1024),
        'sgconv_lra_pathx': (6, 256, 'BatchNorm1d', True, 'avg', 16384),
    }
    for name, (depth, width, norm, prenorm, pool, seq_len) in expected.items():
        model = timm.create_model(name)
        block = model.blocks[0]
        assert (len(model.blocks), model.embed_dim, type(block.norm).__name__, block.prenorm, model.global_pool,
                model.seq_len) == (depth, width, norm, prenorm, pool, seq_len), name
        layer = block.layer
        assert layer.bidirectional and isinstance(layer.output_linear[1], torch.nn.GLU)
        if isinstance(layer, S4D):
            assert layer.kernel.d_state == 64 and layer.kernel.disc == 'bilinear'
        else:
            assert isinstance(layer, SGConv)
    s4d_image = timm.create_model('s4d_lra_image').blocks[0]
    assert s4d_image.layer.kernel.n_ssm == 2 and s4d_image.drop.p == 0.1
    assert timm.create_model('s4d_lra_pathx').blocks[0].layer.kernel.log_dt.exp().min() < 1e-3
    sg_pathx = timm.create_model('sgconv_lra_pathx').blocks[0].layer
    assert (sg_pathx.num_scales, sg_pathx.kernel_dim, sg_pathx.init_scale, sg_pathx.mode) == (8, 64, 1, 'cat_cos')
    assert timm.create_model('sgconv_lra_listops').blocks[0].layer.num_scales == 12


def test_pretrained_file_loads_through_timm(tmp_path):
    """Trained weights load like any timm model's: a `file` overlay, a different num_classes drops the classifier."""
    torch.manual_seed(0)
    model = _small('sgconv_lra_text').eval()
    path = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), path)
    loaded = _small('sgconv_lra_text', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x, lengths = _input(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths), model(x, lengths))
    assert _small('sgconv_lra_text', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                  num_classes=5)(x, lengths).shape == (2, 5)
    with pytest.raises(RuntimeError, match='No pretrained weights'):
        timm.create_model('s4d_lra_listops', pretrained=True)
