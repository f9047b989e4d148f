"""The GPU proof in one command: `python -m zoo.bench --suite gpu [--out DIR] [--budget SECONDS] [--dry-run]`.

Three parts, in this order, inside one wall-time budget (default 480 s, docs/gpu.md):

1. tests: `pytest -m gpu` over tests/test_kernels_gpu.py, tests/test_models_gpu.py and every other test file with a
   `pytest.mark.gpu` test, in a subprocess that is stopped when its share of the budget is spent;
2. kernels: the micro-benchmarks of `kernels/bench.py` (`make_case` / `run_case`) for dwconv2d, the fused Inception
   mixer and longconv against the fastest PyTorch path (NCHW and channels_last, `cudnn.benchmark` on, and
   `torch.compile` of that path where the budget leaves time to compile);
3. models: end-to-end train / inference throughput of whole models through `zoo.bench.benchmark_model`, with the
   kernels on and off (`--kernel-backend triton` vs `torch`; Winograd vs direct for the Lie-group model).

Every benchmark row is one `python -m zoo.bench ...` command (kept in its `command` column), so any row can be rerun
alone. A part that runs out of its share records what it did not run; the time it leaves unused goes to the next
part. A watchdog writes whatever was measured and exits 5 s before the budget (counted from the process start) ends.

Outputs in one folder (default outputs/bench/gpu-<UTC time>): report.md (environment, command, tables),
results.json (everything), tests.csv, kernels.csv, models.csv, summary.png, tests.log. Every table, CSV row and the
plot carry the GPU name, driver, torch / triton versions and the command.

`--dry-run` runs the same plumbing on the CPU in seconds: Triton's interpreter (TRITON_INTERPRET=1 is set before any
kernel is compiled; if that is too late in this process the suite reruns itself in a subprocess), float32, tiny
shapes, a representative subset of the cases, one timed iteration; the pytest part
(its GPU tests skip without CUDA) runs in this process. Its numbers mean nothing; tests/test_bench.py checks its
outputs.
"""
import contextlib
import csv
import dataclasses
import datetime
import gc
import json
import logging
import os
import platform
import re
import shlex
import subprocess
import sys
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional

import torch

_logger = logging.getLogger('zoo.gpu_suite')

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 480.0  # the whole command, its start-up included
DRY_BUDGET_S = 120.0
# Shares of the budget: tests, kernels; models get the rest minus the reserve for the report. Unused time moves on.
TESTS_SHARE, KERNELS_SHARE = 0.40, 0.20
RESERVE_S = 20.0  # at most this, and at most a tenth of the budget, is kept for writing the outputs
PARTS = ('tests', 'kernels', 'models')
# The test files the tests part always runs (with -m gpu); any other test file with a gpu-marked test is added.
GPU_TEST_FILES = ('tests/test_kernels_gpu.py', 'tests/test_models_gpu.py')
BF16, FP32 = 'amp_bfloat16', 'float32'


@dataclasses.dataclass
class KernelCase:
    """One micro-benchmark: `python -m zoo.bench --kernel <op> <flags>`."""
    label: str
    op: str
    flags: List[str]
    compile: bool = False  # also time torch.compile of the fastest PyTorch path (when the budget allows)


@dataclasses.dataclass
class ModelRun:
    """One end-to-end run: `python -m zoo.bench --model <model> <flags>` with the kernels on or off."""
    group: str  # rows with the same group compare kernels on / off
    model: str
    flags: List[str]
    kernels: str  # 'triton' | 'torch' (kernel_backend), 'winograd' | 'direct' (conv_backend), 'cudnn'
    on: bool  # kernels on (True) or off (False; also where no kernel of ours applies, 'cudnn')


def _dw(label, channels, size, kernel, dilation=1, compile=False) -> KernelCase:
    return KernelCase(label, 'dwconv2d', ['--channels', str(channels), '--img-size', str(size), '--kernel-size',
                                          str(kernel), '--dilation', str(dilation)], compile)


def _inception(label, channels, size, band=11, compile=True) -> KernelCase:
    return KernelCase(label, 'inception_dw', ['--channels', str(channels), '--img-size', str(size),
                                              '--kernel-size', '3', '--band-kernel-size', str(band)], compile)


def _longconv(label, channels, seq_len, bidirectional, compile=True) -> KernelCase:
    return KernelCase(label, 'longconv', ['--channels', str(channels), '--seq-len', str(seq_len)]
                      + (['--bidirectional'] if bidirectional else []), compile)


