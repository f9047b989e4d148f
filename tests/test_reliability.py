"""Every bad input a clear error, every fault survived (issue 16).

1. A matrix of inputs and arguments over the smallest model of every family: each case ends in an exact output or
   an error whose message names the argument and the allowed values.
2. Weights and checkpoints: offline `pretrained=True`, unusable files (truncated, random, foreign, wrong shape,
   pickled code: never run), downloads cut short, checkpoints naming something other than a registered model.
3. Training faults through the real `train.py` (slow): SIGKILL mid-epoch and `ckpt_path=last`, a corrupted
   `last.ckpt`, two runs with one run_name, a missing dataset root.
4. Honest splits: no DataModule tests on data that selects checkpoints.
"""
import copy
import csv
import hashlib
import multiprocessing as mp
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import safetensors.torch
import timm
import torch

from zoo import weights
from zoo.lit import LitClassifier
from zoo.models._pretrained import WeightsError
from _http import serve

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------------ the models

# The smallest registered model of each family, narrowed and shortened where it is big (same code paths: every block
# type, the large-kernel blocks of UniRepLKNet included), so the matrix runs in seconds on a CPU.
TINY_SEQ = dict(depth=1, embed_dim=16, seq_len=64)
TINY_4STAGE = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10, in_chans=1)
IMAGE_MODELS = {  # name: (kwargs, input side)
    'inceptionnext_atto': (TINY_4STAGE, 32),
    'unireplknet_a': (dict(TINY_4STAGE, kernel_sizes=((3,), (13,), (13,), (3,))), 32),
    'liegroup_sl2_small': (dict(), 40),
    'liegroup_cnn_small': (dict(), 40),
}
TOKEN_MODELS = {'s4d_lra_listops': TINY_SEQ, 'sgconv_lra_listops': TINY_SEQ}
PIXEL_MODELS = {'s4d_lra_image': TINY_SEQ, 'sgconv_lra_image': TINY_SEQ}
# The smallest minimum side each image model accepts (and why it is what it is).
MIN_SIDE = {'inceptionnext_atto': 32, 'unireplknet_a': 1, 'liegroup_sl2_small': 8, 'liegroup_cnn_small': 8}

