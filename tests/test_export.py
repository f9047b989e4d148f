"""zoo.export: every family exports to ONNX, TorchScript and ExportedProgram and runs outside eager PyTorch within the
float32 error budget; damaged or mismatched files are reported; a failed export leaves nothing behind.

The default run exports the smallest variant of each family at small sizes; `-m slow` exports every registered model.
Tolerances come from `zoo.export.error_budget` (a float32 rounding model of the architecture and sizes).
"""
import json
import math

import numpy as np
import pytest
import timm
import torch

from kernels.long_conv import longconv_ref
from zoo import export as ex
from zoo.weights import sha256_of
from zoo.models import zoo_model_names
from zoo.models.liegroup import FrozenConv2d, KernelNet

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')  # the dynamo ONNX exporter

FORMATS = tuple(ex.FORMATS)
SEQ_SMALL = dict(depth=1, seq_len=64)
# (model, kwargs, img_size): the smallest variant of each family, at small inputs
SMALL = [
    ('inceptionnext_atto', {}, 64),
    ('unireplknet_a', {}, 64),
    ('unireplknet_a', dict(deploy=True), 64),
    ('liegroup_sl2_small', {}, None),
    ('liegroup_cnn_small', {}, None),
    ('s4d_lra_listops', SEQ_SMALL, None),
    ('sgconv_lra_listops', dict(depth=1, seq_len=50), None),  # 2L = 100: not a power of two
]


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def _export(name, kwargs, img_size, out, fmt='onnx', **export_kwargs):
    model, info = ex.load_model(name, model_kwargs=kwargs)
    model_input, preprocessing = ex.resolve_input(model, kwargs, img_size=img_size)
    sidecar = ex.export(model, info, out, fmt, model_input, preprocessing, **export_kwargs)
    return model, model_input, sidecar


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _case_id(case):
    name, kwargs, _ = case
    return name + ('-deploy' if kwargs.get('deploy') else '')


# ------------------------------------------------------------------------------------------- every family

def _small_cases():
    cases = []
    # TorchScript and ExportedProgram of the two largest small variants take ~10 s each, and UniRepLKNet's training
    # form ~8 s (its deploy form, what one ships, stays in the default run): slow
    for case in SMALL:
        for fmt in FORMATS:
            big = case[0] in ('inceptionnext_atto', 'unireplknet_a')
            slow = big and (fmt != 'onnx' or (case[0] == 'unireplknet_a' and not case[1].get('deploy')))
            cases.append(pytest.param(case, fmt, id=f'{_case_id(case)}-{fmt}', marks=[pytest.mark.slow] if slow else []))
    return cases


@pytest.mark.parametrize('case, fmt', _small_cases())
def test_small_variant_exports_and_verifies(tmp_path, case, fmt):
    name, kwargs, img_size = case
    out = tmp_path / f'model{ex.FORMATS[fmt]}'
    model, model_input, sidecar = _export(name, kwargs, img_size, out, fmt, dynamic_batch=True)
    assert _files(tmp_path) == [out.name, out.name + '.json']  # nothing else left in the folder

    check = sidecar['verification']
    assert check['batch_sizes'] == [1, 3] and check['max_rel_error'] <= check['tolerance']
    assert sidecar == json.loads((tmp_path / (out.name + '.json')).read_text())
    assert sidecar['model'] == name and sidecar['format'] == fmt and sidecar['model_kwargs'] == kwargs
    assert sidecar['inputs'][0]['shape'] == ['batch', *model_input.shape]
    assert sidecar['reparameterized'] == name.startswith('unireplknet')

    # the file runs on its own, at a batch it was neither traced nor checked at
    inputs = model_input.make(2, seed=1)
    with torch.no_grad():
        expected = model(*inputs)
    output = torch.from_numpy(np.asarray(ex.load_exported(out, fmt)(inputs)))
    budget = ex.error_budget(ex.inference_form(model, model_input, sidecar['reparameterized'])[0], model_input,
                             expected.numel())
    assert (output - expected).abs().max() <= budget * expected.abs().max()


def test_onnx_files_are_valid_and_the_long_convolution_is_a_dft(tmp_path):
    onnx = pytest.importorskip('onnx')
    _export('s4d_lra_listops', SEQ_SMALL, None, tmp_path / 's4d.onnx')
    model = onnx.load(str(tmp_path / 's4d.onnx'))
    onnx.checker.check_model(model, full_check=True)
    ops = {node.op_type for node in model.graph.node}
    assert 'DFT' in ops  # the FFT convolution exports as it is; only the S4D kernel was precomputed
    assert [i.name for i in model.graph.input] == ['input_ids', 'lengths']