def kernel_cases(dry_run: bool) -> List[KernelCase]:
    """The micro-benchmark cases. UniRepLKNet-T: stages 80x56², 160x28², 320x14², 640x7², 3x3 in stage 1, 13x13
    with dilated reparam branches (5x5, 7x7 d2, 3x3 d3..d5) after; InceptionNeXt-T: 96..768 channels at 56²..7²
    (3x3 + 1x11 + 11x1 on C/8 channels each); S4D / SGConv Path-X: H = 256, L up to 16K."""
    if dry_run:  # one case of each kind; the Triton interpreter takes ~0.1 s per kernel launch
        nchw = ['--impl', 'triton_nchw', '--impl', 'torch_nchw', '--impl', 'torch_cl']
        return [_dw('dry: band', 4, 8, '1x3'), KernelCase('dry: dilated', 'dwconv2d', _dw('', 4, 8, 3, 2).flags + nchw),
                KernelCase('dry: mixer', 'inception_dw', _inception('', 16, 8, band=3).flags + [
                    '--impl', 'triton_nchw', '--impl', 'timm_nchw', '--impl', 'timm_cl']),
                _longconv('dry: bidirectional', 2, 64, True)]
    # torch.compile cannot change a lone F.conv2d (it calls the same cuDNN kernel), so only the mixer (split, three
    # convs, cat) and the long convolution (pad, FFTs, product, skip) get a compiled baseline.
    cases = [_dw(f'13x13, UniRepLKNet-T stage {s}', c, r, 13) for s, c, r in ((2, 160, 28), (3, 320, 14), (4, 640, 7))]
    cases += [_dw('3x3, UniRepLKNet-T stage 1', 80, 56, 3), _dw('31x31 (RepLKNet-31 size)', 160, 28, 31),
              _dw('1x11 band', 96, 56, '1x11'), _dw('11x1 band', 96, 56, '11x1'),
              _dw('7x7 dilation 2, UniRepLKNet-T stage-2 branch', 160, 28, 7, 2),
              _dw('3x3 dilation 5, UniRepLKNet-T stage-3 branch', 320, 14, 3, 5)]
    cases += [_inception(f'InceptionNeXt-T stage {s}', c, r) for s, (c, r) in
              enumerate(((96, 56), (192, 28), (384, 14), (768, 7)), 1)]
    cases += [_longconv(f'L={L // 1024}K {"bidirectional" if bi else "causal"}', 256, L, bi)
              for L in (1024, 4096, 16384) for bi in (False, True)]
    return cases


def kernel_flags(case: KernelCase, dry_run: bool) -> List[str]:
    """The zoo.bench flags of a case, batch, dtype and iterations included (not the compile flag)."""
    if dry_run:
        common = ['-b', '1', '--precision', 'float32', '--device', 'cpu', '--num-warm-iter', '0',
                  '--num-bench-iter', '1']
    else:
        common = ['-b', '16' if case.op == 'longconv' else '64', '--precision', 'bfloat16', '--num-warm-iter', '10',
                  '--num-bench-iter', '50']
    return ['--kernel', case.op, *case.flags, *common]


def _pair(group, model, flags, switch) -> List[ModelRun]:
    """The kernels-on and kernels-off runs of one configuration."""
    if switch == 'kernel_backend':
        return [ModelRun(group, model, flags + ['--kernel-backend', k], k, k == 'triton') for k in ('triton', 'torch')]
    return [ModelRun(group, model, flags + ['--model-kwargs', f'conv_backend={k}'], k, k == 'winograd')
            for k in ('winograd', 'direct')]


# Tiny versions of the models for the dry run: the same registered names and code paths, a few channels.
DRY_MODEL_FLAGS = {
    'inceptionnext_tiny': ['--img-size', '16', '--model-kwargs', 'depths=(1,)', 'dims=(8,)', 'band_kernel_size=3'],
    'unireplknet_t': ['--img-size', '32', '--model-kwargs', 'depths=(1,1,1,1)', 'dims=(8,8,8,8)',
                      'kernel_sizes=((3,),(0,),(0,),(0,))'],
    's4d_lra_pathx': ['--img-size', '8', '--model-kwargs', 'embed_dim=2', 'depth=1'],
    'sgconv_lra_pathx': ['--img-size', '16', '--model-kwargs', 'embed_dim=2', 'depth=1'],  # L > kernel_dim 64
    'liegroup_gl2': ['--img-size', '16', '--model-kwargs', 'width=4', 'num_samples=2'],
}


