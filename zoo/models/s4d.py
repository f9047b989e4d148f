"""S4D: the diagonal state space layer, with its published initializations and discretizations.

Paper: Gu, Gupta, Goel, Re, "On the Parameterization and Initialization of Diagonal State Space Models",
NeurIPS 2022, arXiv 2206.11893. Official code: https://github.com/state-spaces/s4 (`models/s4/s4d.py`, and the
full kernel in `models/s4/s4.py` / `src/models/sequence/kernels/ssm.py`).

The SSM has N/2 complex modes per feature (conjugate symmetry gives a real state of size N):
A = -exp(log_A_real) + i A_imag, step dt = exp(log_dt), and the convolution kernel is
K[l] = 2 Re sum_n C'_n z_n^l with (C', z) set by the discretization. Parameter names and shapes follow the
official minimal layer, whose state dict this layer loads when built with the same sizes and default options.

The kernel is computed in real arithmetic and without materializing the (H, N/2, L) Vandermonde matrix:
l = s*T + j with T ~ sqrt(L) splits z^l = z^(sT) z^j, so K is a real matmul of a (S, N) by a (N, T) matrix per
feature. Complex `exp` on the CPU is ~13x slower than real `exp`; here only O(H N sqrt(L)) real
transcendentals are evaluated, against O(H N L) complex ones in the official naive kernel.
"""
import math
from typing import Mapping, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import LongConvLayer, refuse_options

__all__ = ['S4D', 'S4DKernel', 'S4D_INITS', 'S4D_DISCRETIZATIONS', 'DT_TRANSFORMS', 'legs_diagonal', 's4d_init',
           'vandermonde_real']

S4D_INITS = ('lin', 'inv', 'inv2', 'quad', 'legs', 'real', 'rand', 'diag')
# The official init names (state-spaces/s4 `dplr.py`; `diag` is half S4D-Inv, half S4D-Lin copies).
OFFICIAL_INIT_NAMES = {
    'diag-lin': 'lin', 'diag-linear': 'lin', 'diag-inv': 'inv', 'diag-inverse': 'inv', 'diag-inv2': 'inv2',
    'diag-inverse2': 'inv2', 'diag-quad': 'quad', 'diag-quadratic': 'quad', 'diag-legs': 'legs', 'diag-hippo': 'legs',
    'diag-real': 'real', 'diag-rand': 'rand', 'diag-random': 'rand'}
S4D_DISCRETIZATIONS = ('zoh', 'bilinear', 'dss')
# Parameterizations of a positive dt by an unconstrained parameter, as the official `param_transform`.
DT_TRANSFORMS = ('exp', 'softplus', 'sigmoid', 'relu', 'none')


def _dt_from_param(param: torch.Tensor, transform: str) -> torch.Tensor:
    if transform == 'exp':
        return param.exp()
    if transform == 'softplus':
        return F.softplus(param)
    if transform == 'sigmoid':
        return torch.sigmoid(param)
    if transform == 'relu':
        return F.relu(param) + 1e-4
    return param


def _param_from_dt(dt: torch.Tensor, transform: str) -> torch.Tensor:
    dt = dt.clamp(min=1e-4)
    if transform == 'exp':
        return dt.log()
    if transform == 'softplus':
        return torch.log(torch.expm1(dt))
    if transform == 'sigmoid':
        return torch.logit(dt)
    return dt


def _complex_exp(z: torch.Tensor) -> torch.Tensor:
    """exp of a complex tensor from real exp, cos and sin (much faster than complex exp on the CPU)."""
    return torch.polar(z.real.exp(), z.imag)


