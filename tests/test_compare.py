"""zoo.compare: every suite end to end in its tiny configuration, the output check, bad checkouts, the memory probe.

The official code is not available here, so each suite that needs `--official` gets a stand-in checkout written into
tmp_path: the same file paths, class and function names and constructor signatures that `zoo.official` imports, each
wrapping this project's own layer or model in a few lines (with `SHIFT` added to a weight, to make the two sides
differ). Real runs against the official checkouts: docs/benchmarks.md, "Against the official code (CPU)".
"""
import json
import re
import sys
import textwrap

import pytest
import timm
import torch

from zoo import compare

# file -> source; `{shift}` is added to one weight of the official side's state dict (0: the same weights)
STAND_INS = {
    's4d': {
        'models/s4/s4d.py': '''
            from zoo.models.s4d import S4D as _Ours

            class S4D(_Ours):
                def __init__(self, d_model, d_state=64, dropout=0.0, transposed=True, **kernel_args):
                    super().__init__(d_model, d_state, dropout=dropout, transposed=transposed, **kernel_args)

                def forward(self, u, **kwargs):
                    return super().forward(u), None
            ''',
        'models/s4/s4.py': '''
            import torch.nn as nn
            from torch.func import functional_call
            from zoo.official import s4block_state_dict, s4d_for_s4block

            class S4Block(nn.Module):
                """Our S4D, its parameters stored in the official layout (the inverse of s4block_state_dict)."""
                def __init__(self, d_model, d_state=64, mode='diag', init='diag-inv', disc='bilinear',
                             bidirectional=False, transposed=True, n_ssm=None, verbose=False, lr=None, **options):
                    super().__init__()
                    kwargs = dict(d_model=d_model, d_state=d_state, init=init, disc=disc, n_ssm=n_ssm,
                                  bidirectional=bidirectional, **options)
                    self.__dict__['ours'] = ours = s4d_for_s4block(kwargs, transposed=transposed)
                    sd = ours.state_dict()
                    self.layer, self.layer.kernel = nn.Module(), nn.Module()
                    self.layer.D = nn.Parameter(sd['D'][None] + {shift})
                    for name, value in (('inv_dt', sd['kernel.log_dt'][:, None]), ('A_real', sd['kernel.log_A_real']),
                                        ('A_imag', -sd['kernel.A_imag']), ('B', sd['kernel.B'][None]),
                                        ('C', sd['kernel.C'][None])):
                        setattr(self.layer.kernel, name, nn.Parameter(value))
                    self.output_linear = nn.Sequential(nn.Linear(d_model, 2 * d_model))
                    self.output_linear[0].weight.data = sd['output_linear.0.weight'][..., 0]
                    self.output_linear[0].bias.data = sd['output_linear.0.bias']

                def forward(self, x, **kwargs):
                    params = s4block_state_dict(dict(self.named_parameters()), self.ours)
                    return functional_call(self.ours, params, (x,)), None
            ''',
    },
    'sgconv': {
        'gconv_standalone.py': '''
            from zoo.models.sgconv import SGConv

            class GConv(SGConv):
                def forward(self, u, return_kernel=False):
                    return super().forward(u), None

                def state_dict(self, *args, **kwargs):
                    sd = super().state_dict(*args, **kwargs)
                    sd['D'] = sd['D'] + {shift}
                    return sd
            ''',
    },
    'liegroup': {
        'rgenn/__init__.py': '',
        'rgenn/layers.py': '''
            import torch.nn as nn

            class GConv2d(nn.Module):
                pass
            ''',
        'train.py': '''
            import argparse
            import torch
            import torch.nn as nn
            from zoo.models.liegroup import LieGroupResNet

            def parse_args():
                parser = argparse.ArgumentParser()
                for name, default in (('liegroup', 'sl2'), ('blocks_dim', 40), ('gsamples', 10), ('inr_dim', 60)):
                    parser.add_argument('--' + name, type=type(default), default=default)
                return parser.parse_args()

            class _Layer:
                """The release's sampled layers; the last one's samples are what ours needs."""
                def __init__(self, net=None):
                    self.net = net

                def attach_samples(self, g_inv, g_tilde=None, **kwargs):
                    if self.net is not None:
                        self.net.set_samples((g_tilde, torch.linalg.inv(g_tilde)), (torch.linalg.inv(g_inv), g_inv))

            class GResNet(nn.Module):
                def __init__(self, net):
                    super().__init__()
                    self.net = net
                    self.stem = [_Layer()]
                    block = _Layer()
                    block.conv1 = block.conv2 = _Layer()
                    self.blocks = [block, None, None, None, _Layer(net)]

                def forward(self, x):
                    return self.net(x)

            class _Group:
                def __init__(self, net):
                    self.net = net

                def sample_pair(self, n):
                    return tuple(self.net.sampler.sample(n))

            class SamplingWrapper(nn.Module):
                def __init__(self, net):
                    super().__init__()
                    self.model = GResNet(net)
                    self.group = _Group(net)

                def forward(self, x):
                    return self.model(x)

                def state_dict(self, *args, **kwargs):
                    sd = self.model.net.state_dict(*args, **kwargs)
                    sd['head.fc.bias'] = sd['head.fc.bias'] + {shift}
                    return sd

            def build_model(config):
                net = LieGroupResNet(group=config.liegroup, width=config.blocks_dim, num_samples=config.gsamples,
                                     kernel_mlp=dict(hidden=config.inr_dim))
                return SamplingWrapper(net)
            ''',
    },
    'unireplknet': {
        'unireplknet.py': '''
            from timm.models.registry import register_model  # as the official file: zoo.official must neutralize it
            from zoo.models.unireplknet import UniRepLKNet as _Ours

            class UniRepLKNet(_Ours):
                def __init__(self, attempt_use_lk_impl=True, **kwargs):
                    super().__init__(**kwargs)

                def state_dict(self, *args, **kwargs):
                    sd = super().state_dict(*args, **kwargs)
                    sd['head.bias'] = sd['head.bias'] + {shift}
                    return sd

            @register_model
            def unireplknet_a(in_1k_pretrained=False, **kwargs):
                return UniRepLKNet(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), **kwargs)
            ''',
    },
}

