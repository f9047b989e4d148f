"""The official implementations, imported from a checkout the user names, and matched to ours.

Shared by the golden-fixture scripts (`tests/fixtures/make_*.py`), the official-parity tests and the speed
comparisons (`python -m zoo.compare`). Nothing here ships official code: every importer takes the path of a local
checkout (`--official PATH`), checks that it holds the file it needs, and imports from there. Packages that only the
official code needs (einops, opt_einsum, ...) are not dependencies of this project; `site` directories holding them
are put on `sys.path` together with the checkout.

Checkouts the functions were written against:
- state-spaces/s4 `e757cef`: `models/s4/s4d.py::S4D` (the minimal layer), `models/s4/s4.py::S4Block`;
- ctlllll/SGConv `97862df`: `gconv_standalone.py::GConv`;
- mirceamironenco/rgenn `df54466`: `train.py` (`parse_args`, `build_model`), `rgenn/layers.py::GConv2d`;
- AILab-CVC/UniRepLKNet `2016283`: `unireplknet.py`.
"""
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path
from typing import Dict, Sequence, Tuple, Union
from unittest import mock

import torch
import torch.nn as nn

__all__ = ['OfficialCodeError', 'import_s4', 'import_sgconv', 'import_rgenn', 'import_unireplknet',
           's4block_state_dict', 's4d_for_s4block', 'build_rgenn', 'rgenn_sample_pairs', 'attach_rgenn_samples',
           'randomize_unireplknet']

PathLike = Union[str, Path]

# The official S4Block options our S4D takes under the same names.
S4BLOCK_OPTIONS = ('dt_transform', 'dt_tie', 'dt_fast', 'bandlimit', 'final_act', 'activation')


class OfficialCodeError(ImportError):
    """The official code cannot be imported: wrong checkout path, or a package only it needs is missing."""


def _checkout(path: PathLike, repo: str, expected: Sequence[str], site: Sequence[PathLike] = ()) -> Path:
    """Check that `path` is a checkout of `repo` holding every file of `expected`, then put it (and `site`) on
    sys.path."""
    root = Path(path).expanduser().resolve()
    for name in expected:
        if not (root / name).is_file():
            raise OfficialCodeError(
                f"--official {path}: expected a checkout of {repo} containing {name}, but {root / name} "
                f"does not exist")
    for entry in (*site, root):
        entry = str(Path(entry).expanduser().resolve())
        if entry not in sys.path:
            sys.path.insert(0, entry)
    return root


def _import_from(root: Path, name: str) -> types.ModuleType:
    """Import module `name` from the checkout at `root`, first evicting a same-named top-level package that was
    imported from elsewhere (e.g. this project's own `train.py`, which shares its name with rgenn's)."""
    top = name.split('.')[0]
    cached = sys.modules.get(top)
    # A namespace package (s4's `models`) has no __file__, only a __path__.
    where = getattr(cached, '__file__', None) or next(iter(getattr(cached, '__path__', None) or ()), '')
    if cached is not None and not str(where).startswith(str(root)):
        for key in [k for k in sys.modules if k == top or k.startswith(top + '.')]:
            del sys.modules[key]
    return importlib.import_module(name)


def _missing_package(root: Path, error: ModuleNotFoundError) -> OfficialCodeError:
    return OfficialCodeError(
        f"the official code in {root} needs the package {error.name!r}, which is not importable: install it, or "
        f"pass the directory that holds it (e.g. --site DIR)")


def import_s4(path: PathLike, site: Sequence[PathLike] = ()) -> Tuple[type, type]:
    """(S4D, S4Block) of state-spaces/s4: the minimal layer and the full block (they import `src.*` from the root)."""
    root = _checkout(path, 'state-spaces/s4', ('models/s4/s4d.py',), site)
    try:
        s4d = _import_from(root, 'models.s4.s4d')
        s4 = _import_from(root, 'models.s4.s4')
    except ModuleNotFoundError as e:
        raise _missing_package(root, e) from e
    return s4d.S4D, s4.S4Block


def import_sgconv(path: PathLike, site: Sequence[PathLike] = ()) -> type:
    """GConv of ctlllll/SGConv's `gconv_standalone.py`."""
    root = _checkout(path, 'ctlllll/SGConv', ('gconv_standalone.py',), site)
    # The official file imports IPython's `embed` without using it; an empty stand-in spares installing IPython.
    if importlib.util.find_spec('IPython') is None:
        sys.modules['IPython'] = types.SimpleNamespace(embed=None)
    try:
        return _import_from(root, 'gconv_standalone').GConv
    except ModuleNotFoundError as e:
        raise _missing_package(root, e) from e


