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


def test_profile_shares_per_kind_of_op():
    (image,) = bench.main(['--model', 'unireplknet_a', *TINY, '--profile'])
    (seq,) = bench.main(['--model', 's4d_lra_retrieval', '--seq-len', '64', *TINY_SEQ, '--bench', 'train', '--profile'])
    for shares in (image['infer_profile'], image['train_profile'], seq['train_profile']):
        assert set(shares) <= {kind for kind, _ in bench.PROFILE_KINDS} | {'dwconv', 'other'}
        assert sum(shares.values()) == pytest.approx(100, abs=0.5)
    assert image['infer_profile']['dwconv'] > 0 and image['train_profile']['matmul'] > 0
    assert seq['train_profile']['fft'] > 0
    assert bench._kind_of('aten::mkldnn_convolution', [[2, 8, 5, 5], [8, 8, 3, 3]]) == 'conv'
    assert bench._kind_of('aten::mkldnn_convolution', [[2, 8, 5, 5], [8, 1, 3, 3]]) == 'dwconv'
    assert bench._kind_of('aten::convolution_backward', [[2, 8, 5, 5], [2, 8, 5, 5], [8, 1, 3, 3]]) == 'dwconv'
    assert bench._kind_of('aten::mkldnn_convolution', [[2, 1, 5, 5], [8, 1, 3, 3]]) == 'conv'  # 1-channel input
    assert bench._kind_of('aten::addmm') == 'matmul'
    assert bench._kind_of('aten::_fft_r2c') == 'fft' and bench._kind_of('aten::gelu') == 'other'


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