def test_preprocessing_of_image_and_sequence_models():
    cfg = timm.models.get_pretrained_cfg('inceptionnext_atto')
    model_input, pre = ex.resolve_input(timm.create_model('inceptionnext_atto'), img_size=64)
    assert model_input == ex.ModelInput((3, 64, 64))
    assert pre == dict(input_size=[3, 64, 64], interpolation=cfg.interpolation, mean=list(cfg.mean),
                       std=list(cfg.std), crop_pct=cfg.crop_pct, crop_mode=cfg.crop_mode)
    gray = timm.create_model('inceptionnext_atto', in_chans=1)
    assert ex.resolve_input(gray, dict(in_chans=1))[0].shape == (1, 224, 224)

    tokens = timm.create_model('s4d_lra_listops', **SEQ_SMALL)
    model_input, pre = ex.resolve_input(tokens, seq_len=32)
    assert model_input == ex.ModelInput((32,), tokens.vocab_size) and model_input.names == ('input_ids', 'lengths')
    assert pre == dict(vocab_size=tokens.vocab_size, seq_len=32, num_docs=1)
    pairs = timm.create_model('sgconv_lra_retrieval', depth=1, seq_len=64)
    assert ex.resolve_input(pairs)[0].shape == (2, 64)
    pixels = timm.create_model('s4d_lra_image', depth=1)
    model_input, pre = ex.resolve_input(pixels)
    assert model_input.shape == (1, 32, 32) and model_input.length == 1024 and pre['mean'] == [122.6 / 255.0]


def test_static_batch_sidecar(tmp_path):
    _, _, sidecar = _export('liegroup_cnn_small', {}, None, tmp_path / 'cnn.onnx', batch_size=2)
    assert sidecar['inputs'] == [dict(name='input', shape=[2, 1, 40, 40], dtype='float32')]
    assert sidecar['outputs'] == [dict(name='logits', shape=[2, 10], dtype='float32')]
    assert sidecar['verification']['batch_sizes'] == [2] and sidecar['opset'] >= 17
    assert sidecar['sha256'] == sha256_of(tmp_path / 'cnn.onnx')


def test_token_ids_outside_the_vocabulary_are_refused_by_onnxruntime(tmp_path):
    model, model_input, _ = _export('sgconv_lra_listops', SEQ_SMALL, None, tmp_path / 'sg.onnx')
    ids, lengths = model_input.make(1)
    ids[0, 0] = model.vocab_size
    with pytest.raises(Exception, match='(?i)out of bounds|indices'):
        ex.load_exported(tmp_path / 'sg.onnx', 'onnx')((ids, lengths))


# ---------------------------------------------------------------------------- damaged and mismatched files

@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """liegroup_cnn_small and liegroup_sl2_small (same input and output shapes) and an S4D model (token inputs) in
    every format, with the eager liegroup_cnn_small they were made from."""
    folder = tmp_path_factory.mktemp('exported')
    files = {}
    for name, kwargs in (('liegroup_cnn_small', {}), ('liegroup_sl2_small', {}), ('s4d_lra_listops', SEQ_SMALL)):
        for fmt, suffix in ex.FORMATS.items():
            torch.manual_seed(0)  # the same weights in every format
            model, model_input, _ = _export(name, kwargs, None, folder / f'{name}{suffix}', fmt)
            files[name, fmt] = folder / f'{name}{suffix}'
            if name == 'liegroup_cnn_small':
                reference = model, model_input
    return files, reference