def import_rgenn(path: PathLike, site: Sequence[PathLike] = ()) -> Tuple[types.ModuleType, type]:
    """(the release's `train` module, its `rgenn.layers.GConv2d`) from mirceamironenco/rgenn."""
    root = _checkout(path, 'mirceamironenco/rgenn', ('train.py', 'rgenn/layers.py'), site)
    try:
        return _import_from(root, 'train'), _import_from(root, 'rgenn.layers').GConv2d
    except ModuleNotFoundError as e:
        raise _missing_package(root, e) from e


def import_unireplknet(path: PathLike, site: Sequence[PathLike] = ()) -> types.ModuleType:
    """The official `unireplknet` module of AILab-CVC/UniRepLKNet (classes `UniRepLKNet`, functions `unireplknet_*`).

    The file registers `unireplknet_*` with timm, which would replace this project's models of the same names; it is
    imported with timm's `register_model` made a no-op, so `timm.create_model('unireplknet_t')` stays ours.
    """
    root = _checkout(path, 'AILab-CVC/UniRepLKNet', ('unireplknet.py',), site)
    import timm.models.registry
    try:
        with mock.patch.object(timm.models.registry, 'register_model', lambda fn: fn):
            unireplknet = _import_from(root, 'unireplknet')
    except ModuleNotFoundError as e:
        raise _missing_package(root, e) from e
    # The dense-prediction mode's weight loading asks OpenMMLab for a logger first, even without a checkpoint;
    # without mmseg installed that name is None.
    if getattr(unireplknet, 'get_root_logger', None) is None:
        unireplknet.get_root_logger = lambda: None
    return unireplknet


# ---------------------------------------------------------------------------------------------------------------
# S4: the official S4Block(mode='diag') as our S4D
# ---------------------------------------------------------------------------------------------------------------

def s4d_for_s4block(kwargs: dict, **extra) -> nn.Module:
    """Our S4D with the options of an official `S4Block(mode='diag', **kwargs)` (official names: init 'diag-inv',
    dt_transform, final_act, ...); B is a parameter of its own, as in the block."""
    from .models.s4d import S4D
    options = {k: kwargs[k] for k in S4BLOCK_OPTIONS if k in kwargs}
    return S4D(
        kwargs['d_model'], kwargs['d_state'], init=kwargs['init'], disc=kwargs['disc'],
        bidirectional=kwargs['bidirectional'], channels=kwargs.get('channels', 1), n_ssm=kwargs.get('n_ssm'),
        learn_B=True, **options, **extra)


def s4block_state_dict(sd: Dict[str, torch.Tensor], layer: nn.Module = None) -> Dict[str, torch.Tensor]:
    """State dict of the official `S4Block(mode='diag')` in our S4D's layout (`layer`: the S4D it is for).

    The official layer stores A = -exp(A_real) - i A_imag and 2-D projection weights; ours A = -exp(log_A_real) +
    i A_imag and a 1x1 conv. Its `inv_dt` is our `log_dt` for dt = exp(.) and `inv_dt` otherwise.
    """
    D = sd['layer.D']
    C = sd['layer.kernel.C']
    inv_dt = sd['layer.kernel.inv_dt']
    dt_name = layer.kernel.dt_name if layer is not None else 'log_dt'
    return {
        'D': D[0] if D.shape[0] == 1 else D,
        f'kernel.{dt_name}': inv_dt[:, 0] if inv_dt.shape[-1] == 1 else inv_dt,
        'kernel.log_A_real': sd['layer.kernel.A_real'],
        'kernel.A_imag': -sd['layer.kernel.A_imag'],
        'kernel.B': sd['layer.kernel.B'][0],
        'kernel.C': C[0] if C.shape[0] == 1 else C,
        'output_linear.0.weight': sd['output_linear.0.weight'].unsqueeze(-1),
        'output_linear.0.bias': sd['output_linear.0.bias'],
    }


# ---------------------------------------------------------------------------------------------------------------
# rgenn: the release's model, built by its own train.py, with fixed samples
# ---------------------------------------------------------------------------------------------------------------

