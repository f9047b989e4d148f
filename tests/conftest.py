import os

import pytest
import torch

# Triton kernels are checked on the CPU through Triton's interpreter; the variable must be set before the
# first `@triton.jit` runs, i.e. before anything imports the kernel modules.
if not torch.cuda.is_available():
    os.environ.setdefault('TRITON_INTERPRET', '1')

import kernels  # noqa: E402
import zoo  # noqa: E402,F401  (registers the zoo models before test collection parametrizes over them)


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.triton` tests need Triton on a GPU or in its CPU interpreter."""
    if kernels.triton_available() and (kernels.interpret_mode() or torch.cuda.is_available()):
        return
    skip = pytest.mark.skip(reason='needs triton with a GPU or TRITON_INTERPRET=1')
    for item in items:
        if 'triton' in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Run a test on one torch thread: small kernels and the Triton interpreter only slow down with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
