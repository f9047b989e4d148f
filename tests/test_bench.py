"""zoo.bench: timm benchmark.py keys and flags, several models per run, sequence inputs, bad input. Tiny CPU runs."""
import contextlib
import json
import time

import pytest
import timm
import torch
import torch.nn as nn

from zoo import bench

TINY = ['-b', '2', '--img-size', '32', '--num-warm-iter', '1', '--num-bench-iter', '1', '--device', 'cpu']
INFER_KEYS = {'infer_samples_per_sec', 'infer_step_time', 'infer_batch_size', 'infer_img_size', 'infer_gmacs'}
TRAIN_KEYS = {'train_samples_per_sec', 'train_step_time', 'train_batch_size', 'train_img_size'}


def _stdout_objects(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


@pytest.mark.slow
def test_zoo_and_timm_models_with_results_file_and_plot(tmp_path, capsys):
    csv_file, png = tmp_path / 'bench.csv', tmp_path / 'bench.png'
    results = bench.main(['--model', 'inceptionnext_atto', '--model', 'resnet10t', *TINY,
                          '--results-file', str(csv_file), '--plot', str(png)])
    assert [r['model'] for r in results] == ['inceptionnext_atto', 'resnet10t']
    assert _stdout_objects(capsys) == results  # one JSON object per model on stdout
    for r in results:
        assert INFER_KEYS | TRAIN_KEYS | {'model', 'param_count'} == set(r)
        assert r['infer_batch_size'] == r['train_batch_size'] == 2
        assert r['infer_img_size'] == r['train_img_size'] == 32
        assert r['infer_samples_per_sec'] > 0 and r['train_step_time'] > 0
    assert results[0]['param_count'] == round(sum(
        p.numel() for p in timm.create_model('inceptionnext_atto').parameters()) / 1e6, 2) == 4.16
    header = csv_file.read_text().splitlines()[0].split(',')
    assert header[:6] == ['model', 'infer_img_size', 'infer_samples_per_sec', 'infer_step_time',
                          'infer_batch_size', 'param_count']  # timm's published column order
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_gmacs_match_timm_published_figure():
    # timm's results tables list resnet10t at 224 px as 1.1 GMACs
    model = timm.create_model('resnet10t').eval()
    assert bench.count_gmacs(model, torch.randn(1, 3, 224, 224), contextlib.nullcontext) == 1.1


def test_bench_modes_and_json_results(tmp_path):
    out = tmp_path / 'r.json'
    (infer,) = bench.main(['--model', 'resnet10t', '--bench', 'inference', *TINY,
                           '--results-file', str(out), '--results-format', 'json'])
    assert INFER_KEYS <= set(infer) and not TRAIN_KEYS & set(infer)
    assert json.loads(out.read_text()) == [infer]
    (train,) = bench.main(['--model', 'resnet10t', '--bench', 'train', *TINY])
    assert TRAIN_KEYS <= set(train) and not INFER_KEYS & set(train)


def test_precision_layout_and_model_options():
    (r,) = bench.main(['--model', 'inceptionnext_atto', *TINY, '--precision', 'amp_bfloat16', '--channels-last',
                       '--reparam', '--grad-checkpointing', '--kernel-backend', 'torch',
                       '--model-kwargs', 'drop_path_rate=0.1', 'num_classes=7'])
    assert 'error' not in r and r['train_samples_per_sec'] > 0


class _SlowNet(nn.Module):
    """Sleeps a known time per forward, so the measured step time has a known lower bound."""

    def __init__(self, delay=0.02):
        super().__init__()
        self.delay = delay
        self.fc = nn.Linear(3, 5)
        self.pretrained_cfg = dict(input_size=(3, 4, 4))

    def forward(self, x):
        time.sleep(self.delay)
        return self.fc(x.mean((2, 3)))


def test_timing_and_train_step(monkeypatch):
    net = _SlowNet()
    before = net.fc.weight.detach().clone()
    monkeypatch.setattr(bench, 'create_bench_model', lambda name, args: net)
    (r,) = bench.main(['--model', 'slow', '-b', '4', '--num-warm-iter', '1', '--num-bench-iter', '3'])
    for prefix in ('infer', 'train'):
        assert r[f'{prefix}_step_time'] >= 20.0  # ms, at least the sleep
        assert r[f'{prefix}_samples_per_sec'] <= 4 / 0.02
    assert r['infer_img_size'] == 4
    assert not torch.equal(before, net.fc.weight)  # the SGD step ran


class _TokenNet(nn.Module):
    """A token classifier shaped like the zoo's sequence models: int ids in, `vocab_size`, cfg input_size (2, L)."""

    def __init__(self):
        super().__init__()
        self.vocab_size = 11
        self.embed = nn.Embedding(self.vocab_size, 8)
        self.head = nn.Linear(8, 3)
        self.pretrained_cfg = dict(input_size=(2, 16))
        self.seen_shapes = []

    def forward(self, ids):
        assert ids.dtype == torch.long and int(ids.max()) < self.vocab_size
        self.seen_shapes.append(tuple(ids.shape))
        return self.head(self.embed(ids).mean((1, 2)))


def test_token_model_inputs_seq_len_and_tokens_per_sec(monkeypatch):
    net = _TokenNet()
    monkeypatch.setattr(bench, 'create_bench_model', lambda name, args: net)
    (r,) = bench.main(['--model', 'tok', '-b', '2', '--num-warm-iter', '0', '--num-bench-iter', '1',
                       '--seq-len', '24'])
    assert set(net.seen_shapes) == {(1, 2, 24), (2, 2, 24)}  # FLOP count at batch 1, then the timed batch
    assert r['infer_img_size'] == r['train_img_size'] == 24
    assert r['infer_tokens_per_sec'] == pytest.approx(r['infer_samples_per_sec'] * 48, rel=1e-3)
    assert r['train_tokens_per_sec'] == pytest.approx(r['train_samples_per_sec'] * 48, rel=1e-3)


TINY_SEQ = ['-b', '2', '--num-warm-iter', '1', '--num-bench-iter', '1', '--device', 'cpu',
            '--model-kwargs', 'embed_dim=8', 'depth=1']


def test_zoo_sequence_models():
    # token retrieval model (B, 2, L) at --seq-len, and an image-task model fed (B, 1, H, W) at --img-size
    (tokens,) = bench.main(['--model', 's4d_lra_retrieval', '--seq-len', '64', *TINY_SEQ])
    assert tokens['infer_img_size'] == 64
    assert tokens['train_tokens_per_sec'] == pytest.approx(tokens['train_samples_per_sec'] * 2 * 64, rel=1e-3)
    (pixels,) = bench.main(['--model', 'sgconv_lra_image', '--img-size', '8', '--kernel-backend', 'torch', *TINY_SEQ])
    assert pixels['infer_img_size'] == 8
    assert pixels['infer_tokens_per_sec'] == pytest.approx(pixels['infer_samples_per_sec'] * 64, rel=1e-3)
    with pytest.raises(SystemExit, match='takes images; set its size with --img-size'):
        bench.main(['--model', 'sgconv_lra_image', '--seq-len', '64', *TINY_SEQ])


def test_in_chans_from_model_kwargs():
    (r,) = bench.main(['--model', 'resnet10t', *TINY, '--bench', 'inference', '--model-kwargs', 'in_chans=1'])
    assert 'error' not in r


def test_unknown_model_alone_is_a_clear_error():
    with pytest.raises(SystemExit, match="unknown model 'inceptionnext_tinyy'.*did you mean inceptionnext_tiny"):
        bench.main(['--model', 'inceptionnext_tinyy', *TINY])


def test_one_failure_among_several_records_error(capsys):
    results = bench.main(['--model', 'no_such_net', '--model', 'resnet10t', '--model', 'resnet10t',
                          '--kernel-backend', 'torch', *TINY, '--bench', 'inference'])
    assert [r['model'] for r in results] == ['no_such_net', 'resnet10t', 'resnet10t']
    assert "unknown model 'no_such_net'" in results[0]['error']
    assert 'resnet10t has no kernel_backend argument' in results[1]['error']
    assert len(_stdout_objects(capsys)) == 3


def test_bad_arguments():
    with pytest.raises(SystemExit, match='at least one --model'):
        bench.main(['-b', '2'])
    with pytest.raises(SystemExit):  # argparse: not key=value
        bench.main(['--model', 'resnet10t', '--model-kwargs', 'oops'])
    with pytest.raises(SystemExit, match='no model matches'):
        bench.main(['--model', 'zzz_nothing_*'])


@pytest.mark.slow
def test_torchcompile_eager_backend():
    (r,) = bench.main(['--model', 'resnet10t', *TINY, '--torchcompile', 'eager'])
    assert 'error' not in r and r['train_samples_per_sec'] > 0