def model_runs(dry_run: bool) -> List[ModelRun]:
    """The end-to-end runs, most important first (the budget cuts from the end): bf16 AMP at batch 128 (64 for the
    Path-X models: at L = 16K their FFT buffers are B x 256 x 16K complex per layer), the fp32 rows the papers publish
    (InceptionNeXt-T training, UniRepLKNet-T inference, which the paper times in its deploy form, hence --reparam),
    the Lie-group model (its kernel is the fp32 Winograd conv; under AMP it runs cuDNN either way), then
    channels_last variants of the ConvNets."""
    if dry_run:
        runs = _pair('dry', 'inceptionnext_tiny', ['--bench', 'both'], 'kernel_backend')
        runs += _pair('dry deploy', 'unireplknet_t', ['--bench', 'inference', '--reparam'], 'kernel_backend')
        runs += _pair('dry', 's4d_lra_pathx', ['--bench', 'both'], 'kernel_backend')
        runs += _pair('dry', 'sgconv_lra_pathx', ['--bench', 'both'], 'kernel_backend')
        runs += _pair('dry', 'liegroup_gl2', ['--bench', 'both'], 'conv_backend')
        for run in runs:
            extra = DRY_MODEL_FLAGS[run.model]
            split = extra.index('--model-kwargs')
            flags = list(run.flags)
            if '--model-kwargs' in flags:  # one --model-kwargs list: append the tiny sizes to it
                flags[flags.index('--model-kwargs') + 1:flags.index('--model-kwargs') + 1] = extra[split + 1:]
                extra = extra[:split]
            run.flags = ['--precision', 'float32', '-b', '1', '--device', 'cpu', '--num-warm-iter', '0',
                         '--num-bench-iter', '1'] + flags + extra
        return runs

    def common(precision, batch):
        return ['--precision', precision, '-b', str(batch), '--num-warm-iter', '3', '--num-bench-iter', '10']

    runs = []
    runs += _pair('bf16', 'inceptionnext_tiny', ['--bench', 'both', *common(BF16, 128)], 'kernel_backend')
    runs += _pair('bf16', 'unireplknet_t', ['--bench', 'train', *common(BF16, 128)], 'kernel_backend')
    runs += _pair('bf16 deploy', 'unireplknet_t', ['--bench', 'inference', '--reparam', *common(BF16, 128)],
                  'kernel_backend')
    runs += _pair('bf16', 's4d_lra_pathx', ['--bench', 'both', *common(BF16, 64)], 'kernel_backend')
    runs += _pair('bf16', 'sgconv_lra_pathx', ['--bench', 'both', *common(BF16, 64)], 'kernel_backend')
    runs.append(ModelRun('bf16', 'liegroup_gl2', ['--bench', 'both', *common(BF16, 128)], 'cudnn', False))
    runs += _pair('fp32 (paper)', 'inceptionnext_tiny', ['--bench', 'train', *common(FP32, 128)], 'kernel_backend')
    runs += _pair('fp32 deploy (paper)', 'unireplknet_t', ['--bench', 'inference', '--reparam', *common(FP32, 128)],
                  'kernel_backend')
    runs += _pair('fp32', 'liegroup_gl2', ['--bench', 'both', *common(FP32, 128)], 'conv_backend')
    runs += _pair('bf16 channels_last', 'inceptionnext_tiny', ['--bench', 'both', '--channels-last',
                                                               *common(BF16, 128)], 'kernel_backend')
    runs += _pair('bf16 channels_last', 'unireplknet_t', ['--bench', 'train', '--channels-last', *common(BF16, 128)],
                  'kernel_backend')
    runs += _pair('bf16 deploy channels_last', 'unireplknet_t', ['--bench', 'inference', '--reparam',
                                                                 '--channels-last', *common(BF16, 128)],
                  'kernel_backend')
    return runs


def command_line(flags: List[str]) -> str:
    return 'python -m zoo.bench ' + shlex.join(flags)


# ----------------------------------------------------------------------------------------------------------- env


def _run_quiet(cmd: List[str], timeout: float = 10.0) -> Optional[str]:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(device: torch.device, command: str, dry_run: bool) -> Dict:
    """What the tables were measured on: GPU, driver, versions, settings, commit, the command."""
    import timm

    try:
        import triton
        triton_version = triton.__version__
    except Exception:
        triton_version = None
    env = dict(
        command=command, dry_run=dry_run, date_utc=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        gpu=None, driver=None, gpu_memory_gib=None, sm_count=None, cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        torch=torch.__version__, triton=triton_version, timm=timm.__version__, python=platform.python_version(),
        platform=platform.platform(), cpu_count=os.cpu_count(),
        cudnn_benchmark=True, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
        matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        triton_interpret=os.environ.get('TRITON_INTERPRET', ''),
        git_commit=_run_quiet(['git', 'rev-parse', 'HEAD']),
        git_dirty=bool(_run_quiet(['git', 'status', '--porcelain', '--untracked-files=no'])),
    )
    if device.type == 'cuda':
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1),
                   sm_count=props.multi_processor_count)
        smi = _run_quiet(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader',
                          f'--id={device.index or 0}'])
        if smi:
            env['driver'] = smi.splitlines()[0].strip()
        elif Path('/proc/driver/nvidia/version').exists():
            m = re.search(r'Kernel Module\s+([\d.]+)', Path('/proc/driver/nvidia/version').read_text())
            env['driver'] = m.group(1) if m else None
    else:
        env['gpu'] = 'none (dry run on the CPU, Triton interpreter)' if dry_run else 'none (CPU)'
    return env


def env_line(env: Dict) -> str:
    """The one-line environment every table and the plot carry."""
    return (f"GPU: {env['gpu']}; driver {env['driver'] or 'n/a'}; CUDA {env['cuda'] or 'n/a'}; "
            f"torch {env['torch']}; triton {env['triton'] or 'n/a'}; command: `{env['command']}`")


ENV_COLUMNS = ('gpu', 'driver', 'torch', 'triton')

# ---------------------------------------------------------------------------------------------------------- suite