_built = {}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one torch thread is faster, and on a busy machine much faster, than waiting for a second."""


def model(name: str) -> torch.nn.Module:
    """Each model once per session, in eval mode (tests that change one work on a copy)."""
    if name not in _built:
        torch.manual_seed(0)
        kwargs = {**IMAGE_MODELS, **{n: (kw, None) for n, kw in {**TOKEN_MODELS, **PIXEL_MODELS}.items()}}[name][0]
        _built[name] = timm.create_model(name, **kwargs).eval()
    return _built[name]


def image(name: str, batch: int = 2, side: int = None, **kw) -> torch.Tensor:
    torch.manual_seed(1)
    side = IMAGE_MODELS[name][1] if side is None else side
    return torch.randn(batch, model(name).in_chans, side, side, **kw)


def tokens(batch: int = 2, length: int = 7) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randint(0, 20, (batch, length))


# --------------------------------------------------------------------------------- 1. images: the input matrix

IMAGE_ERRORS = {
    # case: (make the input from the model's name, exception, message)
    'wrong channels': (lambda n: image(n)[:, :1].expand(-1, model(n).in_chans + 2, -1, -1), ValueError,
                       r'expected 1 input channels, got 3'),
    '3-D input': (lambda n: image(n)[0], ValueError, r'expected an image batch \(B, 1, H, W\), got shape \(1, '),
    '5-D input': (lambda n: image(n)[None], ValueError, r'expected an image batch \(B, 1, H, W\), got shape \(1, 2'),
    'smaller than the minimum': (lambda n: image(n, side=MIN_SIDE[n] - 1), ValueError,
                                 r'is smaller than the minimum'),
    'uint8': (lambda n: image(n).to(torch.uint8), TypeError,
              r'expected a floating-point input \(torch.float32.*got torch.uint8'),
    'float64 into a float32 model': (lambda n: image(n).double(), TypeError,
                                     r"input dtype torch.float64 differs from the model's torch.float32"),
    'half without autocast': (lambda n: image(n).half(), TypeError,
                              r"input dtype torch.float16 differs from the model's torch.float32.*torch.autocast"),
}


@pytest.mark.parametrize('case', IMAGE_ERRORS)
@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_image_input_errors(name, case):
    make, error, message = IMAGE_ERRORS[case]
    x = make(name)
    with pytest.raises(error, match=message):
        model(name)(x)


@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_image_inputs_that_work(name):
    m, side = model(name), IMAGE_MODELS[name][1]
    with torch.no_grad():
        x = image(name)
        out = m(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        # batch 1 gives what the same sample gives in a batch (eval mode: no batch statistics)
        torch.testing.assert_close(m(x[:1]), out[:1], rtol=1e-5, atol=1e-5)
        # batch 0: an empty output of the right shape
        assert m(x[:0]).shape == (0, 10)
        # odd sizes and the minimum size
        for h, w in ((side + 5, side + 3), (MIN_SIDE[name], MIN_SIDE[name])):
            out_odd = m(torch.randn(2, m.in_chans, h, w))
            assert out_odd.shape == (2, 10) and torch.isfinite(out_odd).all(), (h, w)
        # float64 works once the model is float64 too (what the dtype error suggests)
        out64 = copy.deepcopy(m).double()(x.double())
        torch.testing.assert_close(out64.float(), out, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('name', IMAGE_MODELS)
def test_nan_in_one_sample_stays_in_that_sample(name):
    """Documented behaviour: values are not checked (that would stall GPU forwards); in eval mode a NaN makes that
    sample's logits NaN and leaves the other samples exactly as they are."""
    m, x = model(name), image(name)
    x[0, 0, 3, 5] = float('nan')
    with torch.no_grad():
        out = m(x)
        assert torch.isnan(out[0]).all()
        torch.testing.assert_close(out[1:], m(x[1:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('name', list(IMAGE_MODELS) + list(PIXEL_MODELS))
def test_autocast_is_finite_at_odd_sizes(name, dtype):
    m = model(name)
    x = image(name, side=IMAGE_MODELS[name][1] + 5) if name in IMAGE_MODELS else torch.randn(2, 1, 7, 5)
    with torch.no_grad(), torch.autocast('cpu', dtype=dtype):
        out = m(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()


# ------------------------------------------------------------------------------ 1. sequences: the input matrix

SEQUENCE_ERRORS = {
    'empty sequence (B, 0)': (lambda: (torch.zeros(2, 0, dtype=torch.long), None),
                              r'the sequence length L must be >= 1, got an empty sequence \(input shape \(2, 0\)\)'),
    'token id >= vocab_size': (lambda: (torch.tensor([[1, 20, 3]]), None),
                               r'token ids must lie in \[0, 20\) \(vocab_size\), got min 1, max 20'),
    'negative token id': (lambda: (torch.tensor([[1, -1, 3]]), None), r'token ids must lie in \[0, 20\)'),
    'float tokens': (lambda: (torch.ones(2, 5), None),
                     r'expected integer token ids of shape \(B, L\) \(int64 or int32\), got torch.float32'),
    'bool tokens': (lambda: (torch.ones(2, 5, dtype=torch.bool), None), r'integer token ids .* got torch.bool'),
    '3-D tokens': (lambda: (torch.ones(2, 5, 1, dtype=torch.long), None), r'of shape \(B, L\).*\(2, 5, 1\)'),
    'longer than seq_len': (lambda: (torch.ones(1, 65, dtype=torch.long), None),
                            r"sequence length 65 exceeds the model's seq_len 64"),
    'lengths 0': (lambda: (tokens(), torch.tensor([0, 7])), r'lengths must lie in \[1, 7\], got min 0, max 7'),
    'lengths > L': (lambda: (tokens(), torch.tensor([3, 8])), r'lengths must lie in \[1, 7\], got min 3, max 8'),
    'float lengths': (lambda: (tokens(), torch.tensor([3.0, 7.0])),
                      r'lengths must be integers \(int64\) in \[1, 7\], got torch.float32'),
    'lengths of another shape': (lambda: (tokens(), torch.tensor([[3, 7]])),
                                 r'lengths must have shape \(2,\), got \(1, 2\)'),
}


@pytest.mark.parametrize('case', SEQUENCE_ERRORS)
@pytest.mark.parametrize('name', TOKEN_MODELS)
def test_token_input_errors(name, case):
    make, message = SEQUENCE_ERRORS[case]
    x, lengths = make()
    with pytest.raises(ValueError, match=message):
        model(name)(x, lengths)


@pytest.mark.parametrize('name', TOKEN_MODELS)
def test_token_inputs_that_work(name):
    m, x = model(name), tokens()
    with torch.no_grad():
        out = m(x, torch.tensor([3, 7]))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        torch.testing.assert_close(m(x[:1], torch.tensor([3])), out[:1], rtol=1e-5, atol=1e-5)  # batch 1
        assert m(x[:0]).shape == (0, 10)  # batch 0
        assert torch.equal(m(x.int(), torch.tensor([3, 7])), out)  # int32 ids: the same output
        one = m(x[:, :1], torch.tensor([1, 1]))  # length-1 sequences
        assert one.shape == (2, 10) and torch.isfinite(one).all()
        assert torch.isfinite(m(torch.ones(1, 64, dtype=torch.long))).all()  # L = seq_len, the longest allowed


@pytest.mark.parametrize('name', PIXEL_MODELS)
def test_pixel_sequence_inputs(name):
    m = model(name)
    x = torch.randn(2, 1, 7, 5)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        torch.testing.assert_close(m(x.flatten(2).transpose(1, 2)), out)  # (B, L, C) is the same as the image
        assert m(x[:0]).shape == (0, 10)
        assert torch.isfinite(m(torch.randn(2, 1, 1))).all()  # length 1
        y = x.clone()
        y[0, 0, 2, 2] = float('nan')  # documented: NaN stays in its sample
        out_nan = m(y)
        assert torch.isnan(out_nan[0]).all()
        torch.testing.assert_close(out_nan[1:], out[1:])
    cases = [
        (torch.zeros(2, 0, 1), ValueError, r'L must be >= 1, got an empty sequence'),
        (torch.randn(2, 3, 7, 5), ValueError, r'expected 1 input channels, got image of shape \(2, 3, 7, 5\)'),
        (torch.randn(2, 1, 1, 7, 5), ValueError, r'expected \(B, C=1, H, W\) images or \(B, L, C=1\) sequences'),
        (x.to(torch.uint8), TypeError, r'expected a floating-point input'),
        (x.double(), TypeError, r"input dtype torch.float64 differs from the model's torch.float32"),
        (x.half(), TypeError, r"input dtype torch.float16 differs"),
        (torch.randn(1, 1, 9, 9), ValueError, r"sequence length 81 exceeds the model's seq_len 64"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=message):
            m(bad)


# ----------------------------------------------------------------------------------- 1. arguments of every family

FAMILIES = {  # name: (kwargs of a small model, whether it has stochastic depth)
    'inceptionnext_atto': (dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), in_chans=1), True),
    'unireplknet_a': (dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), kernel_sizes=((3,), (13,), (13,), (3,)),
                           in_chans=1), True),
    'liegroup_sl2_small': (dict(), False),
    'liegroup_cnn_small': (dict(), False),
    's4d_lra_image': (TINY_SEQ, False),
    'sgconv_lra_image': (TINY_SEQ, False),
}
SEQUENCE_ARG_MODELS = {'s4d_lra_listops': TINY_SEQ, 'sgconv_lra_listops': TINY_SEQ}


def small(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, **{**FAMILIES[name][0], **kw}).eval()


def small_input(name, in_chans=1, batch=2):
    if name.startswith(('s4d', 'sgconv')):
        return torch.randn(batch, in_chans, 6, 5)
    return torch.randn(batch, in_chans, 40, 40)


ARGUMENT_ERRORS = [
    (dict(in_chans=0), ValueError, r'in_chans must be an integer >= 1, got 0'),
    (dict(in_chans=-3), ValueError, r'in_chans must be an integer >= 1, got -3'),
    (dict(num_classes=-1), ValueError, r'num_classes must be an integer >= 0 \(0: no classifier\), got -1'),
    (dict(drop_path_rate=1.0), ValueError, r'drop_path_rate must be a number in \[0, 1\), got 1.0'),
    (dict(drop_path_rate=-0.1), ValueError, r'drop_path_rate must be a number in \[0, 1\), got -0.1'),
    (dict(drop_rate=1.5), ValueError, r'drop_rate must be a number in \[0, 1\), got 1.5'),
    (dict(no_such_option=1), TypeError, r"unknown argument 'no_such_option'; accepted: .*drop_path_rate"),
]


@pytest.mark.parametrize('kwargs, error, message', ARGUMENT_ERRORS, ids=lambda v: str(v)[:30])
@pytest.mark.parametrize('name', FAMILIES)
def test_argument_errors(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        small(name, **kwargs)


@pytest.mark.parametrize('name', FAMILIES)
def test_argument_edge_values_that_work(name):
    has_stochastic_depth = FAMILIES[name][1]
    # timm's train.py passes these to every model (None values are dropped by create_model)
    timm_train_kwargs = dict(drop_rate=0.0, drop_path_rate=None, drop_block_rate=None, global_pool=None,
                             bn_momentum=None, bn_eps=None)
    m = small(name, in_chans=1, num_classes=10, **timm_train_kwargs)
    assert m(small_input(name)).shape == (2, 10)
    assert small(name, drop_path_rate=0.0)(small_input(name)).shape[0] == 2  # 0: accepted by every family
    if has_stochastic_depth:
        m = small(name, drop_path_rate=0.5)
        assert any(type(mod).__name__ == 'DropPath' for mod in m.modules())
    else:
        with pytest.raises(ValueError, match=r'no stochastic depth, so drop_path_rate must be 0.*got 0.1'):
            small(name, drop_path_rate=0.1)
    m = small(name, num_classes=0)  # no classifier: the pre-logits features (timm's head_hidden_size)
    assert m(small_input(name)).shape == (2, m.head_hidden_size)
    assert small(name, num_classes=1)(small_input(name)).shape == (2, 1)
    assert small(name, in_chans=2)(small_input(name, in_chans=2)).shape[0] == 2


@pytest.mark.parametrize('name', SEQUENCE_ARG_MODELS)
def test_sequence_arguments(name):
    kw = SEQUENCE_ARG_MODELS[name]
    with pytest.raises(ValueError, match='give exactly one of vocab_size .* and in_chans'):
        timm.create_model(name, in_chans=1, **kw)
    with pytest.raises(ValueError, match=r'seq_len must be an integer >= 1, got 0'):
        timm.create_model(name, **{**kw, 'seq_len': 0})
    with pytest.raises(ValueError, match=r'vocab_size must be an integer >= 1, got 0'):
        timm.create_model(name, vocab_size=0, **kw)
    with pytest.raises(TypeError, match=r"unknown layer_kwargs key 'nope' \(for layer='(s4d|sgconv)'\); accepted: "):
        timm.create_model(name, layer_kwargs=dict(nope=1), **kw)
    m = timm.create_model(name, drop_rate=0.2, **kw).eval()
    assert m(tokens()).shape == (2, 10)


def test_liegroup_specific_arguments():
    with pytest.raises(ValueError, match=r'kernel_size must be an odd integer >= 1, got 4'):
        timm.create_model('liegroup_sl2_small', kernel_size=4)
    with pytest.raises(TypeError, match=r"unknown kernel_mlp key 'width'; accepted: .*hidden"):
        timm.create_model('liegroup_sl2_small', kernel_mlp=dict(width=3))


def test_lit_classifier_needs_two_classes():
    with pytest.raises(ValueError, match=r'needs num_classes >= 2, got 1'):
        LitClassifier('inceptionnext_atto', dict(num_classes=1, **FAMILIES['inceptionnext_atto'][0]))


# ------------------------------------------------------------------------------------- 2. pretrained, offline

@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network: the hub in offline mode, an empty cache, and 127.0.0.1 not proxied."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    return tmp_path / 'cache'


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize('name, needs', [
    ('unireplknet_a', 'unireplknet_a_in1k_224_acc77.03.pth of hf-hub:DingXiaoH/UniRepLKNet'),
    ('inceptionnext_atto', 'model.safetensors of hf-hub:timm/inception_next_atto.sail_in1k'),
])
def test_pretrained_offline_names_the_file_and_the_two_ways_to_get_it(offline, name, needs):
    kw = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    if name == 'unireplknet_a':
        kw['kernel_sizes'] = ((3,), (7,), (7,), (3,))
    with pytest.raises(WeightsError) as err:
        timm.create_model(name, pretrained=True, cache_dir=offline, **kw)
    message = str(err.value)
    tag = timm.get_pretrained_cfg(name).tag
    assert f'{name}.{tag}: the pretrained weights could not be downloaded' in message
    assert f'It needs the file {needs}' in message
    assert f'`python -m zoo.weights download {name}.{tag}`' in message
    assert f"pretrained_cfg_overlay=dict(file='checkpoints/{name}.{tag}." in message
    assert "pretrained_cfg_overlay=dict(file='/path/to/the/file')" in message

    # the URL source (no hub): a refused connection says the same
    url = f'http://127.0.0.1:{_closed_port()}/weights.pth'
    with pytest.raises(WeightsError, match=rf'could not be downloaded \(.*Error.*\)\. It needs the file {url}'):
        timm.create_model(name, pretrained=True, cache_dir=offline, **kw,
                          pretrained_cfg_overlay=dict(hf_hub_id=None, url=url))


def test_pretrained_without_published_weights_is_an_error():
    with pytest.raises(WeightsError, match=r'No pretrained weights are published for liegroup_sl2_small '
                                           r'\(pretrained=True\).*pretrained_cfg_overlay=dict\(file='):
        timm.create_model('liegroup_sl2_small', pretrained=True)


# ------------------------------------------------------------------------------ 2. files that must be refused

ATTO = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), num_classes=10, in_chans=1)