TINY = ['--repeats', '2', '--warmup', '1']
TINY_ARGS = {
    's4d': ['--lengths', '32', '-B', '2', '-H', '8', '-N', '4'],
    'sgconv': ['--lengths', '32', '-B', '2', '-H', '8', '--kernel-dim', '4'],
    'liegroup': ['--groups', 'gl2', '--batch-sizes', '2', '--width', '2', '--num-samples', '2',
                 '--kernel-mlp-hidden', '4', '--img-size', '14'],
    'unireplknet': ['--models', 'a', '--img-size', '32', '-b', '1'],
    'inceptionnext': ['--models', 'atto', '--img-size', '32', '-b', '2'],  # BatchNorm: 2 samples
    'dwconv-layout': ['--shapes', '4x6', '--kernel-size', '5'],
    'winograd': ['--shapes', '6x9', '-b', '2'],
}
ROWS = {'s4d': 2, 'sgconv': 1, 'liegroup': 3, 'unireplknet': 4, 'inceptionnext': 4, 'dwconv-layout': 2, 'winograd': 2}
EXPECTED_FILE = {'s4d': 'models/s4/s4d.py', 'sgconv': 'gconv_standalone.py', 'liegroup': 'train.py',
                 'unireplknet': 'unireplknet.py'}


@pytest.fixture
def isolated_imports(monkeypatch):
    """Undo what importing a stand-in checkout does to sys.path and sys.modules (same module names every test)."""
    monkeypatch.setattr(sys, 'path', list(sys.path))
    before = dict(sys.modules)
    yield
    for name in [n for n in sys.modules if sys.modules[n] is not before.get(n)]:
        if name in before:
            sys.modules[name] = before[name]
        else:
            del sys.modules[name]