def _process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere), so the budget covers the imports too."""
    try:
        start_ticks = int(Path('/proc/self/stat').read_text().rsplit(')', 1)[1].split()[19])
        uptime = float(Path('/proc/uptime').read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf('SC_CLK_TCK'))
    except (OSError, ValueError, IndexError):
        return 0.0


class Budget:
    """The run's clock: a global deadline (from the process start), per-part deadlines, a reserve for the outputs."""

    def __init__(self, seconds: float, count_startup: bool = True):
        self.start = time.monotonic() - (_process_age() if count_startup else 0.0)
        self.seconds = seconds
        self.deadline = self.start + seconds
        self.reserve = min(RESERVE_S, 0.1 * seconds)
        self._planned = 0.0  # the shares handed out so far

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def part_deadline(self, share: float) -> float:
        """Now plus this share of the budget, plus whatever earlier parts left unused, never past the reserve."""
        planned_so_far = self.start + self.seconds * self._planned
        self._planned += share
        carry = max(0.0, planned_so_far - time.monotonic())
        return min(time.monotonic() + self.seconds * share + carry, self.deadline - self.reserve)


class Suite:
    def __init__(self, args, command: str):
        self.args = args
        self.dry_run = bool(args.dry_run)
        self.parts = [p.strip() for p in (args.parts or ','.join(PARTS)).split(',') if p.strip()]
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise SystemExit(f"zoo.bench --suite: unknown part(s) {sorted(unknown)}; choose from {PARTS}")
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%d-%H%M%S')
        self.out = Path(args.out or REPO / 'outputs' / 'bench' / f'gpu-{stamp}')
        self.out.mkdir(parents=True, exist_ok=True)
        # in-process dry runs (tests) do not count the host process's age
        self.budget = Budget(args.budget or (DRY_BUDGET_S if self.dry_run else BUDGET_S), not self.dry_run)
        self.device = torch.device('cpu' if self.dry_run else 'cuda')
        self.command = command
        self.env = environment(self.device, command, self.dry_run)
        self.results = dict(env=self.env, parts={p: dict(status='not run (--parts)') for p in PARTS})
        self.tests_proc: Optional[subprocess.Popen] = None
        self._lock = threading.RLock()
        self._finished = False

    # -- tests -----------------------------------------------------------------------------------------------------

    @staticmethod
    def test_args() -> List[str]:
        """pytest's arguments: the gpu-marked tests of GPU_TEST_FILES and of every test file that has any."""
        files = list(GPU_TEST_FILES)
        for path in sorted((REPO / 'tests').glob('test_*.py')):
            rel = f'tests/{path.name}'
            if rel not in files and re.search(r'pytest\.mark\.gpu\b', path.read_text(errors='ignore')):
                files.append(rel)
        return ['-m', 'gpu', '-v', '-rfE', *[f for f in files if (REPO / f).exists()]]

    def run_tests(self):
        """pytest in a subprocess stopped at the part's deadline; in a dry run in this process (its imports are
        done, and without CUDA every test skips)."""
        part = self.results['parts']['tests']
        if not (REPO / 'tests').is_dir():
            part.update(status='not run: no tests/ folder next to the zoo package (install with pip install -e .)')
            return
        self._junit = self.out / '.tests.xml'
        part.update(status='running', command=shlex.join(['python', '-m', 'pytest', *self.test_args()]))
        _logger.info(f"tests: {part['command']}")
        t0 = time.monotonic()
        deadline = self.budget.part_deadline(TESTS_SHARE)
        with open(self.out / 'tests.log', 'w') as log:
            if self.dry_run:
                import pytest
                args = [a if not a.startswith('tests/') else str(REPO / a) for a in self.test_args()]
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    rc = int(pytest.main([*args, f'--rootdir={REPO}', f'--junitxml={self._junit}']))
                part['status'] = 'done'
            else:
                cmd = [sys.executable, '-m', 'pytest', *self.test_args(), f'--junitxml={self._junit}']
                self.tests_proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                                   env=dict(os.environ, PYTHONUNBUFFERED='1'))
                try:
                    rc = self.tests_proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                    part['status'] = 'done'
                except subprocess.TimeoutExpired:
                    self.tests_proc.kill()
                    rc = self.tests_proc.wait()
                    part['status'] = f'stopped at its time budget ({deadline - t0:.0f} s)'
                self.tests_proc = None
        part.update(returncode=rc, seconds=round(time.monotonic() - t0, 1))
        rows = self._junit_rows() if self._junit.exists() else self._log_rows()
        part['rows'] = rows
        part['counts'] = {k: sum(r['outcome'] == k for r in rows) for k in ('passed', 'failed', 'error', 'skipped')}
        if self._junit.exists():
            self._junit.unlink()
        _logger.info(f"tests: {part['status']}, {part['counts']}")

    def _junit_rows(self) -> List[Dict]:
        rows = []
        for case in ET.parse(self._junit).getroot().iter('testcase'):
            file = case.get('classname', '').replace('.', '/') + '.py'
            outcome, message = 'passed', ''
            for tag in ('failure', 'error', 'skipped'):
                node = case.find(tag)
                if node is not None:
                    outcome = 'failed' if tag == 'failure' else tag
                    message = (node.get('message') or '').splitlines()[0][:300] if node.get('message') else ''
                    break
            test = f"{file}::{case.get('name')}"
            rows.append(dict(test=test, outcome=outcome, seconds=round(float(case.get('time') or 0), 3),
                             message=message, command=shlex.join(['python', '-m', 'pytest', test])))
        return rows

    def _log_rows(self) -> List[Dict]:
        """Outcomes from the -v log when pytest was stopped before it wrote its report."""
        rows = []
        pattern = re.compile(r'^(tests/\S+::\S+)\s+(PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)')
        for line in (self.out / 'tests.log').read_text(errors='ignore').splitlines():
            m = pattern.match(line)
            if m:
                outcome = {'PASSED': 'passed', 'FAILED': 'failed', 'ERROR': 'error', 'SKIPPED': 'skipped',
                           'XFAIL': 'skipped', 'XPASS': 'passed'}[m.group(2)]
                rows.append(dict(test=m.group(1), outcome=outcome, seconds=None, message='',
                                 command=shlex.join(['python', '-m', 'pytest', m.group(1)])))
        return rows

    # -- kernels ---------------------------------------------------------------------------------------------------

    def run_kernels(self):
        from zoo import bench

        part = self.results['parts']['kernels']
        part.update(status='running', rows=[], not_run=[])
        deadline = self.budget.part_deadline(KERNELS_SHARE)
        t0 = time.monotonic()
        slowest, compile_slowest = (0.5, 2.0) if self.dry_run else (3.0, 20.0)
        compile_backend = 'eager' if self.dry_run else 'inductor'
        for case in kernel_cases(self.dry_run):
            flags = kernel_flags(case, self.dry_run)
            left = deadline - time.monotonic()
            if left < slowest * 1.2:
                part['not_run'].append(dict(label=case.label, command=command_line(flags), reason='time budget'))
                continue
            # compile where the remaining share still covers the slowest compile seen (plus this case's eager runs)
            compiled = case.compile and left > 1.2 * (slowest + compile_slowest)
            if compiled:
                flags = flags + ['--torchcompile', compile_backend]
            args = bench.build_parser().parse_args(flags)
            t = time.monotonic()
            try:
                (row,) = bench.run_kernel_benchmarks(args)
            except BaseException as e:  # noqa: B036 (SystemExit from a bad case must not end the suite)
                if isinstance(e, KeyboardInterrupt):
                    raise
                row = dict(kernel=case.op, error=f'{type(e).__name__}: {e}'.splitlines()[0][:300])
            seconds = time.monotonic() - t
            if compiled and 'compile_s' in row:
                compile_slowest = max(compile_slowest if self._compiled_any else 0.0, row['compile_s'])
                self._compiled_any = True
            slowest = max(slowest, seconds - row.get('compile_s', 0.0))
            row = dict(label=case.label, **row, seconds=round(seconds, 2), command=command_line(flags))
            if case.compile and not compiled:
                row['torch_compile_impl'] = 'skipped: time budget'
            with self._lock:
                part['rows'].append(row)
            if self.device.type == 'cuda':
                torch.cuda.empty_cache()
        part.update(status='done' if not part['not_run'] else 'stopped at its time budget',
                    seconds=round(time.monotonic() - t0, 1))

    _compiled_any = False

    # -- models ----------------------------------------------------------------------------------------------------

    def run_models(self):
        from zoo import bench

        part = self.results['parts']['models']
        part.update(status='running', rows=[], not_run=[])
        deadline = self.budget.deadline - self.budget.reserve
        t0 = time.monotonic()
        slowest = 2.0 if self.dry_run else 15.0
        for run in model_runs(self.dry_run):
            flags = ['--model', run.model, *run.flags]
            if deadline - time.monotonic() < 1.2 * slowest:
                part['not_run'].append(dict(group=run.group, model=run.model, kernels=run.kernels,
                                            command=command_line(flags), reason='time budget'))
                continue
            args = bench.build_parser().parse_args(flags)
            bench.apply_model_defaults(args)
            t = time.monotonic()
            try:
                result = bench.benchmark_model(run.model, args)
            except Exception as e:
                result = dict(model=run.model, error=f'{type(e).__name__}: {e}'.splitlines()[0][:300])
            seconds = time.monotonic() - t
            slowest = max(slowest, seconds)
            row = dict(group=run.group, model=run.model, kernels=run.kernels, kernels_on=run.on,
                       precision=args.precision, channels_last=args.channels_last, reparam=args.reparam,
                       **{k: v for k, v in result.items() if k != 'model'}, seconds=round(seconds, 2),
                       command=command_line(flags))
            print(json.dumps(row), flush=True)
            with self._lock:
                part['rows'].append(row)
            if self.device.type == 'cuda':  # a model's reference cycles hold GPU memory until collected
                gc.collect()
                torch.cuda.empty_cache()
        part.update(status='done' if not part['not_run'] else 'stopped at the time budget',
                    seconds=round(time.monotonic() - t0, 1))

    # -- run -------------------------------------------------------------------------------------------------------

    def run(self) -> Dict:
        # the last resort if an item overruns: write what was measured and exit 5 s before the budget is spent
        watchdog = threading.Timer(max(60.0, self.budget.deadline - 5.0 - time.monotonic()), self._overrun)
        watchdog.daemon = True
        watchdog.start()
        torch.backends.cudnn.benchmark = True
        try:
            if 'tests' in self.parts:
                self.run_tests()
            if 'kernels' in self.parts:
                self.run_kernels()
            if 'models' in self.parts:
                self.run_models()
        finally:
            watchdog.cancel()
            if self.tests_proc is not None:
                self.tests_proc.kill()
        return self.finish()

    def _overrun(self):
        _logger.error("the suite is about to overrun its budget: writing what was measured, then exiting")
        if self.tests_proc is not None:
            self.tests_proc.kill()
        for part in self.results['parts'].values():
            if part.get('status') == 'running':
                part['status'] = 'cut off by the watchdog'
        self.finish()
        os._exit(3)

    def finish(self) -> Dict:
        with self._lock:
            if self._finished:
                return self.results
            self._finished = True
            self.env['wall_s'] = round(self.budget.elapsed(), 1)
            self.env['budget_s'] = self.budget.seconds
            self.results['exit_code'] = exit_code(self.results)
            write_outputs(self.out, self.results)
        _logger.info(f"suite: wrote {self.out} in {self.env['wall_s']} s (exit code {self.results['exit_code']})")
        return self.results