def legs_diagonal(d_state: int):
    """S4D-LegS: the diagonal of the normal part of the HiPPO-LegS matrix, one mode per conjugate pair.

    HiPPO-LegS A (A[n, k] = -sqrt(2n + 1) sqrt(2k + 1) below the diagonal, -(n + 1) on it) plus the rank-1 term
    P P^T (P_n = sqrt(n + 1/2)) is -1/2 I plus a skew-symmetric matrix S. Its eigenvalues are -1/2 + i w, w the
    eigenvalues of the Hermitian -iS (eigh reads only the lower triangle and the real diagonal, so -i(A + P P^T) is
    passed as the official code does; that keeps the eigenvector phases, which decide the clipping below, identical).
    B = sqrt(2n + 1) is rotated into the eigenbasis and its imaginary part clipped to [-2, 2]. Returns
    (A_imag (N/2,), B (N/2,) complex) in this layer's sign convention (Im A > 0): the complex conjugate of the
    official pair, which gives the same distribution of kernels.
    """
    n = torch.arange(d_state, dtype=torch.float64)
    root = torch.sqrt(2 * n + 1)
    hippo = -torch.where(n[:, None] > n[None, :], root[:, None] * root[None, :], torch.diag(n + 1))
    rank_one = torch.sqrt(n.float() + 0.5)
    # Summed in float32 and diagonalized in float64, as officially: the rounding fixes the eigenvector phases.
    normal = hippo.float() + rank_one[:, None] * rank_one[None, :]
    w, V = torch.linalg.eigh(-1j * normal.to(torch.complex128))  # ascending w
    w, V = w[:d_state // 2], V[:, :d_state // 2]  # the modes with Im < 0, one per conjugate pair
    B = V.conj().T @ root.to(torch.complex128)
    B = torch.complex(B.real, B.imag.clamp(-2.0, 2.0))
    return (-w).float(), B.conj().to(torch.complex64)


def s4d_init(init: str, d_state: int, n_ssm: int):
    """Initial (Re A, Im A, B) of n_ssm copies of an S4D system, each (n_ssm, d_state // 2); Re A < 0, Im A >= 0.

    `init` is one of S4D_INITS or an official name (`diag-lin`, `diag-inv2`, ...: OFFICIAL_INIT_NAMES). 'diag' gives
    the first half of the copies S4D-Inv and the second half S4D-Lin, as the official combination.
    """
    init = OFFICIAL_INIT_NAMES.get(init, init)
    if init == 'diag':
        if n_ssm % 2:
            raise ValueError(f"init 'diag' splits the n_ssm copies between S4D-Inv and S4D-Lin: n_ssm must be even, "
                             f"got {n_ssm}")
        halves = [s4d_init(half, d_state, n_ssm // 2) for half in ('inv', 'lin')]
        return tuple(torch.cat(parts) for parts in zip(*halves))
    modes = d_state // 2
    n = torch.arange(modes, dtype=torch.float32).expand(n_ssm, modes)
    real = torch.full((n_ssm, modes), -0.5)
    B = torch.ones(n_ssm, modes, dtype=torch.complex64)
    if init == 'lin':  # S4D-Lin: frequencies on a line, pi n
        imag = math.pi * n
    elif init == 'inv':  # S4D-Inv: the asymptotics of S4-LegS, (N / pi) (N / (2n + 1) - 1)
        imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
    elif init == 'inv2':  # (N / pi) (N / (n + 1) - 1)
        imag = d_state / math.pi * (d_state / (n + 1) - 1)
    elif init == 'quad':  # (2n + 1)^2 / pi
        imag = (2 * n + 1) ** 2 / math.pi
    elif init == 'legs':
        imag, B = legs_diagonal(d_state)
        imag, B = imag.expand(n_ssm, modes), B.expand(n_ssm, modes)
    elif init == 'real':  # S4D-Real: A = -(n + 1), no oscillation
        real, imag = -(n + 1), torch.zeros(n_ssm, modes)
    elif init == 'rand':
        imag = torch.randn(n_ssm, modes).exp()
    else:
        raise ValueError(f"unknown S4D init {init!r}; choose from {S4D_INITS} or the official names "
                         f"{sorted(OFFICIAL_INIT_NAMES)}")
    return real.clone(), imag.clone(), B.clone()


def vandermonde_real(coef: torch.Tensor, log_z: torch.Tensor, L: int) -> torch.Tensor:
    """Re sum_n coef[..., n] z_n^l for l < L, in real arithmetic. coef (c, H, M), log_z (H, M) complex -> (c, H, L).

    Blocked: l = s T + j, z^l = z^(sT) z^j. Powers are exp(l log z) evaluated directly (never accumulated), so the
    result matches the naive kernel's accuracy; the sum over modes becomes one real matmul per feature.
    """
    T = 1 << math.ceil(math.log2(L) / 2)
    S = -(-L // T)
    dtype, device = log_z.real.dtype, log_z.device
    log_mag, phase = log_z.real.unsqueeze(-1), log_z.imag.unsqueeze(-1)  # (H, M, 1)

    j = torch.arange(T, dtype=dtype, device=device)
    mag = torch.exp(log_mag * j)
    powers = torch.cat((mag * torch.cos(phase * j), mag * torch.sin(phase * j)), dim=-2)  # (H, 2M, T): Re, Im

    s = torch.arange(S, dtype=dtype, device=device) * T
    mag = torch.exp(log_mag * s)
    block_re, block_im = mag * torch.cos(phase * s), mag * torch.sin(phase * s)  # (H, M, S)
    c_re, c_im = coef.real.unsqueeze(-1), coef.imag.unsqueeze(-1)  # (c, H, M, 1)
    # Re(p q) = p_re q_re - p_im q_im: stack (p_re, -p_im) against (q_re, q_im)
    starts = torch.cat((c_re * block_re - c_im * block_im, -(c_re * block_im + c_im * block_re)), dim=-2)
    with torch.autocast(device.type, enabled=False):  # a low-precision kernel would be wrong at long lags
        K = starts.transpose(-1, -2) @ powers  # (c, H, S, T)
    return K.flatten(-2)[..., :L]


class S4DKernel(nn.Module):
    """Convolution kernel of a diagonal SSM: (channels, H, L) from dt, A, (B), C.

    `channels` here counts every kernel the layer needs (doubled by bidirectionality). With channels == 1, `C` has
    the official minimal layer's shape (H, N/2, 2); otherwise (channels, H, N/2, 2).

    dt is `exp(log_dt)` (the minimal layer's and the S4D paper's parameterization), or with another `dt_transform`
    (official names: 'softplus', the current official default, 'sigmoid', 'relu', 'none') the transform of the
    parameter `inv_dt`, also under `dt_fast` (the parameter is asinh of the transform's argument). `dt_tie=False`
    gives every mode its own dt ((H, N/2) instead of (H,)). `bandlimit` zeroes the modes whose frequency
    dt |Im A| / (2 pi) reaches bandlimit / 2 (S4ND).
    """

    def __init__(
            self,
            d_model: int,
            d_state: int = 64,
            channels: int = 1,
            init: str = 'lin',
            disc: str = 'zoh',
            dt_min: float = 0.001,
            dt_max: float = 0.1,
            n_ssm: Optional[int] = None,
            learn_B: bool = False,
            lr: Union[float, Mapping[str, Optional[float]], None] = None,
            dt_transform: str = 'exp',
            dt_tie: bool = True,
            dt_fast: bool = False,
            bandlimit: Optional[float] = None,
    ):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state is the real state size and must be even and >= 2, got {d_state}")
        if disc not in S4D_DISCRETIZATIONS:
            raise ValueError(f"unknown S4D discretization {disc!r}; choose from {S4D_DISCRETIZATIONS}")
        if dt_transform not in DT_TRANSFORMS:
            raise ValueError(f"unknown dt_transform {dt_transform!r}; choose from {DT_TRANSFORMS}")
        n_ssm = d_model if n_ssm is None else n_ssm
        if d_model % n_ssm:
            raise ValueError(f"n_ssm={n_ssm} must divide d_model={d_model}")
        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.init, self.disc, self.n_ssm = OFFICIAL_INIT_NAMES.get(init, init), disc, n_ssm
        self.dt_transform, self.dt_tie, self.dt_fast, self.bandlimit = dt_transform, dt_tie, dt_fast, bandlimit

        log_dt = torch.rand(d_model if dt_tie else (d_model, d_state // 2)) * (
            math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        C = torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C[0] if channels == 1 else C).clone())
        A_real, A_imag, B = s4d_init(init, d_state, n_ssm)
        if not learn_B:
            # B is redundant with C up to its optimizer settings; the minimal official layer folds it into C.
            self.C.data.copy_(torch.view_as_real(torch.view_as_complex(self.C.data) * B.repeat(d_model // n_ssm, 1)))
        if isinstance(lr, Mapping) and not set(lr) <= {'dt', 'A', 'B'}:
            raise ValueError(f"lr keys must be among 'dt', 'A', 'B', got {sorted(lr)}")
        lrs = lr if isinstance(lr, Mapping) else {'dt': lr, 'A': lr, 'B': lr}
        # The minimal layer's `log_dt` when dt = exp(param); the official full layer's `inv_dt` otherwise.
        self.dt_name = 'log_dt' if dt_transform == 'exp' and not dt_fast else 'inv_dt'
        inv_dt = log_dt if dt_transform == 'exp' else _param_from_dt(log_dt.exp(), dt_transform)
        self._register(self.dt_name, torch.asinh(inv_dt) if dt_fast else inv_dt, lrs.get('dt'))
        self._register('log_A_real', torch.log(-A_real), lrs.get('A'))
        self._register('A_imag', A_imag, lrs.get('A'))
        if learn_B:
            self._register('B', torch.view_as_real(B).clone(), lrs.get('B'))
        else:
            self.B = None

    def _register(self, name: str, tensor: torch.Tensor, lr: Optional[float]):
        """SSM parameter with zero weight decay and its own lr (None: the global lr; 0.0: frozen buffer)."""
        if lr == 0.0:
            self.register_buffer(name, tensor)
            return
        param = nn.Parameter(tensor)
        param._optim = {'weight_decay': 0.0} if lr is None else {'lr': lr, 'weight_decay': 0.0}
        self.register_parameter(name, param)

    def dt(self, dtype: torch.dtype) -> torch.Tensor:
        """The step sizes, (H, 1) tied or (H, N/2) untied."""
        param = getattr(self, self.dt_name).to(dtype)
        if self.dt_fast:
            param = torch.sinh(param)
        dt = _dt_from_param(param, self.dt_transform)
        return dt.unsqueeze(-1) if self.dt_tie else dt

    def discretize(self, L: int = 1):
        """(coef (c, H, N/2), log z (H, N/2), scale) with K[l] = scale Re sum_n coef_n z_n^l, in at least float32
        (float64 for a float64 layer). L matters only for 'dss', which normalizes over the kernel length."""
        H, copies = self.d_model, self.d_model // self.n_ssm
        dtype = torch.promote_types(self.C.dtype, torch.float32)
        dt = self.dt(dtype)
        A = torch.complex(-self.log_A_real.to(dtype).exp(), self.A_imag.to(dtype)).repeat(copies, 1)  # (H, N/2)
        dtA = A * dt
        C = torch.view_as_complex(self.C.to(dtype)).reshape(self.channels, H, -1)  # (c, H, N/2)
        if self.B is not None:
            C = C * torch.view_as_complex(self.B.to(dtype)).repeat(copies, 1)
        if self.bandlimit is not None:
            C = C * (dt * A.imag.abs() / (2 * math.pi) < self.bandlimit / 2).to(dtype)

        if self.disc == 'zoh':
            return C * (_complex_exp(dtA) - 1) / A, dtA, 2.0
        if self.disc == 'bilinear':
            return C * dt / (1 - dtA / 2), torch.log((1 + dtA / 2) / (1 - dtA / 2)), 2.0
        # dss: kernel normalized over the length, K = Re sum C (e^dtA - 1) / ((e^(L dtA) - 1) A) e^(l dtA)
        denom = (_complex_exp(dtA * L) - 1) * A
        inv_denom = denom.conj() / (denom.abs().square() + 1e-7)
        return C * (_complex_exp(dtA) - 1) * inv_denom, dtA, 1.0

    def forward(self, L: int) -> torch.Tensor:
        """The (channels, H, L) kernel, computed and returned in float32 (float64 for a float64 layer; a float16 or
        bfloat16 layer, or autocast, still gets a float32 kernel)."""
        coef, log_z, scale = self.discretize(L)
        return scale * vandermonde_real(coef, log_z, L)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, init={self.init!r}, "
                f"disc={self.disc!r}, n_ssm={self.n_ssm}, dt_transform={self.dt_transform!r}")


# Options of the official S4 block / FFTConv / SSM kernel that this layer does not have (name -> what they do).
S4D_UNSUPPORTED = {
    'gate': 'GSS multiplicative gating', 'gate_act': 'GSS gate activation', 'mult_act': 'GSS gate activation',
    'bottleneck': 'GSS bottleneck projection', 'weight_norm': 'weight normalization of the projections',
    'swap_channels': 'FFTConv channel swapping', 'is_real': 'real-valued (EMA-like) SSM',
    'initializer': 'projection initializer', 'mode': 'kernel other than the diagonal one (S4 DPLR, dense, ...)',
    'real_transform': 'other parameterizations of Re A', 'imag_transform': 'other parameterizations of Im A',
    'rank': 'DPLR low-rank correction', 'deterministic': 'deterministic C initialization',
}


class S4D(LongConvLayer):
    """S4D layer: diagonal-SSM long convolution + D skip, GELU, dropout, output linear (+GLU).

    With its defaults this is the official minimal `S4D(d_model, d_state)` of `models/s4/s4d.py` (S4D-Lin, ZOH,
    unidirectional, B folded into C, dt in [1e-3, 1e-1], `lr=None`: dt and A get `_optim = {'weight_decay': 0.0}`
    and the global lr): the same parameter names, shapes, initial distributions, optimizer hints, tied dropout and
    outputs (golden test: tests/test_s4d.py). It differs from it only in these points:
    * `forward` returns the output `y`, not `(y, None)`, and takes no other arguments (the official one swallows
      `**kwargs`); shapes are checked;
    * with the same seed the initial values differ: the output projection is drawn before `D` and the kernel (the
      official layer draws `D`, `log_dt`, `C`, then the projection);
    * the kernel is a blocked real-arithmetic Vandermonde product (see the module docstring), equal to the official
      complex one to float32 rounding; it is computed in float32 for float16 / bfloat16 layers and under autocast,
      where the official complex kernel has no half-precision form.
    Options beyond the minimal layer: `init` in S4D_INITS (or an official name, e.g. 'diag-inv'), `disc` in
    S4D_DISCRETIZATIONS, `bidirectional`, `channels`, `n_ssm` (independent (A, B) copies shared across features),
    `learn_B` (B as its own parameter, as in the full s4 layer), `dt_min`/`dt_max`, `lr` for the SSM parameters (a
    float for dt, A and B, or a dict with keys 'dt', 'A', 'B'; None = global lr; 0.0 = frozen; weight decay is
    always 0), `dt_transform`, `dt_tie`, `dt_fast`, `bandlimit` (see `S4DKernel`), `tie_dropout`, `glu` /
    `final_act`, `activation`, `drop_kernel` (see `LongConvLayer`), `transposed`. Official options without an
    equivalent (S4D_UNSUPPORTED: GSS gating, bottleneck, weight norm, ...) raise a TypeError that says so.

    Recurrent inference: `step(u, state)` advances a unidirectional layer by one position (`default_state(batch)`
    is the zero state); stepping through a sequence gives the convolution's output.
    """

    def __init__(
            self,
            d_model: int,
            d_state: int = 64,
            dropout: float = 0.0,
            transposed: bool = True,
            channels: int = 1,
            bidirectional: bool = False,
            init: str = 'lin',
            disc: str = 'zoh',
            dt_min: float = 0.001,
            dt_max: float = 0.1,
            n_ssm: Optional[int] = None,
            learn_B: bool = False,
            lr: Union[float, Mapping[str, Optional[float]], None] = None,
            tie_dropout: bool = True,
            glu: bool = True,
            kernel_backend: str = 'auto',
            dt_transform: str = 'exp',
            dt_tie: bool = True,
            dt_fast: bool = False,
            bandlimit: Optional[float] = None,
            activation: str = 'gelu',
            final_act: Optional[str] = 'default',
            drop_kernel: float = 0.0,
            **official_options,
    ):
        refuse_options(S4D, official_options, S4D_UNSUPPORTED)
        super().__init__(
            d_model, channels=channels, bidirectional=bidirectional, dropout=dropout, tie_dropout=tie_dropout,
            glu=glu, transposed=transposed, kernel_backend=kernel_backend, activation=activation,
            final_act=final_act, drop_kernel=drop_kernel)
        self.D = nn.Parameter(torch.randn(d_model) if channels == 1 else torch.randn(channels, d_model))
        self.kernel = S4DKernel(
            d_model, d_state, channels=channels * (2 if bidirectional else 1), init=init, disc=disc,
            dt_min=dt_min, dt_max=dt_max, n_ssm=n_ssm, learn_B=learn_B, lr=lr, dt_transform=dt_transform,
            dt_tie=dt_tie, dt_fast=dt_fast, bandlimit=bandlimit)

    def compute_kernel(self, L: int) -> torch.Tensor:
        return self.kernel(L)

    # ------------------------------------------------------------------------------------------ recurrent mode

    def _check_steppable(self):
        if self.bidirectional:
            raise ValueError("S4D.step: a bidirectional layer sees the future, it has no recurrent form")
        if self.kernel.disc == 'dss':
            raise ValueError("S4D.step: the 'dss' kernel is normalized over the whole sequence length, it has no "
                             "recurrent form")

    def default_state(self, batch: int) -> torch.Tensor:
        """The zero state, (batch, H, N/2) complex (the N/2 modes of each feature; conjugates implied)."""
        self._check_steppable()
        dtype = torch.promote_types(self.kernel.C.dtype, torch.float32)
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.zeros(batch, self.d_model, self.kernel.d_state // 2, dtype=complex_dtype, device=self.D.device)

    def step(self, u: torch.Tensor, state: torch.Tensor):
        """One position: u (B, H) and the state (B, H, N/2) -> (y (B, H), next state).

        x' = z x + u per mode, y = activation(scale Re sum_n coef_n x'_n + D u) -> output projection, with the
        kernel's own discretization (coef, z), so that K[l] = scale Re sum coef z^l is exactly the response.
        """
        self._check_steppable()
        if u.dim() != 2 or u.shape[1] != self.d_model:
            raise ValueError(f"S4D.step expects (B, H={self.d_model}) input, got shape {tuple(u.shape)}")
        coef, log_z, scale = self.kernel.discretize()
        state = _complex_exp(log_z) * state + u.to(state.dtype).unsqueeze(-1)  # (B, H, N/2)
        y = scale * torch.einsum('chn,bhn->bch', coef, state).real  # (B, C, H)
        y = y + self.D.reshape(self.channels, self.d_model).to(y.dtype) * u.to(y.dtype).unsqueeze(1)
        y = self.dropout(self.activation(y.to(u.dtype).reshape(u.shape[0], -1, 1)))  # (B, C*H, 1)
        return self.output_linear(y).squeeze(-1), state