def write_stand_in(root, suite, shift=0.0):
    for rel, source in STAND_INS[suite].items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).replace('{shift}', repr(shift)))
    return root


def run_suite(suite, tmp_path, *extra):
    argv = [suite, *TINY_ARGS[suite], *TINY, *extra]
    if suite in STAND_INS:
        argv += ['--official', str(write_stand_in(tmp_path / 'official', suite))]
    return compare.main(argv)


@pytest.mark.parametrize('suite', list(compare.SUITES))
def test_suite_end_to_end(suite, tmp_path, capsys, isolated_imports):
    rows = run_suite(suite, tmp_path, '--json', str(tmp_path / 'rows.json'))
    assert len(rows) == ROWS[suite]
    for row in rows:
        assert row['a_median_ms'] > 0 and row['b_median_ms'] > 0 and row['ratio'] > 0
        assert row['ratio_a_first'] > 0 and row['ratio_b_first'] > 0  # both orders ran
        assert len(row['a_ms']) == len(row['b_ms']) == 2
        assert row['max_rel_diff'] < 1e-4
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith('| ')]
    assert len(table) == 1 + ROWS[suite]  # column names, then one row per comparison
    assert f'**zoo.compare {suite}**' in out and 'torch ' in out and 'timm ' in out and 'UTC' in out
    assert f'python -m zoo.compare {suite}' in out
    assert json.loads((tmp_path / 'rows.json').read_text())[0]['comparison'] == rows[0]['comparison']
    if suite == 'unireplknet':  # the official file's @register_model did not replace ours
        assert type(timm.create_model('unireplknet_a', num_classes=0)).__module__ == 'zoo.models.unireplknet'


@pytest.mark.parametrize('suite', ['sgconv', 'liegroup'])
def test_different_outputs_stop_the_run(suite, tmp_path, capsys, isolated_imports):
    official = write_stand_in(tmp_path / 'official', suite, shift=0.5)
    with pytest.raises(SystemExit, match=r'outputs of official and ours differ .* not timed'):
        compare.main([suite, *TINY_ARGS[suite], *TINY, '--official', str(official)])
    assert '| ' not in capsys.readouterr().out


@pytest.mark.parametrize('suite', list(EXPECTED_FILE))
def test_bad_official_path_names_the_expected_file(suite, tmp_path):
    expected = re.escape(str(tmp_path / 'nowhere')) + '.*' + re.escape(EXPECTED_FILE[suite])
    with pytest.raises(SystemExit, match=expected):
        compare.main([suite, '--official', str(tmp_path / 'nowhere')])
    with pytest.raises(SystemExit, match='--official PATH .* is required'):
        compare.main([suite])


def test_memory_probe_reports_one_sides_peak(capsys):
    """What `--memory` runs in a fresh process per side: here in-process, on a shape whose call needs ~8 MiB."""
    compare.main(['dwconv-layout', '--shapes', '32x128', '--kernel-size', '3', '-b', '4', '--warmup', '1',
                  '--probe', '1:b'])
    peak = json.loads(capsys.readouterr().out)['peak_mib']
    assert 0 <= peak < 1024


def test_tolerance_follows_dtype_and_size():
    y = torch.ones(4)
    compare.check_outputs('x', y, y * (1 + 1e-5), 1024, ('a', 'b'))
    with pytest.raises(compare.OutputMismatch, match='x: the outputs of a and b differ'):
        compare.check_outputs('x', y, y * (1 + 1e-3), 1024, ('a', 'b'))
    with pytest.raises(compare.OutputMismatch, match='shapes differ'):
        compare.check_outputs('x', y, y[:2], 1024, ('a', 'b'))