def exit_code(results: Dict) -> int:
    """1: a test failed or a benchmark errored; 3: something was not run (budget, --parts aside); 0: all ran.

    A torch.compile baseline that fails to compile is reported ('did not compile') but is not an error of ours.
    """
    parts = results['parts']
    tests = parts['tests'].get('counts', {})
    errors = any('error' in r or any(k.endswith('_error') and not k.startswith('compiled_') for k in r)
                 for p in ('kernels', 'models') for r in parts[p].get('rows', []))
    pytest_failed = parts['tests'].get('status') == 'done' and parts['tests'].get('returncode') not in (0, None)
    if tests.get('failed') or tests.get('error') or errors or pytest_failed:
        return 1
    incomplete = any(p.get('not_run') or str(p.get('status', '')).startswith(('stopped', 'cut off', 'not run:'))
                     for p in parts.values())
    return 3 if incomplete else 0


# -------------------------------------------------------------------------------------------------------- outputs


def _csv(path: Path, rows: List[Dict], env: Dict, first: tuple):
    """Columns: `first`, the rest in order of appearance, then the environment and each row's command."""
    env_cols = {k: env.get(k) for k in ENV_COLUMNS}
    rows = [dict(r, **env_cols) for r in rows]
    last = (*ENV_COLUMNS, 'command')
    seen = list(dict.fromkeys(k for r in rows for k in r))
    columns = list(first) + [k for k in seen if k not in first and k not in last] + list(last)
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction='ignore')
        writer.writeheader()
        writer.writerows(rows)