def test_gpu_suite_dry_run_end_to_end(tmp_path, capsys):
    """`python -m zoo.bench --suite gpu --dry-run`: every part runs (CPU, Triton interpreter) and writes its outputs."""
    from zoo import gpu_suite

    out = tmp_path / 'suite'
    t0 = time.monotonic()
    summary = bench.main(['--suite', 'gpu', '--dry-run', '--out', str(out)])
    seconds = time.monotonic() - t0
    assert summary['exit_code'] == 0, summary
    assert sorted(p.name for p in out.iterdir()) == [
        'kernels.csv', 'models.csv', 'report.md', 'results.json', 'summary.png', 'tests.csv', 'tests.log']
    results = json.loads((out / 'results.json').read_text())
    env = results['env']
    command = f'python -m zoo.bench --suite gpu --dry-run --out {out}'
    assert env['command'] == command and env['dry_run'] and env['torch'] == torch.__version__
    assert env['triton_interpret'] == '1' and env['wall_s'] <= seconds + 1
    parts = results['parts']
    assert {name: part['status'] for name, part in parts.items()} == dict(tests='done', kernels='done', models='done')

    # tests: pytest -m gpu over the GPU test files; without CUDA every test is collected and skipped
    tests = parts['tests']
    files = {r['test'].split('::')[0] for r in tests['rows']}
    assert {'tests/test_kernels_gpu.py', 'tests/test_models_gpu.py'} <= files
    assert tests['counts']['skipped'] == len(tests['rows']) > 20 and tests['returncode'] == 0

    # kernels: one row per case, ours (Triton in the interpreter) and PyTorch's timed, torch.compile where asked
    kernel_rows = parts['kernels']['rows']
    assert [r['label'] for r in kernel_rows] == [c.label for c in gpu_suite.kernel_cases(dry_run=True)]
    for r in kernel_rows:
        assert not any('error' in k for k in r), r
        assert r['triton_nchw_fwd_ms' if r['kernel'] != 'longconv' else 'triton_fwd_ms'] > 0
        assert r['speedup_fwd'] > 0 and r['speedup_fwdbwd'] > 0
        assert r['command'].startswith(f"python -m zoo.bench --kernel {r['kernel']} ")
    assert kernel_rows[-1]['torch_compile_backend'] == 'eager' and kernel_rows[-1]['compile_s'] > 0
    assert kernel_rows[0]['kernel_size'] == '1x3'  # --kernel-size KHxKW

    # models: every model with the kernels on and off, each row a zoo.bench command
    model_rows = parts['models']['rows']
    assert {r['model'] for r in model_rows} == {
        'inceptionnext_tiny', 'unireplknet_t', 's4d_lra_pathx', 'sgconv_lra_pathx', 'liegroup_gl2'}
    assert all('error' not in r for r in model_rows), [r for r in model_rows if 'error' in r]
    pairs = gpu_suite.model_pairs(model_rows)
    assert all(p['on'] > 0 and p['off'] > 0 and p['speedup'] > 0 for p in pairs)
    assert {p['unit'] for p in pairs if p['model'].endswith('pathx')} == {'tokens/s'}
    (r,) = [r for r in model_rows if r['model'] == 'unireplknet_t' and r['kernels_on']]
    assert r['reparam'] and '--reparam' in r['command'] and '--kernel-backend triton' in r['command']
    rerun = bench.main(r['command'].split()[3:4] + [a.strip("'") for a in r['command'].split()[4:]])
    assert 'error' not in rerun[0]  # a row's command reruns it alone

    # every table and CSV says what it was measured on and with which command
    report = (out / 'report.md').read_text()
    caption = gpu_suite.env_line(env)
    assert report.count(caption) == 3 and '**Dry run**' in report
    for name in ('tests.csv', 'kernels.csv', 'models.csv'):
        header, *rows = (out / name).read_text().splitlines()
        assert header.split(',')[-5:] == ['gpu', 'driver', 'torch', 'triton', 'command'] and rows
    assert (out / 'summary.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert '"kernel": "longconv"' in capsys.readouterr().out  # the JSON rows stream to stdout as they come


def test_gpu_suite_plan_is_runnable_and_uses_the_models_shapes():
    """Every command of the GPU run parses; the kernel cases are shapes UniRepLKNet-T / InceptionNeXt-T run."""
    import kernels
    from zoo import gpu_suite

    parser = bench.build_parser()
    cases = gpu_suite.kernel_cases(dry_run=False)
    calls = {}
    for case in cases:
        args = parser.parse_args(gpu_suite.kernel_flags(case, dry_run=False))
        assert args.precision == 'bfloat16' and args.batch_size == (16 if case.op == 'longconv' else 64)
        calls[case.label] = bench.explicit_kernel_call(args)
    recorded = set()
    for name in ('unireplknet_t', 'inceptionnext_tiny'):  # shapes only: the meta device computes nothing
        with torch.device('meta'):
            model = timm.create_model(name).eval()
        with torch.no_grad(), kernels.record_calls() as seen:
            model(torch.randn(1, 3, 224, 224, device='meta'))
        recorded |= {(op, info['x'], info.get('weight', info.get('kernel_sizes')), info.get('dilation'))
                     for op, info in seen}
    from_models = [c.label for c in cases if 'UniRepLKNet-T' in c.label or 'InceptionNeXt-T' in c.label]
    assert len(from_models) == 10
    for label in from_models:
        call = calls[label]
        key = (cases[[c.label for c in cases].index(label)].op, call['x'],
               call.get('weight', call.get('kernel_sizes')), call.get('dilation'))
        assert key in recorded, label
    assert {(c['u'][1:], c['bidirectional']) for c in calls.values() if 'u' in c} == {
        ((256, L), bi) for L in (1024, 4096, 16384) for bi in (False, True)}
    assert calls['1x11 band']['weight'] == (96, 1, 1, 11) and calls['11x1 band']['weight'] == (96, 1, 11, 1)

    runs = gpu_suite.model_runs(dry_run=False)
    assert {r.model for r in runs} == {'inceptionnext_tiny', 'unireplknet_t', 's4d_lra_pathx', 'sgconv_lra_pathx',
                                       'liegroup_gl2'}
    for run in runs:
        args = bench.apply_model_defaults(parser.parse_args(['--model', run.model, *run.flags]))
        assert args.batch_size == (64 if run.model.endswith('pathx') else 128)
        assert args.kernel_backend == (run.kernels if run.kernels in ('triton', 'torch') else None)
        if run.kernels in ('winograd', 'direct'):
            assert args.model_kwargs == {'conv_backend': run.kernels} and args.precision == 'float32'
    groups = {(r.group, r.model): sorted(x.on for x in runs if (x.group, x.model) == (r.group, r.model)) for r in runs}
    assert all(v == [False, True] for k, v in groups.items() if k != ('bf16', 'liegroup_gl2'))  # on / off pairs
    paper = {(r.model, r.flags[r.flags.index('--bench') + 1]) for r in runs if 'paper' in r.group}
    assert paper == {('inceptionnext_tiny', 'train'), ('unireplknet_t', 'inference')}

    assert bench.build_parser().parse_args(['--kernel-size', '1x11']).kernel_size == (1, 11)
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(['--kernel-size', '1x'])


def test_gpu_suite_budget_and_device_checks(tmp_path, monkeypatch):
    # a budget too small for anything: every case is listed as not run, with its command, and the exit code says so
    summary = bench.main(['--suite', 'gpu', '--dry-run', '--budget', '0.01', '--parts', 'kernels,models',
                          '--out', str(tmp_path)])
    assert summary['exit_code'] == 3
    parts = summary['parts']
    assert parts['tests']['status'] == 'not run (--parts)'
    assert all(not p['rows'] and p['not_run'] and p['status'].startswith('stopped') for p in
               (parts['kernels'], parts['models']))
    report = (tmp_path / 'report.md').read_text()
    assert 'Not run (time budget)' in report and parts['models']['not_run'][0]['command'] in report
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit, match='no CUDA device here; `--dry-run`'):
        bench.main(['--suite', 'gpu', '--out', str(tmp_path)])


@pytest.mark.slow
def test_gpu_suite_dry_run_command_line(tmp_path):
    """The command itself, without TRITON_INTERPRET in the environment: it restarts itself with it and succeeds."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != 'TRITON_INTERPRET'}
    done = subprocess.run([sys.executable, '-m', 'zoo.bench', '--suite', 'gpu', '--dry-run', '--out', str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'restarting in a subprocess with TRITON_INTERPRET=1' in done.stderr
    results = json.loads((tmp_path / 'results.json').read_text())
    assert results['env']['triton_interpret'] == '1' and results['exit_code'] == 0
    assert all('error' not in r for r in results['parts']['models']['rows'])
