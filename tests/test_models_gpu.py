"""Whole models with kernel_backend='triton' against kernel_backend='torch' on a GPU, at the real model shapes.

Skipped without CUDA (`python -m zoo.bench --suite gpu` runs them, docs/gpu.md). For each model and dtype (bf16 and
fp16 under autocast, as training runs them, and fp32 with TF32 off) the output and every gradient (all parameters
and the input) of both backends are compared with the same model run in float64 (torch backend, same weights, same
input and output cotangent), by the relative error ||a - ref|| / ||ref|| of each tensor.

Tolerance, from the arithmetic: both backends store the same tensors in the same dtype and accumulate in fp32, so
each differs from the float64 result by rounding errors of the same size, a few units u of that dtype per rounded
tensor (u = 2^-8 bf16, 2^-11 fp16, 2^-24 fp32) carried through the same network. The Triton path must therefore be
as accurate as PyTorch's own path in that dtype: err_triton <= 2 err_torch + 4 u, the factor 2 covering two
independent rounding sequences of the same size and 4 u a tensor that one path happens to round once more.
The Lie-group model's kernel is the fp32 Winograd convolution (`conv_backend='winograd'`, against cuDNN's direct
convolution): its transforms multiply each rounding error by at most kappa, the largest ratio of the Winograd
magnitude bound to the direct one (computed from the transforms, as in tests/test_winograd.py), so its bound is
kappa times the one above. Under autocast it runs cuDNN whatever conv_backend says, so only fp32 applies there.

The layer scales start at 0.5 instead of 1e-6, so every block's kernel output reaches the logits.
"""
import contextlib
import copy
import functools

import pytest
import timm
import torch
import torch.nn.functional as F

import kernels  # noqa: F401
import zoo  # noqa: F401

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11, torch.float32: 2.0 ** -24}
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
# name: (kwargs that differ from the registered model, input (C, H, W) at the model's real size)
MODELS = {
    'inceptionnext_tiny': (dict(ls_init_value=0.5), (3, 224, 224)),
    'unireplknet_t': (dict(layer_scale_init_value=0.5), (3, 224, 224)),
    's4d_lra_pathx': ({}, (1, 128, 128)),  # L = 16384
    'sgconv_lra_pathx': ({}, (1, 128, 128)),
}
BATCH = 2