class _RunsCode:
    """Unpickling this calls exec: a file holding it must be refused without being unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp('bad_weights')
    torch.manual_seed(0)
    good = timm.create_model('inceptionnext_atto', **ATTO).state_dict()
    torch.save(good, folder / 'good.pth')
    data = (folder / 'good.pth').read_bytes()
    (folder / 'truncated.pth').write_bytes(data[: len(data) // 2])
    (folder / 'random.pth').write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / 'empty.pth').write_bytes(b'')
    torch.save(timm.create_model('liegroup_cnn_small').state_dict(), folder / 'foreign.pth')
    wrong = dict(good, **{'stages.1.downsample.1.weight': torch.zeros(16, 8, 3, 3)})  # (16, 8, 2, 2) in the model
    safetensors.torch.save_file(wrong, folder / 'wrong_shape.safetensors')
    st = (folder / 'wrong_shape.safetensors').read_bytes()
    (folder / 'truncated.safetensors').write_bytes(st[: len(st) // 3])
    marker = folder / 'code_ran.marker'
    torch.save({'stem.0.weight': _RunsCode(marker)}, folder / 'pickled_code.pth')
    return folder, marker


FILE_CASES = {  # file: what the message must say
    'truncated.pth': r'not a readable checkpoint \(truncated, corrupted or not a PyTorch/safetensors file\)',
    'random.pth': r'not a readable checkpoint \(truncated, corrupted or not a PyTorch/safetensors file\): '
                  r'Unsupported operand',
    'empty.pth': r'empty file',
    'truncated.safetensors': r'not a readable checkpoint \(truncated, corrupted',
    'missing.pth': r'no such file',
    'foreign.pth': r'the file looks like weights of another architecture',
    'wrong_shape.safetensors': r'stages.1.downsample.1.weight checkpoint \(16, 8, 3, 3\) vs model \(16, 8, 2, 2\)',
    'pickled_code.pth': r'holds Python objects besides tensors, so it is refused \(read with weights_only=True: no '
                        r'pickled code in it was run\)',
}


@pytest.mark.parametrize('file', FILE_CASES)
def test_unusable_weights_are_refused_by_pretrained_and_verify(bad_files, file):
    folder, marker = bad_files
    path = folder / file
    with pytest.raises(WeightsError, match=FILE_CASES[file]) as err:
        timm.create_model('inceptionnext_atto', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **ATTO)
    assert str(path) in str(err.value) or file in ('foreign.pth', 'wrong_shape.safetensors')
    with pytest.raises(WeightsError, match=FILE_CASES[file]):
        weights.verify(path, model_name='inceptionnext_atto',
                       model_kwargs={k: v for k, v in ATTO.items()})
    assert not marker.exists(), 'the pickled payload ran'


def test_pickled_code_is_never_run_anywhere(bad_files, tmp_path):
    folder, marker = bad_files
    path = folder / 'pickled_code.pth'
    with pytest.raises(WeightsError, match='refused'):
        LitClassifier.load_from_checkpoint(path)
    with pytest.raises(WeightsError, match='refused'):
        weights.export(path, tmp_path / 'out.safetensors')
    from zoo.train import CheckpointError, check_checkpoint
    with pytest.raises(CheckpointError, match='refused'):
        check_checkpoint(path)
    assert not marker.exists(), 'the pickled payload ran'
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ------------------------------------------------------------------- 2. downloads cut short leave nothing behind

@pytest.fixture(scope='module')
def cut_server(bad_files):
    """Serves good weights with the full Content-Length but closes the connection halfway, as a dropped download;
    `/<org>/<repo>/resolve/<rev>/<file>` imitates the Hugging Face hub (with a correct sha256 etag)."""
    folder, _ = bad_files
    torch.manual_seed(0)
    safetensors.torch.save_file(timm.create_model('inceptionnext_atto').state_dict(), folder / 'full.safetensors')
    data = (folder / 'full.safetensors').read_bytes()

    def respond(handler, with_body):
        handler.send_response(200)
        if '/resolve/' in handler.path:
            handler.send_header('X-Repo-Commit', '0' * 40)
            handler.send_header('ETag', f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header('Content-Length', str(len(data)))
        handler.end_headers()
        if with_body:
            handler.wfile.write(data[: len(data) // 2])
            handler.wfile.flush()
            handler.close_connection = True

    with serve(respond) as url:
        yield url


@pytest.mark.parametrize('source', ['url', 'hf-hub'])
def test_download_cut_mid_transfer_leaves_nothing(cut_server, tmp_path, monkeypatch, source):
    import huggingface_hub.file_download as hub_download
    monkeypatch.setenv('NO_PROXY', '127.0.0.1,localhost')
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.setattr(hub_download, 'time', SimpleNamespace(sleep=lambda seconds: None))  # its retries, at once
    target = tmp_path / 'checkpoints'
    with pytest.raises(WeightsError, match=r'inceptionnext_atto.sail_in1k|truncated'):
        if source == 'url':
            weights.download('inceptionnext_atto.sail_in1k', target, url=f'{cut_server}/model.safetensors',
                             progress=False)
        else:
            weights.download('inceptionnext_atto.sail_in1k', target, source='hf-hub', progress=False,
                             endpoint=cut_server)
    assert sorted(p.name for p in target.iterdir()) == []


# ------------------------------------------------------------- 2. checkpoints naming something else are refused

def _lit_checkpoint(path, model_name, model_kwargs=None):
    torch.save({'epoch': 0, 'global_step': 1, 'pytorch-lightning_version': '2.6.6', 'state_dict': {},
                'hyper_parameters': {'model_name': model_name, 'model_kwargs': model_kwargs or {}}}, path)


@pytest.mark.parametrize('model_name', ['torch.nn.Linear', 'os.system', 'hf-hub:someone/some-model',
                                        'local-dir:/tmp/model', 'not_a_model', 42])
def test_load_from_checkpoint_refuses_unregistered_models(tmp_path, monkeypatch, model_name):
    created = []
    monkeypatch.setattr(timm, 'create_model', lambda *a, **k: created.append(a) or torch.nn.Linear(1, 1))
    path = tmp_path / 'evil.ckpt'
    _lit_checkpoint(path, model_name)
    with pytest.raises(ValueError, match=r'model_name must be a registered timm or zoo model name .*got '):
        LitClassifier.load_from_checkpoint(path)
    assert created == []  # nothing was instantiated


def test_evaluate_refuses_such_a_checkpoint_before_building_anything(tmp_path):
    from test_train import compose_cfg

    from zoo.evaluate import run as evaluate
    path = tmp_path / 'evil.ckpt'
    _lit_checkpoint(path, 'torch.nn.Linear')
    cfg = compose_cfg('evaluate', [f'ckpt={path}', f'paths.root={tmp_path}'], tmp_path)
    with pytest.raises(ValueError, match="got 'torch.nn.Linear'"):
        evaluate(cfg)
    (tmp_path / 'cut.ckpt').write_bytes(path.read_bytes()[:40])
    cfg = compose_cfg('evaluate', [f"ckpt={tmp_path / 'cut.ckpt'}", f'paths.root={tmp_path}'], tmp_path)
    with pytest.raises(WeightsError, match=r'cut.ckpt: not a readable checkpoint \(truncated'):
        evaluate(cfg)


# -------------------------------------------------------------------- 3. checkpoints and run folders (fast)

def _train_checkpoint(path, step, mtime):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'epoch': step // 3 - 1, 'global_step': step}, path)
    os.utime(path, (mtime, mtime))


def test_corrupted_last_checkpoint_names_the_previous_good_one(tmp_path):
    from test_train import compose_cfg

    from zoo.train import CheckpointError, check_checkpoint, find_last_checkpoint
    root = tmp_path / 'digits' / 'inceptionnext_atto'
    _train_checkpoint(root / 'a' / 'checkpoints' / 'last.ckpt', 3, 1)
    _train_checkpoint(root / 'b' / 'checkpoints' / 'epoch_001.ckpt', 6, 2)
    _train_checkpoint(root / 'b' / 'checkpoints' / 'last.ckpt', 9, 3)
    cfg = compose_cfg('train', [f'paths.root={tmp_path}', 'ckpt_path=last'], tmp_path)
    assert find_last_checkpoint(cfg) == str(root / 'b' / 'checkpoints' / 'last.ckpt')

    newest = root / 'b' / 'checkpoints' / 'last.ckpt'
    newest.write_bytes(newest.read_bytes()[:100])  # a disk that filled up, a copy cut short
    os.utime(newest, (3, 3))
    with pytest.raises(CheckpointError) as err:
        find_last_checkpoint(cfg)
    message = str(err.value)
    assert f'{newest}: not a readable checkpoint (truncated' in message
    good = root / 'b' / 'checkpoints' / 'epoch_001.ckpt'
    assert f'The previous good one is {good} (epoch 1, step 6); resume from it with ckpt_path={good}' in message
    with pytest.raises(CheckpointError, match=r'not a readable checkpoint'):
        check_checkpoint(newest)  # what ckpt_path=<file> runs first
    with pytest.raises(CheckpointError, match=r'not a Lightning training checkpoint'):
        torch.save({'w': torch.zeros(1)}, tmp_path / 'weights.pth')
        check_checkpoint(tmp_path / 'weights.pth')


def _claim(base, queue):
    from zoo.train import claim_dir
    queue.put(claim_dir(base))


def test_racing_runs_each_claim_their_own_folder(tmp_path):
    base = str(tmp_path / 'outputs' / 'digits' / 'inceptionnext_atto' / '2026-01-01_00-00-00')
    ctx = mp.get_context('fork')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(base, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    claimed = sorted(queue.get(timeout=5) for _ in procs)
    assert len(set(claimed)) == 6 and claimed[0] == base and all(Path(c).is_dir() for c in claimed)


def test_the_run_folder_callback_claims_the_default_folder(tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from test_train import compose_cfg

    from zoo.train import UniqueRunDir
    default = compose_cfg('train', [f'paths.root={tmp_path}'], tmp_path)
    assert OmegaConf.to_container(default.hydra.run, resolve=False)['dir'] == \
        '${paths.root}/${run_name}/${now:%Y-%m-%d_%H-%M-%S}'
    folders = []
    for _ in range(2):  # two runs in the same second: a timestamp that cannot change between them
        cfg = compose_cfg('train', [f'paths.root={tmp_path}', 'hydra.run.dir=${paths.root}/${run_name}/${now:same}'],
                          tmp_path)
        UniqueRunDir().on_run_start(config=cfg)
        folders.append(cfg.hydra.run.dir)
    assert folders == [f'{tmp_path}/digits/inceptionnext_atto/same', f'{tmp_path}/digits/inceptionnext_atto/same_1']
    explicit = compose_cfg('train', [f'paths.root={tmp_path}', f'hydra.run.dir={tmp_path}/mine'], tmp_path)
    UniqueRunDir().on_run_start(config=explicit)  # given literally (Lightning's DDP workers): used as given
    assert explicit.hydra.run.dir == f'{tmp_path}/mine' and not (tmp_path / 'mine').exists()
    HydraConfig.instance().cfg = None


# ---------------------------------------------------------------------------------------------- 4. honest splits

def _disjoint(val, test) -> bool:
    from torch.utils.data import Subset
    if isinstance(val, Subset) and isinstance(test, Subset) and val.dataset is test.dataset:
        return not set(np.asarray(val.indices).tolist()) & set(np.asarray(test.indices).tolist())
    return test is not val and getattr(val, 'dataset', val) is not getattr(test, 'dataset', test)


def test_every_datamodule_tests_on_data_that_never_selects_checkpoints(tmp_path):
    from test_lra_loaders import _cifar, _parquet
    from test_train import make_image_tree

    from zoo.data.affine_digits import AffineDigitsDataModule
    from zoo.data.digits import DigitsDataModule
    from zoo.data.imagefolder import ImageFolderDataModule
    from zoo.data.lra import CIFAR10GrayDataModule, IMDBDataModule

    for dm in (DigitsDataModule(), AffineDigitsDataModule(max_test_digits=20, transforms_per_digit=1)):
        dm.setup()
        train, val, test = (set(dm.split_indices[s].tolist()) for s in ('train', 'val', 'test'))
        assert test and val and not (test & val) and not (test & train), type(dm).__name__

    _parquet(tmp_path / 'imdb')
    imdb = IMDBDataModule(str(tmp_path / 'imdb'), val_split=0.5)
    (tmp_path / 'cifar').mkdir()
    _cifar(tmp_path / 'cifar')
    cifar = CIFAR10GrayDataModule(str(tmp_path / 'cifar'))
    for dm in (imdb, cifar):
        dm.setup()
        assert _disjoint(dm.data_val, dm.data_test) and _disjoint(dm.data_train, dm.data_test), type(dm).__name__

    make_image_tree(tmp_path / 'images', splits=('train', 'val', 'test'))
    folder = ImageFolderDataModule(tmp_path / 'images', model_name='inceptionnext_atto', img_size=32, num_workers=0)
    folder.setup('fit')
    assert not folder.has_test_split
    with pytest.raises(ValueError, match=r'no test split .* the val split selects checkpoints'):
        folder.test_dataloader()
    with pytest.raises(ValueError, match=r"test_split 'val' must be a directory other than"):
        ImageFolderDataModule(tmp_path / 'images', test_split='val')
    folder = ImageFolderDataModule(tmp_path / 'images', model_name='inceptionnext_atto', img_size=32, num_workers=0,
                                   test_split='test')
    folder.setup('fit')
    assert len(folder.test_dataloader().dataset) == 4 and folder.test_set.reader.root != folder.val_set.reader.root
    with pytest.raises(ValueError, match='no test split'):
        DigitsDataModule(test_fraction=0).test_dataloader()


# --------------------------------------------------------------------- 3. training faults through train.py

TINY_RUN = ['trainer.enable_progress_bar=false', 'trainer.max_epochs=2', 'trainer.limit_train_batches=3',
            'trainer.limit_val_batches=1', 'trainer.limit_test_batches=1', 'trainer.num_sanity_val_steps=0',
            'trainer.log_every_n_steps=1', 'data.batch_size=8', '+model.kwargs.depths=[1,1,1,1]',
            '+model.kwargs.dims=[8,16,32,64]']


def train_py(root: Path, *overrides, check=True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'tests'), str(REPO)]), OMP_NUM_THREADS='1',
               HYDRA_FULL_ERROR='1')
    proc = subprocess.run([sys.executable, str(REPO / 'train.py'), f'paths.root={root}', *overrides],
                          cwd=root, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _runs(root: Path, run_name: str) -> list[Path]:
    return sorted((root / run_name).iterdir())


def _step(path: Path) -> int:
    return torch.load(path, map_location='cpu', weights_only=True)['global_step']


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_and_a_corrupted_last_checkpoint(tmp_path):
    # An unbroken run: 2 epochs of 3 optimizer steps.
    train_py(tmp_path, *TINY_RUN, 'run_name=unbroken')
    (unbroken,) = _runs(tmp_path, 'unbroken')
    assert _step(unbroken / 'checkpoints' / 'last.ckpt') == 6

    # The same run killed with SIGKILL after step 4, in the middle of epoch 2: last.ckpt holds the end of epoch 1.
    proc = train_py(tmp_path, *TINY_RUN, 'run_name=killed', '+callbacks.kill._target_=_faults.KillAtStep',
                    '+callbacks.kill.step=4', check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (killed,) = _runs(tmp_path, 'killed')
    assert _step(killed / 'checkpoints' / 'last.ckpt') == 3

    # ckpt_path=last resumes from step 3 and finishes with the unbroken run's number of optimizer steps.
    proc = train_py(tmp_path, *TINY_RUN, 'run_name=killed', 'ckpt_path=last')
    assert f"{killed / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr
    resumed = next(p for p in _runs(tmp_path, 'killed') if p != killed)
    assert _step(resumed / 'checkpoints' / 'last.ckpt') == 6
    with open(resumed / 'csv' / 'metrics.csv') as f:
        steps = [int(row['step']) for row in csv.DictReader(f) if row.get('train/loss_step')]
    assert steps and min(steps) >= 3  # logged training steps start at the saved step: nothing was trained again

    # The newest last.ckpt cut short: reported, and the previous good checkpoint is named.
    last = resumed / 'checkpoints' / 'last.ckpt'
    last.write_bytes(last.read_bytes()[:1000])
    proc = train_py(tmp_path, *TINY_RUN, 'run_name=killed', 'ckpt_path=last', check=False)
    assert proc.returncode != 0
    assert f'{last}: not a readable checkpoint (truncated' in proc.stderr
    assert 'The previous good one is ' in proc.stderr and 'resume from it with ckpt_path=' in proc.stderr
    proc = train_py(tmp_path, *TINY_RUN, 'run_name=killed', f'ckpt_path={last}', check=False)
    assert proc.returncode != 0 and f'{last}: not a readable checkpoint (truncated' in proc.stderr


@pytest.mark.slow
def test_two_runs_with_one_run_name_never_share_a_folder(tmp_path):
    # Both runs resolve to the same folder name (a timestamp to the year), started at the same moment.
    args = [*TINY_RUN, 'trainer.max_epochs=1', 'test=false', 'run_name=same',
            'hydra.run.dir=${paths.root}/${run_name}/${now:%Y}']
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, str(REPO / 'train.py'), f'paths.root={tmp_path}', *args], cwd=tmp_path,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs[0][-2000:] + outputs[1][-2000:]
    folders = _runs(tmp_path, 'same')
    assert len(folders) == 2 and folders[1].name == folders[0].name + '_1'
    for folder in folders:
        assert (folder / '.hydra' / 'config.yaml').is_file() and (folder / 'checkpoints' / 'last.ckpt').is_file()
        assert len((folder / 'csv').glob('metrics.csv').__next__().read_text().splitlines()) > 1


@pytest.mark.slow
def test_a_missing_dataset_root_names_the_path_and_the_layout(tmp_path):
    nowhere = tmp_path / 'nowhere'
    proc = train_py(tmp_path, 'experiment=lra/s4d_listops', f'data.data_dir={nowhere}', check=False)
    assert proc.returncode != 0
    assert f'{nowhere}/basic_train.tsv' in proc.stderr and 'listops: data not found' in proc.stderr
    proc = train_py(tmp_path, 'experiment=imagenet/inceptionnext_tiny', f'data.root={nowhere}', check=False)
    assert proc.returncode != 0
    assert f'image folder root {nowhere} does not exist; expected the layout <root>/train/<class name>' in proc.stderr
