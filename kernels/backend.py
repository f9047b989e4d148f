"""Where a kernel runs, shared by every op: the backend choice, Triton's availability, and a call recorder.

- 'torch': the op's pure-torch reference, any device and dtype;
- 'triton': the Triton kernels, for fp32 / fp16 / bf16 CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 is set
  before the first kernel is used (Triton's interpreter: slow, for tests);
- 'auto': Triton for CUDA tensors when triton imports and the dtype is supported, the reference everywhere else.
Triton is optional: it is imported the first time a CUDA tensor (or the interpreter) asks for it.
"""
import contextlib
import functools
import os
from typing import Iterator

import torch

__all__ = ['BACKENDS', 'TRITON_DTYPES', 'check_backend', 'triton_available', 'interpret_mode', 'use_triton',
           'record_calls', 'exporting']

BACKENDS = ('auto', 'torch', 'triton')
TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether `import triton` works (a missing or broken install only disables the Triton backend)."""
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def interpret_mode() -> bool:
    """Whether Triton kernels are simulated on the CPU (TRITON_INTERPRET=1, read when the kernels are compiled)."""
    return os.environ.get('TRITON_INTERPRET', '0').lower() in ('1', 'true', 'on', 'yes')


def exporting() -> bool:
    """Whether torch.export is tracing (ONNX, ExportedProgram). `torch.compiler.is_exporting` arrived in torch 2.6;
    older versions cannot run the dynamo exporters anyway."""
    is_exporting = getattr(torch.compiler, 'is_exporting', None)
    return is_exporting is not None and is_exporting()


def check_backend(backend: str, what: str = 'kernel_backend') -> str:
    """`backend` if it is one of BACKENDS (models check theirs when built), else a ValueError naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"{what} must be one of {BACKENDS}, got {backend!r}")
    return backend


def use_triton(backend: str, x: torch.Tensor, op: str) -> bool:
    """Whether `backend` runs the Triton kernel of `op` for input `x`; raises for an unusable explicit choice."""
    check_backend(backend, f'{op}: kernel backend')
    if backend == 'torch':
        return False
    if backend == 'auto':
        return x.is_cuda and x.dtype in TRITON_DTYPES and triton_available()
    if not triton_available():
        raise RuntimeError(f"{op}: backend='triton' needs the triton package (pip install triton); "
                           "use backend='torch' or 'auto'")
    if not x.is_cuda and not interpret_mode():
        raise RuntimeError(f"{op}: backend='triton' got a {x.device.type} tensor; Triton runs CUDA tensors, or CPU "
                           "tensors only when TRITON_INTERPRET=1 is set before the first kernel call (slow, for "
                           "tests). Use backend='auto' or 'torch'")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: backend='triton' supports {[str(d) for d in TRITON_DTYPES]}, got {x.dtype}; "
                        "use backend='torch'")
    return True


def autocast_dtype(x: torch.Tensor) -> torch.Tensor:
    """x in the autocast dtype when autocast is on: the Triton paths follow F.conv2d, which runs in it."""
    if torch.is_autocast_enabled(x.device.type):
        return x.to(torch.get_autocast_dtype(x.device.type))
    return x


_recorders: list[list] = []


@contextlib.contextmanager
def record_calls() -> Iterator[list]:
    """Collect `(op, info)` for every kernel call made inside the block, e.g. the shapes a model's forward runs.

    `info` holds shapes, dtypes and options, never tensors. `python -m zoo.bench --kernel` reads a model's kernel
    shapes this way.
    """
    calls = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def recording() -> bool:
    """Whether a `record_calls` block is active (ops check this before describing their call)."""
    return bool(_recorders)


def note_call(op: str, **info) -> None:
    """Record one call of `op` for every active `record_calls` block."""
    for calls in _recorders:
        calls.append((op, info))
