"""Kernels beyond eager correctness: torch.compile tracing and CUDA compilation (both slow; no GPU needed).

- The Triton path is built from custom ops with fake implementations, so dynamo + AOT autograd capture a whole
  forward + backward in one graph.
- Every kernel compiles to an sm_90 cubin with Triton's bundled ptxas at the tile configs the GPU heuristics pick,
  without register spills: this catches what the interpreter cannot (typing of loop-carried values, tl.dot shape
  rules, register pressure).
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import kernels

DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'


def _grads(fn, inputs):
    y = fn(*inputs)
    return y, torch.autograd.grad(y, [t for t in inputs if t.requires_grad])


@pytest.mark.triton
@pytest.mark.slow
def test_triton_path_compiles_as_one_graph():
    """The kernels are custom ops with fake implementations: dynamo + AOT autograd trace them without graph breaks."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 3, 7, 9, generator=g).to(DEVICE).requires_grad_()
    w = torch.randn(3, 1, 3, 5, generator=g).to(DEVICE).requires_grad_()
    u = torch.randn(2, 3, 16, generator=g).to(DEVICE).requires_grad_()
    k = torch.randn(2, 3, 16, generator=g).to(DEVICE).requires_grad_()

    def step(x, w, u, k):
        y = kernels.dwconv2d(x, w, backend='triton').sin()
        z = kernels.inception_dw(x, w[:1], None, w[1:2, :, 1:2], None, w[2:, :, :, 2:3], None, backend='triton')
        v = kernels.longconv(u, k, bidirectional=True, backend='triton')
        return y.sum() + z.square().sum() + v.cos().sum()

    torch._dynamo.reset()
    compiled = torch.compile(step, backend='aot_eager', fullgraph=True)
    out, grads = _grads(compiled, (x, w, u, k))
    out_ref, grads_ref = _grads(step, (x, w, u, k))
    torch.testing.assert_close(out, out_ref, atol=1e-4, rtol=1e-4)
    for a, e in zip(grads, grads_ref):
        torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-4)


_CUDA_COMPILE_SCRIPT = r'''
import json, os, subprocess, sys, tempfile
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import kernels
import kernels.triton.depthwise as dw
import kernels.triton.long_conv as lc
assert not kernels.interpret_mode()
cuobjdump = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')

def build(kernel, ptrs, constexprs, num_warps, arch):
    sig = {n: 'constexpr' if n in constexprs else ptrs.get(n, 'i32') for n in kernel.arg_names}
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
                              target=GPUTarget('cuda', arch, 32), options={'num_warps': num_warps})
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(compiled.asm['cubin'])
        f.flush()
        usage = subprocess.run([cuobjdump, '--dump-resource-usage', f.name], capture_output=True, text=True).stdout
    return [line.split('Resource usage:')[-1].strip() for line in usage.splitlines() if 'REG:' in line]

report = []
for arch in (90,):
    for dt in ('bf16', 'fp32'):
        for channels, size, cl in ((160, 28, False), (640, 7, False), (160, 28, True)):
            block_c, tile_h, tile_w, warps = dw.pick_tiles(channels, size, size, cl, gpu_tiles=True)
            meta = dict(HAS_BIAS=True, BLOCK_C=block_c, TILE_H=tile_h, TILE_W=tile_w)
            io = {'w_ptr': '*fp32', 'b_ptr': '*fp32', 'dw_ptr': '*fp32', 'db_ptr': '*fp32', 'seg_ptr': '*i32'}
            io.update({n: '*' + dt for n in ('x_ptr', 'y_ptr', 'dy_ptr')})
            for kernel in (dw._dw_fwd_kernel, dw._dw_wgrad_kernel):
                report.append((arch, dt, kernel.fn.__name__, meta, build(kernel, io, meta, warps, arch)))
        if dt == 'bf16':
            for tile, kpad in ((32, 64), (16, 32), (32, 128)):  # 13x13 on 28x28 / 14x14 planes, 31x31 or dilated
                meta = dict(TILE_H=tile, TILE_W=tile, KPAD=kpad)
                report.append((arch, dt, 'dot', meta, build(dw._dw_fwd_dot_kernel, io, {**meta, 'HAS_BIAS': True}, 4,
                                                             arch)))
                report.append((arch, dt, 'wgrad_dot', meta, build(dw._dw_wgrad_dot_kernel, io, meta, 4, arch)))
        io = {n: '*fp32' for n in ('dst_ptr', 'full_ptr', 'd_ptr', 'part_ptr', 'dyf_ptr', 'uf_ptr', 'kf_ptr',
                                   'duf_ptr', 'dkf_ptr')}
        io.update({n: '*' + dt for n in ('src_ptr', 'tail_ptr', 's_ptr', 't_ptr', 'out_ptr')})
        for kernel, meta in ((lc._pad_cast_kernel, dict(HAS_TAIL=True, BLOCK=1024)),
                             (lc._skip_epilogue_kernel, dict(HAS_D=True, WITH_PART=True, BLOCK=1024)),
                             (lc._spectral_bwd_kernel, dict(NEED_DU=True, NEED_DK=True, BLOCK=1024))):
            report.append((arch, dt, kernel.fn.__name__, meta, build(kernel, io, meta, 4, arch)))
print(json.dumps(report))
'''


@pytest.mark.slow
@pytest.mark.skipif(not kernels.triton_available(), reason='needs triton')
def test_kernels_compile_for_cuda_without_spills():
    """Compile every kernel (GPU tile configs, bf16 and fp32) to sm_90 cubins with Triton's own ptxas: no GPU needed,
    and it catches what the interpreter cannot (typing of loop-carried values, register spills)."""
    env = {**os.environ, 'TRITON_INTERPRET': '0'}
    out = subprocess.run([sys.executable, '-c', _CUDA_COMPILE_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(report) == 2 * (3 * 2 + 3) + 3 * 2
    for arch, dtype, name, meta, usage in report:
        assert usage and all('LOCAL:0' in u for u in usage), (arch, dtype, name, meta, usage)