@pytest.fixture(autouse=True)
def no_tf32():
    """fp32 means fp32: cuDNN and cuBLAS would otherwise round convolution / matmul inputs to TF32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def run_model(model, x, cotangent, dtype):
    """{'output', 'input grad', 'grad <param>'} in float64, for a float64 model (dtype float64), an fp32 model
    (float32) or an fp32 model under autocast (bfloat16 / float16)."""
    model.zero_grad(set_to_none=True)
    x = x.detach().to(torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_()
    autocast = (torch.autocast(x.device.type, dtype=dtype) if dtype in (torch.bfloat16, torch.float16)
                else contextlib.nullcontext())
    with autocast:
        y = model(x)
    (y.double() * cotangent).sum().backward()
    out = {'output': y.detach().double(), 'input grad': x.grad.double()}
    out.update({f'grad {n}': p.grad.double() for n, p in model.named_parameters() if p.grad is not None})
    return out


def rel_errors(result, ref):
    """||a - ref|| / ||ref|| per tensor (||a - ref|| where ref is all zeros); inf where a is not finite."""
    assert result.keys() == ref.keys(), f'different gradients: {sorted(set(result) ^ set(ref))}'
    errors = {}
    for k, r in ref.items():
        a = result[k]
        if not torch.isfinite(a).all():
            errors[k] = float('inf')
            continue
        scale = r.norm()
        errors[k] = ((a - r).norm() / (scale if scale > 0 else 1)).item()
    return errors


def compare_backends(fast, slow, reference, x, cotangent, dtype, kappa=1.0):
    """Run `fast` (kernels on) and `slow` (kernels off) in dtype, `reference` in float64; assert the bound."""
    ref = run_model(reference, x, cotangent, torch.float64)
    err_slow = rel_errors(run_model(slow, x, cotangent, dtype), ref)
    err_fast = rel_errors(run_model(fast, x, cotangent, dtype), ref)
    u = UNIT_ROUNDOFF[dtype]
    assert all(e < float('inf') for e in err_slow.values()), \
        f'the reference path itself is not finite in {dtype}: {[k for k, e in err_slow.items() if e == float("inf")]}'
    bound = {k: kappa * (2 * err_slow[k] + 4 * u) for k in ref}
    bad = {k: (f'{err_fast[k]:.3g}', f'{bound[k]:.3g}') for k in ref if not err_fast[k] <= bound[k]}
    worst = max(ref, key=lambda k: err_fast[k] / bound[k])
    assert not bad, (f'{len(bad)} of {len(ref)} tensors over the bound (error, bound) in {dtype}: '
                     f'{dict(list(bad.items())[:8])}')
    return err_fast, err_slow, worst


@functools.lru_cache(maxsize=1)  # one model's three copies on the GPU at a time (the cases are ordered by model)
def _models(name, device='cuda'):
    kwargs, input_size = MODELS[name]
    torch.manual_seed(0)
    slow = timm.create_model(name, kernel_backend='torch', **kwargs).to(device).eval()
    fast = timm.create_model(name, kernel_backend='triton', **kwargs).to(device).eval()
    fast.load_state_dict(slow.state_dict())
    reference = copy.deepcopy(slow).double()
    x = torch.randn(BATCH, *input_size, device=device)
    cotangent = torch.randn(BATCH, slow.num_classes, device=device, dtype=torch.float64)
    return fast, slow, reference, x, cotangent


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize('name,dtype', [(n, d) for n in MODELS for d in DTYPES],
                         ids=[f'{n}-{str(d).removeprefix("torch.")}' for n in MODELS for d in DTYPES])
def test_triton_backend_matches_torch_backend(name, dtype):
    fast, slow, reference, x, cotangent = _models(name)
    compare_backends(fast, slow, reference, x, cotangent, dtype)


def winograd_kappa(kernel_size: int) -> float:
    """The largest factor by which the Winograd transforms scale the magnitude bound of a rounding error."""
    from kernels.winograd import winograd_transforms, winograd_with_transforms
    ones = torch.ones(1, 1, 16, 16, dtype=torch.float64)
    weight = torch.ones(1, 1, kernel_size, kernel_size, dtype=torch.float64)
    pad = kernel_size // 2
    bound = winograd_with_transforms(ones, weight, pad, [t.abs() for t in winograd_transforms(kernel_size)])
    return (bound / F.conv2d(ones, weight, padding=pad)).max().item()


@pytest.mark.gpu
@CUDA
def test_liegroup_winograd_matches_direct_fp32():
    torch.manual_seed(0)
    device = 'cuda'
    slow = timm.create_model('liegroup_gl2', conv_backend='direct').to(device).eval()  # the paper's size
    fast = timm.create_model('liegroup_gl2', conv_backend='winograd').to(device).eval()
    fast.load_state_dict(slow.state_dict())
    reference = copy.deepcopy(slow).double()
    x = torch.randn(BATCH, 1, 40, 40, device=device)
    cotangent = torch.randn(BATCH, slow.num_classes, device=device, dtype=torch.float64)
    compare_backends(fast, slow, reference, x, cotangent, torch.float32, kappa=winograd_kappa(slow.kernel_size))


# The same comparison on the CPU in Triton's interpreter, at a few channels, to check the test itself.
TINY = {
    'inceptionnext_tiny': (dict(depths=(1,), dims=(8,), band_kernel_size=5, ls_init_value=0.5), (3, 16, 16)),
    'unireplknet_t': (dict(depths=(1, 1, 1, 1), dims=(4, 4, 4, 4), kernel_sizes=((7,), (0,), (0,), (0,)),
                           layer_scale_init_value=0.5), (3, 32, 32)),
    's4d_lra_pathx': (dict(embed_dim=2, depth=1), (1, 8, 8)),
}


@pytest.mark.slow
@pytest.mark.triton
@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16'])
def test_comparison_on_cpu_interpreter(name, dtype, one_thread):
    kwargs, input_size = TINY[name]
    torch.manual_seed(0)
    slow = timm.create_model(name, kernel_backend='torch', **kwargs).eval()
    fast = timm.create_model(name, kernel_backend='triton', **kwargs).eval()
    fast.load_state_dict(slow.state_dict())
    reference = copy.deepcopy(slow).double()
    x = torch.randn(1, *input_size)
    cotangent = torch.randn(1, slow.num_classes, dtype=torch.float64)
    err_fast, err_slow, _ = compare_backends(fast, slow, reference, x, cotangent, dtype)
    assert max(err_slow.values()) < 1e3 * UNIT_ROUNDOFF[dtype]  # the reference path is itself accurate here
    # and the check has teeth: a kernel weight off by a factor of 2 fails it
    with pytest.raises(AssertionError, match='over the bound'):
        broken = copy.deepcopy(fast)
        with torch.no_grad():
            next(p for n, p in broken.named_parameters()  # a depthwise conv weight, or S4D's skip D
                 if (p.dim() == 4 and p.shape[1] == 1) or n.endswith("layer.D")).mul_(2.0)
        compare_backends(broken, slow, reference, x, cotangent, dtype)