def _fmt(v, digits=3) -> str:
    if v is None or v == '':
        return '–'
    if isinstance(v, float):
        return f'{v:.{digits}g}' if abs(v) < 1000 else f'{v:.0f}'
    return str(v)


def _table(header: List[str], rows: List[List]) -> List[str]:
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(_fmt(c) for c in row) + ' |' for row in rows]
    return lines


def _impl_time(row: Dict, phase: str, ours: bool):
    """(ms, implementation) of the fastest of ours (Triton) or of PyTorch's in this phase."""
    times = {k[:-len(f'_{phase}_ms')]: v for k, v in row.items() if k.endswith(f'_{phase}_ms')}
    times = {k: v for k, v in times.items() if k.startswith(('triton', 'winograd')) == ours}
    if not times:
        return None, None
    best = min(times, key=times.get)
    return times[best], best


def kernel_table(rows: List[Dict]) -> List[str]:
    body = []
    for r in rows:
        if 'error' in r:
            body.append([r.get('label'), r.get('kernel'), 'error: ' + r['error'][:80]] + [None] * 9)
            continue
        shape = ' x '.join(str(r[k]) for k in ('batch', 'channels', 'img_size', 'seq_len') if k in r)
        if r['kernel'] == 'inception_dw':
            k, band = r['kernel_size'], r['band_kernel_size']
            extra = f'{k}x{k} + 1x{band} + {band}x1 on {r["branch_channels"]} channels each'
        else:
            extra = r.get('kernel_size') or ('bidirectional' if r.get('bidirectional') else 'causal')
        if r.get('dilation', 1) != 1:
            extra = f"{extra} d{r['dilation']}"
        cells = [r['label'], r['kernel'], f'{shape}, {extra}, {r.get("dtype")}']
        for phase in ('fwd', 'fwdbwd'):
            ours, _ = _impl_time(r, phase, True)
            theirs, best = _impl_time(r, phase, False)
            cells += [ours, f'{_fmt(theirs)} ({best})' if best else None, r.get(f'speedup_{phase}')]
        compile_note = r.get('torch_compile_impl')
        if 'compile_s' in r:
            compile_note = f"{r['compile_s']} s"
        elif any(k.startswith('compiled_') and k.endswith('_error') for k in r):
            compile_note = 'did not compile'
        cells += [r.get('fwd_pct_peak'), compile_note or '–']
        body.append(cells)
    return _table(['case', 'op', 'shape (B x C x H x W or B x H x L), kernel, dtype', 'ours fwd ms',
                   'best PyTorch fwd ms (impl)', 'speedup fwd', 'ours fwd+bwd ms', 'best PyTorch fwd+bwd ms (impl)',
                   'speedup fwd+bwd', 'fwd % of HBM peak', 'torch.compile'], body)