@pytest.mark.parametrize('fmt', FORMATS)
def test_truncated_file_is_reported(tmp_path, exported, fmt):
    files, (model, model_input) = exported
    data = files['liegroup_cnn_small', fmt].read_bytes()
    damaged = tmp_path / files['liegroup_cnn_small', fmt].name
    damaged.write_bytes(data[: len(data) // 2])
    with pytest.raises(ex.ExportError, match=f'cannot be loaded as {fmt}.*damaged'):
        ex.verify(damaged, fmt, model, model_input, (1,), rtol=1e-4)


@pytest.mark.parametrize('fmt', FORMATS)
def test_another_models_file_is_reported(exported, fmt):
    files, (model, model_input) = exported
    budget = ex.error_budget(model, model_input, 10)
    ex.verify(files['liegroup_cnn_small', fmt], fmt, model, model_input, (1,), budget)  # its own file passes
    with pytest.raises(ex.ExportError, match='differs from the eager model.*max rel error'):
        ex.verify(files['liegroup_sl2_small', fmt], fmt, model, model_input, (1,), budget)
    with pytest.raises(ex.ExportError, match='fails on inputs of shape|output shape'):
        ex.verify(files['s4d_lra_listops', fmt], fmt, model, model_input, (1,), budget)
    torch.manual_seed(1)
    other_weights = timm.create_model('liegroup_cnn_small').eval()  # same architecture, other weights
    with pytest.raises(ex.ExportError, match='differs from the eager model'):
        ex.verify(files['liegroup_cnn_small', fmt], fmt, other_weights, model_input, (1,), budget)


def _garbage_writer(model, inputs, path, *args):
    path.write_bytes(b'not a model')


def _failing_writer(model, inputs, path, *args):
    path.write_bytes(b'half')
    raise RuntimeError('exporter crashed')


@pytest.mark.parametrize('writer, message', [(_garbage_writer, 'cannot be loaded'), (_failing_writer,
                                                                                     'onnx export failed')])
def test_failed_export_leaves_nothing(tmp_path, monkeypatch, writer, message):
    monkeypatch.setitem(ex.WRITERS, 'onnx', writer)
    (tmp_path / 'keep.txt').write_text('unrelated')
    with pytest.raises(ex.ExportError, match=message):
        _export('liegroup_cnn_small', {}, None, tmp_path / 'model.onnx')
    assert _files(tmp_path) == ['keep.txt']


def test_cli_failure_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(ex.WRITERS, 'onnx', _garbage_writer)
    assert ex.main(['liegroup_cnn_small', '--out', str(tmp_path / 'm.onnx')]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith('zoo.export: error: ') and 'cannot be loaded as onnx' in err and '\n' not in err
    assert _files(tmp_path) == []


# ------------------------------------------------------------------------------------- sources of weights

def _lit_checkpoint(path):
    """A checkpoint as Lightning writes it for LitClassifier, with EMA weights that differ from the network's."""
    pl = pytest.importorskip('pytorch_lightning')
    from zoo.lit import LitClassifier

    kwargs = dict(num_classes=10, in_chans=1, depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    module = LitClassifier(model_name='inceptionnext_atto', model_kwargs=kwargs, ema_decay=0.9)
    with torch.no_grad():
        for p in module.model_ema.module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator='cpu')
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return module.model.eval(), module.model_ema.module.eval(), kwargs


@pytest.mark.parametrize('ema', [None, pytest.param(False, marks=pytest.mark.slow)])
def test_checkpoint_exports_its_ema_weights_when_present(tmp_path, capsys, ema):
    net, ema_net, kwargs = _lit_checkpoint(tmp_path / 'last.ckpt')
    out = tmp_path / 'digits.onnx'
    argv = [str(tmp_path / 'last.ckpt'), '--out', str(out), '--img-size', '32', '--dynamic-batch']
    argv += ['--no-ema'] if ema is False else []
    assert ex.main(argv) == 0
    assert 'max rel error' in capsys.readouterr().out
    sidecar = json.loads((tmp_path / 'digits.onnx.json').read_text())
    assert sidecar['model'] == 'inceptionnext_atto' and sidecar['weights'].endswith('(EMA)' if ema is None else
                                                                                      '(network)')
    assert sidecar['model_kwargs'] == dict(kwargs, depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])  # JSON lists
    assert sidecar['inputs'][0]['shape'] == ['batch', 1, 32, 32]

    x = torch.randn(2, 1, 32, 32)
    output = torch.from_numpy(ex.load_exported(out, 'onnx')((x,)))
    chosen, other = (ema_net, net) if ema is None else (net, ema_net)
    with torch.no_grad():
        expected = chosen(x)
        assert not torch.allclose(other(x), expected)
    assert (output - expected).abs().max() <= sidecar['verification']['tolerance'] * expected.abs().max()


def test_checkpoint_errors(tmp_path):
    _lit_checkpoint(tmp_path / 'last.ckpt')
    with pytest.raises(ex.ExportError, match='carries its own weights'):
        ex.load_model(str(tmp_path / 'last.ckpt'), pretrained=True)
    checkpoint = torch.load(tmp_path / 'last.ckpt', weights_only=True)
    checkpoint['state_dict'] = {k: v for k, v in checkpoint['state_dict'].items() if k.startswith('model.')}
    torch.save(checkpoint, tmp_path / 'no_ema.ckpt')
    with pytest.raises(ex.ExportError, match='no EMA weights'):
        ex.load_model(str(tmp_path / 'no_ema.ckpt'), ema=True)
    data = (tmp_path / 'last.ckpt').read_bytes()
    (tmp_path / 'cut.ckpt').write_bytes(data[: len(data) // 3])
    with pytest.raises(ex.ExportError, match='not a readable checkpoint'):
        ex.load_model(str(tmp_path / 'cut.ckpt'))
    with pytest.raises(ex.ExportError, match='no such file|not a readable'):
        ex.load_model(str(tmp_path / 'missing.ckpt'))


def test_weights_file(tmp_path):
    safetensors = pytest.importorskip('safetensors.torch')
    trained = timm.create_model('liegroup_cnn_small').eval()
    safetensors.save_file(trained.state_dict(), tmp_path / 'w.safetensors')
    model, info = ex.load_model('liegroup_cnn_small', weights=str(tmp_path / 'w.safetensors'))
    assert info['weights'] == str(tmp_path / 'w.safetensors')
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in model.state_dict().items())
    with pytest.raises(ex.ExportError, match='does not fit liegroup_sl2_small'):
        ex.load_model('liegroup_sl2_small', weights=str(tmp_path / 'w.safetensors'))


def test_argument_errors():
    with pytest.raises(ex.ExportError, match='did you mean inceptionnext_atto'):
        ex.load_model('inceptionnext_ato')
    image = timm.create_model('liegroup_cnn_small')
    with pytest.raises(ex.ExportError, match='image model.*--img-size'):
        ex.resolve_input(image, seq_len=64)
    tokens = timm.create_model('s4d_lra_listops', **SEQ_SMALL)
    with pytest.raises(ex.ExportError, match='built for sequences of 1 to 64'):
        ex.resolve_input(tokens, seq_len=65)
    with pytest.raises(ex.ExportError, match='token ids.*--seq-len'):
        ex.resolve_input(tokens, img_size=32)
    model_input, _ = ex.resolve_input(tokens)
    with pytest.raises(ex.ExportError, match='--opset applies to --format onnx only'):
        ex.export(tokens, dict(model='s4d_lra_listops'), 'x.pt', 'torchscript', model_input, opset=17)
    fixed = ex.FixedKernel(torch.zeros(1, 4, 64))
    with pytest.raises(ValueError, match='computed for sequences of length 64, got 32'):
        fixed(32)


# ---------------------------------------------------------------------------------- inference forms

@pytest.mark.parametrize('name', ['liegroup_sl2_small', 'liegroup_gl2_small'])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_freeze_kernels_computes_the_eval_model(name, dtype):
    model = timm.create_model(name).eval().to(dtype)
    x = torch.randn(2, 1, 40, 40, dtype=dtype)
    with torch.no_grad():
        expected = model(x)
        frozen = ex.inference_form(model, ex.ModelInput((1, 40, 40)), reparam=False)[0]
        assert not any(isinstance(m, KernelNet) for m in frozen.modules())
        assert sum(isinstance(m, FrozenConv2d) for m in frozen.modules()) == 2 * frozen.depth + 2
        # the same generated weights in the same conv: identical arithmetic, identical results
        assert torch.equal(frozen(x), expected)
    with pytest.raises(ValueError, match='eval_resample=True'):
        timm.create_model(name, eval_resample=True).freeze_kernels()


def test_fixed_s4d_kernel_is_the_generated_one():
    model = timm.create_model('s4d_lra_listops', depth=2, seq_len=64, layer_kwargs=dict(bidirectional=True)).eval()
    model_input = ex.ModelInput((64,), model.vocab_size)
    inputs = model_input.make(2)
    with torch.no_grad():
        fixed = ex.inference_form(model, model_input, reparam=False)[0]
        assert torch.equal(fixed(*inputs), model(*inputs))


@pytest.mark.parametrize('bidirectional', [False, True])
def test_longconv_power_of_two_transform(bidirectional):
    """The padded transform computes the same convolution; compared in float64 with a direct sum."""
    L, H = 50, 3
    u = torch.randn(2, H, L, dtype=torch.float64)
    k = torch.randn(*((2,) if bidirectional else ()), H, L, dtype=torch.float64)
    D = torch.randn(H, dtype=torch.float64)
    lags = torch.arange(L).view(-1, 1) - torch.arange(L).view(1, -1)  # t - s
    kf = k[0] if bidirectional else k
    kernel = torch.where(lags >= 0, kf[:, lags.clamp(min=0)], torch.zeros(()))  # (H, L, L)
    if bidirectional:  # lag -m takes the backward kernel's m - 1
        kernel = kernel + torch.where(lags < 0, k[1][:, (-lags - 1).clamp(min=0)], torch.zeros(()))
    direct = torch.einsum('hts,bhs->bht', kernel, u) + u * D.view(-1, 1)
    # float64 FFT rounding: a few log2(n) ulps of the terms' magnitude per output
    scale = torch.einsum('hts,bhs->bht', kernel.abs(), u.abs()).max()
    for n in (None, 128, 256):
        y = longconv_ref(u, k, D, bidirectional, fft_size=n)
        assert (y - direct).abs().max() <= 3 * math.log2(n or 2 * L) * torch.finfo(torch.float64).eps * scale
    with pytest.raises(ValueError, match='at least 2L = 100'):
        longconv_ref(u, k, D, bidirectional, fft_size=64)


def test_reparam_default_follows_the_model():
    assert ex.wants_reparam(timm.create_model('unireplknet_a'))
    assert not ex.wants_reparam(timm.create_model('inceptionnext_atto'))
    assert not ex.wants_reparam(timm.create_model('liegroup_sl2_small'))


def test_error_budget_follows_sizes():
    """Larger reductions, longer FFTs, more layers and more compared outputs all widen the budget."""
    small = timm.create_model('s4d_lra_listops', depth=1, seq_len=64)
    deep = timm.create_model('s4d_lra_listops', depth=2, seq_len=64)
    long = timm.create_model('s4d_lra_listops', depth=1, seq_len=4096)
    x64, x4096 = ex.ModelInput((64,), 18), ex.ModelInput((4096,), 18)
    base = ex.error_budget(small, x64, 10)
    assert base < ex.error_budget(deep, x64, 10)
    assert base < ex.error_budget(long, x4096, 10)
    assert base < ex.error_budget(small, x64, 1000)
    # still far below what a wrong export gives (order 1), far above float32's own rounding
    assert 100 * ex.UNIT_ROUNDOFF < base < 1e-3


# ----------------------------------------------------------------------------------------------- bench

def test_bench_reports_timm_keys(tmp_path, capsys):
    model, model_input, sidecar = _export('liegroup_cnn_small', {}, None, tmp_path / 'm.onnx', dynamic_batch=True)
    deploy = ex.inference_form(model, model_input, reparam=False)[0]
    rows = ex.bench(deploy, tmp_path / 'm.onnx', 'onnx', model_input, 'liegroup_cnn_small',
                    sum(p.numel() for p in model.parameters()), batch_sizes=(1, 2), num_warm=1, num_bench=2,
                    rounds=2, compile=False)
    assert [(r['runtime'], r['infer_batch_size']) for r in rows] == [
        ('eager', 1), ('onnxruntime', 1), ('eager', 2), ('onnxruntime', 2)]
    for row in rows:
        assert {'infer_samples_per_sec', 'infer_step_time', 'infer_batch_size', 'param_count', 'runtime'} <= set(row)
        assert row['infer_samples_per_sec'] > 0 and row['infer_step_time'] > 0
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows


@pytest.mark.slow
def test_bench_cli_with_torch_compile(tmp_path, capsys):
    argv = ['liegroup_cnn_small', '--out', str(tmp_path / 'm.onnx'), '--bench', '--bench-batch-sizes', '1', '4',
            '--num-warm-iter', '1', '--num-bench-iter', '2', '--bench-rounds', '1']
    assert ex.main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{')]
    assert [r['runtime'] for r in rows] == ['eager', 'torch.compile', 'onnxruntime'] * 2


# ------------------------------------------------------------------------------------- every registered model

def _every_model():
    cases = []
    for name in zoo_model_names():
        if name.startswith('unireplknet'):
            cases += [(name, {}, 64), (name, dict(deploy=True), 64)]
        elif name.startswith('inceptionnext'):
            cases.append((name, {}, 64))
        else:
            cases.append((name, {}, None))  # Lie-group models at 40 px, sequence models at their full length
    return cases


@pytest.mark.exhaustive
@pytest.mark.parametrize('case', _every_model(), ids=_case_id)
def test_every_registered_model_exports_to_onnx(tmp_path, case):
    name, kwargs, img_size = case
    _, _, sidecar = _export(name, kwargs, img_size, tmp_path / 'model.onnx', dynamic_batch=True)
    assert sidecar['verification']['max_rel_error'] <= sidecar['verification']['tolerance']


@pytest.mark.slow
def test_acceptance_command(tmp_path, capsys):
    """`python -m zoo.export unireplknet_a --format onnx` at its 224 px input."""
    assert ex.main(['unireplknet_a', '--format', 'onnx', '--out', str(tmp_path / 'unireplknet_a.onnx')]) == 0
    out = capsys.readouterr().out
    rel = float(out.split('max rel error ')[1].split()[0])
    assert rel < 1e-4