def build_rgenn(train: types.ModuleType, args: Sequence[str], seed: int = 0) -> nn.Module:
    """The release's model (its `SamplingWrapper` around the GResNet) for these `train.py` command-line arguments,
    initialized after `torch.manual_seed(seed)`."""
    with mock.patch.object(sys, 'argv', ['train.py', *args]):
        config = train.parse_args()
    torch.manual_seed(seed)
    return train.build_model(config)


def rgenn_sample_pairs(group: nn.Module, name: str, num_samples: int, seed: int, gl2_det: float = 1.3):
    """(g1, g1^-1, g3, g3^-1) drawn by the release's group object after `torch.manual_seed(seed)`: g1 for the lifting
    layer and the residual block, g3 for the last group conv.

    GL+(2) only: the release divides each group-conv kernel by the volume of its input sample but broadcasts that
    factor over the output-sample axis, where ours applies it per input sample. With equal determinants both
    readings agree, so g1 is rescaled to determinant `gl2_det`.
    """
    torch.manual_seed(seed)
    g1, g1_inv = group.sample_pair(num_samples)
    g3, g3_inv = group.sample_pair(num_samples)
    if name == 'gl2':
        scale = torch.sqrt(gl2_det / torch.det(g1))[:, None, None]
        g1, g1_inv = g1 * scale, g1_inv / scale
    return g1, g1_inv, g3, g3_inv


@torch.no_grad()
def attach_rgenn_samples(model: nn.Module, GConv2d: type, g1: torch.Tensor, g1_inv: torch.Tensor,
                         g3_inv: torch.Tensor):
    """Give every layer of the release's GResNet (default depth, `--nlayers 2`) the samples ours uses.

    Works around two release bugs, so that the reference is the intended maths: `GConv2d.register_gsamples` makes
    `g_tilde` and `g_inv` views of one tensor (attaching writes g^-1 over g), so every layer gets its own clones; and
    `SamplingWrapper` gives the last group conv input samples its input features are not defined on, so every layer
    gets its samples directly here. Our model takes the same with `set_samples((g1, g1_inv), (g3, g3_inv))`.
    """
    for layer in model.modules():
        if isinstance(layer, GConv2d):  # the lifting layer included; unshare g_tilde / g_inv
            layer.g_tilde = layer.g_tilde.clone()
            layer.g_inv = layer.g_inv.clone()
    model.stem[0].attach_samples(g_inv=g1_inv)
    # The residual block keeps the lifted samples, so that its shortcut adds like to like.
    block = model.blocks[0]
    block.conv1.attach_samples(g_tilde=g1, g_inv=g1_inv)
    block.conv2.attach_samples(g_tilde=g1, g_inv=g1_inv)
    # The last group conv reads features over g1 and produces them over g3.
    model.blocks[4].attach_samples(g_tilde=g1, g_inv=g3_inv)


# ---------------------------------------------------------------------------------------------------------------
# UniRepLKNet: weights that make every branch count
# ---------------------------------------------------------------------------------------------------------------

def _random_value(name: str, tensor: torch.Tensor, gen: torch.Generator):
    """A seeded replacement for one parameter or buffer, or None to keep it (num_batches_tracked)."""
    leaf = name.rsplit('.', 1)[-1]
    shape = tensor.shape
    if leaf == 'num_batches_tracked':
        return None
    if leaf == 'running_mean':
        return 0.2 * torch.randn(shape, generator=gen)
    if leaf == 'running_var':
        return torch.empty(shape).uniform_(0.5, 1.5, generator=gen)
    if leaf == 'gamma' and '.act.' not in name:  # block layer scale (the GRN's gamma lives under `act`)
        return torch.empty(shape).uniform_(0.5, 1.0, generator=gen)
    if leaf in ('bias', 'gamma', 'beta'):  # biases and GRN gamma / beta
        return 0.3 * torch.randn(shape, generator=gen)
    if tensor.ndim >= 2:  # conv and linear weights, N(0, 1/fan_in)
        return torch.randn(shape, generator=gen) / math.sqrt(tensor[0].numel())
    return 1 + 0.3 * torch.randn(shape, generator=gen)  # BN / LN scales


@torch.no_grad()
def randomize_unireplknet(model: nn.Module, seed: int):
    """Overwrite the parameters, then the buffers, of an official UniRepLKNet in registration order from one seeded
    generator, so that every branch, BN, GRN term and layer scale reaches the logits (the fresh model has layer
    scale 1e-6 and identity BN statistics, which would hide most of the network from a comparison)."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        value = _random_value(name, tensor, gen)
        if value is not None:
            tensor.copy_(value)