def _throughput(row: Dict, prefix: str):
    tokens = row.get(f'{prefix}_tokens_per_sec')
    return (tokens, 'tokens/s') if tokens is not None else (row.get(f'{prefix}_samples_per_sec'), 'img/s')


def model_pairs(rows: List[Dict]) -> List[Dict]:
    """One entry per (group, model, phase): throughput with the kernels on and off, and their ratio."""
    out = []
    keys = list(dict.fromkeys((r['group'], r['model']) for r in rows))
    for group, model in keys:
        runs = [r for r in rows if (r['group'], r['model']) == (group, model)]
        for prefix, phase in (('infer', 'inference'), ('train', 'train')):
            on = next((r for r in runs if r.get('kernels_on') is True and f'{prefix}_samples_per_sec' in r), None)
            off = next((r for r in runs if r.get('kernels_on') is False and f'{prefix}_samples_per_sec' in r), None)
            if on is None and off is None:
                continue
            ref = on or off
            (v_on, unit), (v_off, _) = _throughput(on or {}, prefix), _throughput(off or {}, prefix)
            unit = _throughput(ref, prefix)[1]
            out.append(dict(group=group, model=model, phase=phase, precision=ref['precision'],
                            batch=ref.get(f'{prefix}_batch_size'), kernels_on=on and on['kernels'],
                            kernels_off=off and off['kernels'], on=v_on, off=v_off, unit=unit,
                            speedup=round(v_on / v_off, 3) if v_on and v_off else None))
    return out


def model_table(rows: List[Dict]) -> List[str]:
    body = [[p['model'], p['group'], p['phase'], p['precision'], p['batch'], p['unit'],
             f"{_fmt(p['on'])} ({p['kernels_on']})" if p['kernels_on'] else '–',
             f"{_fmt(p['off'])} ({p['kernels_off']})" if p['kernels_off'] else '–', p['speedup']]
            for p in model_pairs(rows)]
    errors = [[r['model'], r['group'], 'error', r.get('precision'), None, None, r['kernels'], r['error'][:80], None]
              for r in rows if 'error' in r]
    return _table(['model', 'configuration', 'phase', 'precision', 'batch', 'unit', 'kernels on', 'kernels off',
                   'speedup (on / off)'], body + errors)


def write_report(out: Path, results: Dict):
    env, parts = results['env'], results['parts']
    caption = f'_{env_line(env)}_'
    lines = [f"# GPU suite: {env['gpu']}", '']
    if env['dry_run']:
        lines += ['**Dry run**: CPU, Triton interpreter, tiny shapes, one iteration. It checks the plumbing; its '
                  'timings mean nothing.', '']
    lines += ['```', env['command'], '```', '',
              '| environment | |', '|---|---|']
    for key in ('gpu', 'driver', 'gpu_memory_gib', 'sm_count', 'cuda', 'cudnn', 'torch', 'triton', 'timm', 'python',
                'platform', 'cpu_count', 'cudnn_benchmark', 'cudnn_allow_tf32', 'matmul_allow_tf32',
                'triton_interpret', 'git_commit', 'git_dirty', 'date_utc', 'wall_s', 'budget_s'):
        lines.append(f'| {key} | {_fmt(env.get(key))} |')
    lines += ['', f"Exit code {results.get('exit_code')} (0: everything ran and passed; 1: a test failed or a "
                  f"benchmark errored; 3: something was not run).", '']

    tests = parts['tests']
    lines += ['## Tests', '', caption, '', f"Status: {tests.get('status')}."]
    if tests.get('command'):
        lines += ['', '```', tests['command'], '```']
    if 'rows' in tests:
        per_file: Dict[str, Dict[str, int]] = {}
        for r in tests['rows']:
            counts = per_file.setdefault(r['test'].split('::')[0], dict(passed=0, failed=0, error=0, skipped=0))
            counts[r['outcome']] = counts.get(r['outcome'], 0) + 1
        lines += [''] + _table(['file', 'passed', 'failed', 'error', 'skipped'],
                               [[f, c['passed'], c['failed'], c['error'], c['skipped']]
                                for f, c in per_file.items()])
        bad = [r for r in tests['rows'] if r['outcome'] in ('failed', 'error')]
        if bad:
            lines += ['', 'Failures:', ''] + [f"- `{r['test']}`: {r['message']}" for r in bad]
        lines += ['', f"{len(tests['rows'])} tests in {tests.get('seconds')} s; per-test outcomes in tests.csv, "
                      f"output in tests.log."]

    kernels = parts['kernels']
    lines += ['', '## Kernel micro-benchmarks', '', caption, '', f"Status: {kernels.get('status')}."]
    if kernels.get('rows'):
        lines += ['', 'Milliseconds per call (mean of the timed calls, CUDA events); "best PyTorch" is the fastest '
                      'of F.conv2d / timm\'s mixer / the torch.fft reference in NCHW and channels_last and, where '
                      'compiled, torch.compile of the fastest of those. Every row\'s command is in kernels.csv.', '']
        lines += kernel_table(kernels['rows'])
    lines += _not_run(kernels)

    models = parts['models']
    lines += ['', '## Models, kernels on and off', '', caption, '', f"Status: {models.get('status')}."]
    if models.get('rows'):
        lines += ['', 'Throughput of `zoo.bench` (train: forward, loss, backward, SGD step); kernels on = '
                      '`--kernel-backend triton` (Lie-group model: Winograd conv), off = `torch` (direct conv). '
                      'Every row\'s command is in models.csv.', '']
        lines += model_table(models['rows'])
    lines += _not_run(models)
    lines += ['', '![summary](summary.png)', '']
    (out / 'report.md').write_text('\n'.join(lines))


