"""InceptionNeXt: weights interchangeable with the official release and timm, kernel backends, cfgs."""
from pathlib import Path

import pytest
import timm
import torch

FIXTURE = Path(__file__).parent / 'fixtures' / 'inceptionnext' / 'official_reduced.pt'
REDUCED = dict(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64), num_classes=10)


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize('mixer', ['atto_mixer', 'tiny_mixer'])
def test_official_weights_reproduce_official_logits(official, mixer, tmp_path):
    """A state dict saved by the official sail-sg MetaNeXt loads through timm's pretrained path, no filter."""
    case = official[mixer]
    path = tmp_path / 'official.pth'
    torch.save(case['state_dict'], path)
    # The overlay's num_classes must match the file's head, otherwise timm drops the classifier on purpose.
    overlay = dict(file=str(path), num_classes=10)
    model = timm.create_model('inceptionnext_tiny', pretrained=True, pretrained_cfg_overlay=overlay,
                              **REDUCED, **case['mixer']).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(case['input']), case['logits'], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('variant', ['atto', 'tiny'])
def test_state_dicts_interchange_with_timm(variant):
    torch.manual_seed(0)
    ours = timm.create_model(f'inceptionnext_{variant}').eval()
    theirs = timm.create_model(f'inception_next_{variant}').eval()
    theirs.load_state_dict(ours.state_dict())  # strict: same keys and shapes
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    torch.manual_seed(1)
    theirs = timm.create_model(f'inception_next_{variant}').eval()
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_dilated_mixer_matches_timm_at_output_stride_16():
    torch.manual_seed(0)
    ours = timm.create_model('inceptionnext_atto', output_stride=16).eval()
    theirs = timm.create_model('inception_next_atto', output_stride=16).eval()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_triton_backend_matches_torch_backend():
    """The fused Inception kernel (Triton's interpreter on the CPU) against the reference, through the model."""
    pytest.importorskip('triton')
    torch.manual_seed(0)
    ref = timm.create_model('inceptionnext_atto', kernel_backend='torch', **REDUCED).eval()
    fused = timm.create_model('inceptionnext_atto', kernel_backend='triton', **REDUCED).eval()
    fused.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-4, atol=1e-4)


def test_pretrained_cfgs_point_at_the_official_weights():
    timm_tags = set(timm.list_pretrained('inception_next_*'))
    for name in timm.list_pretrained('inceptionnext_*'):
        cfg = timm.get_pretrained_cfg(name)
        # timm's HF mirror holds the official tensors under its own name; the release URL is the original.
        assert cfg.hf_hub_id.removeprefix('timm/') in timm_tags
        assert cfg.url.startswith('https://github.com/sail-sg/inceptionnext/releases/download/model/')
        assert cfg.classifier == 'head.fc2' and cfg.paper_ids == 'arXiv:2303.16900'
    assert timm.get_pretrained_cfg('inceptionnext_base.sail_in1k_384').input_size == (3, 384, 384)


def test_base_384_is_a_model_name_and_a_tag_of_base():
    """The official name `inceptionnext_base_384` and timm-style tag `inceptionnext_base.sail_in1k_384` build the
    same network with the same weights source and preprocessing."""
    by_name = timm.get_pretrained_cfg('inceptionnext_base_384').to_dict()
    by_tag = timm.get_pretrained_cfg('inceptionnext_base.sail_in1k_384').to_dict()
    for key in ('url', 'hf_hub_id', 'input_size', 'pool_size', 'crop_pct', 'interpolation', 'mean', 'std',
                'num_classes', 'first_conv', 'classifier', 'license'):
        assert by_name[key] == by_tag[key], key
    assert by_name['input_size'] == (3, 384, 384) and by_name['pool_size'] == (12, 12) and by_name['crop_pct'] == 1.0
    assert by_name['url'].endswith('/inceptionnext_base_384.pth')
    assert by_name['hf_hub_id'] == 'timm/inception_next_base.sail_in1k_384'
    assert 'inceptionnext_base_384' in timm.list_models('inceptionnext_*', pretrained=False)
    on_meta = [timm.create_model(name, device='meta') for name in ('inceptionnext_base_384', 'inceptionnext_base')]
    assert [{k: v.shape for k, v in m.state_dict().items()} for m in on_meta].count(
        {k: v.shape for k, v in on_meta[1].state_dict().items()}) == 2
    assert on_meta[0].pretrained_cfg['input_size'] == (3, 384, 384)


def test_bad_kernel_backend_is_rejected():
    with pytest.raises(ValueError, match="kernel_backend must be one of"):
        timm.create_model('inceptionnext_atto', kernel_backend='cuda')