def _not_run(part: Dict) -> List[str]:
    if not part.get('not_run'):
        return []
    return ['', f"Not run ({part['not_run'][0]['reason']}):", ''] + [f"- `{r['command']}`" for r in part['not_run']]


def plot_summary(path: Path, results: Dict):
    """Speed-ups of the kernels (best ours / best PyTorch) and of whole models (kernels on / off)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    env, parts = results['env'], results['parts']
    kernel_rows = [r for r in parts['kernels'].get('rows', []) if 'error' not in r]
    pairs = [p for p in model_pairs(parts['models'].get('rows', [])) if p['speedup']]
    fig, axes = plt.subplots(1, 2, figsize=(15, max(4.0, 0.32 * max(len(kernel_rows), len(pairs), 1) + 2)))
    panels = ((axes[0], 'kernels: PyTorch time / ours', [
        (r['label'], r.get('speedup_fwd'), r.get('speedup_fwdbwd')) for r in kernel_rows],
        ('forward', 'forward + backward')),
              (axes[1], 'models: throughput kernels on / off', [
                  (f"{p['model']} {p['group']} {p['phase']}", p['speedup'], None) for p in pairs], ('speedup', None)))
    for ax, title, items, names in panels:
        if not items:
            ax.text(0.5, 0.5, 'no results', ha='center', va='center', transform=ax.transAxes)
            ax.set_title(title)
            continue
        ys = range(len(items))
        ax.barh([y - 0.2 for y in ys], [i[1] or 0 for i in items], height=0.4, label=names[0])
        if names[1]:
            ax.barh([y + 0.2 for y in ys], [i[2] or 0 for i in items], height=0.4, label=names[1])
        ax.set_yticks(list(ys), [i[0] for i in items], fontsize=7)
        ax.invert_yaxis()
        ax.axvline(1.0, color='k', lw=0.8)
        ax.set_xscale('log')  # ratios: 2x faster and 2x slower are the same distance from 1
        ax.set_title(title)
        ax.legend(fontsize=7)
        ax.grid(True, axis='x', alpha=0.3)
    head = f"{'DRY RUN (CPU, meaningless timings): ' if env['dry_run'] else ''}{env_line(env)}"
    fig.suptitle('\n'.join(textwrap.wrap(head, 150)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(out: Path, results: Dict):
    env, parts = results['env'], results['parts']
    _csv(out / 'tests.csv', parts['tests'].get('rows', []), env, ('test', 'outcome', 'seconds', 'message'))
    _csv(out / 'kernels.csv', parts['kernels'].get('rows', []), env, ('label', 'kernel'))
    _csv(out / 'models.csv', parts['models'].get('rows', []), env, ('group', 'model', 'kernels', 'precision'))
    (out / 'results.json').write_text(json.dumps(results, indent=1, default=str))
    write_report(out, results)
    try:
        plot_summary(out / 'summary.png', results)
    except Exception as e:  # a missing plot must not lose the numbers
        _logger.error(f"summary.png: {e}")


# ----------------------------------------------------------------------------------------------------------- main


def _needs_reexec() -> bool:
    """For a dry run: whether Triton must be imported afresh in a subprocess with TRITON_INTERPRET=1.

    Triton reads the variable when it decorates a function, its own library functions included, and those are
    decorated when triton is first imported (here by torch / timm before zoo.bench runs). So the variable can only be
    set in this process while triton is not imported yet, or when it was imported under the interpreter already.
    """
    if 'triton' not in sys.modules:
        os.environ['TRITON_INTERPRET'] = '1'
        return False
    import triton.language.standard as standard
    return type(standard.cdiv).__name__ != 'InterpretedFunction' or not os.environ.get('TRITON_INTERPRET')


def main(args, argv: List[str]) -> Dict:
    command = 'python -m zoo.bench ' + shlex.join(argv)
    if args.dry_run:
        if _needs_reexec():
            _logger.info('dry run: restarting in a subprocess with TRITON_INTERPRET=1')
            rc = subprocess.call([sys.executable, '-m', 'zoo.bench', *argv], cwd=REPO,
                                 env=dict(os.environ, TRITON_INTERPRET='1'))
            return dict(exit_code=rc, reexec=True)
    elif not torch.cuda.is_available():
        raise SystemExit("zoo.bench --suite gpu: no CUDA device here; `--dry-run` runs the suite's plumbing on the CPU")
    threads = torch.get_num_threads()
    if args.dry_run:
        torch.set_num_threads(1)  # tiny tensors: threads only add overhead (and leave a core to the tests part)
    try:
        return Suite(args, command).run()
    finally:
        torch.set_num_threads(threads)
