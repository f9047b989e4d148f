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

from .layers import LongConvLayer

__all__ = ['S4D', 'S4DKernel', 'S4D_INITS', 'S4D_DISCRETIZATIONS', 'legs_diagonal', 's4d_init', 'vandermonde_real']

S4D_INITS = ('lin', 'inv', 'legs', 'real', 'rand')
S4D_DISCRETIZATIONS = ('zoh', 'bilinear', 'dss')


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
    """Initial (Re A, Im A, B) of n_ssm copies of an S4D system, each (n_ssm, d_state // 2); Re A < 0, Im A >= 0."""
    modes = d_state // 2
    n = torch.arange(modes, dtype=torch.float32).expand(n_ssm, modes)
    real = torch.full((n_ssm, modes), -0.5)
    B = torch.ones(n_ssm, modes, dtype=torch.complex64)
    if init == 'lin':  # S4D-Lin: frequencies on a line, pi n
        imag = math.pi * n
    elif init == 'inv':  # S4D-Inv: the asymptotics of S4-LegS, (N / pi) (N / (2n + 1) - 1)
        imag = d_state / math.pi * (d_state / (2 * n + 1) - 1)
    elif init == 'legs':
        imag, B = legs_diagonal(d_state)
        imag, B = imag.expand(n_ssm, modes), B.expand(n_ssm, modes)
    elif init == 'real':  # S4D-Real: A = -(n + 1), no oscillation
        real, imag = -(n + 1), torch.zeros(n_ssm, modes)
    elif init == 'rand':
        imag = torch.randn(n_ssm, modes).exp()
    else:
        raise ValueError(f"unknown S4D init {init!r}; choose from {S4D_INITS}")
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
    ):
        super().__init__()
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state is the real state size and must be even and >= 2, got {d_state}")
        if disc not in S4D_DISCRETIZATIONS:
            raise ValueError(f"unknown S4D discretization {disc!r}; choose from {S4D_DISCRETIZATIONS}")
        n_ssm = d_model if n_ssm is None else n_ssm
        if d_model % n_ssm:
            raise ValueError(f"n_ssm={n_ssm} must divide d_model={d_model}")
        self.d_model, self.d_state, self.channels = d_model, d_state, channels
        self.init, self.disc, self.n_ssm = init, disc, n_ssm

        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        C = torch.randn(channels, d_model, d_state // 2, dtype=torch.complex64)
        self.C = nn.Parameter(torch.view_as_real(C[0] if channels == 1 else C).clone())
        A_real, A_imag, B = s4d_init(init, d_state, n_ssm)
        if not learn_B:
            # B is redundant with C up to its optimizer settings; the minimal official layer folds it into C.
            self.C.data.copy_(torch.view_as_real(torch.view_as_complex(self.C.data) * B.repeat(d_model // n_ssm, 1)))
        if isinstance(lr, Mapping) and not set(lr) <= {'dt', 'A', 'B'}:
            raise ValueError(f"lr keys must be among 'dt', 'A', 'B', got {sorted(lr)}")
        lrs = lr if isinstance(lr, Mapping) else {'dt': lr, 'A': lr, 'B': lr}
        self._register('log_dt', log_dt, lrs.get('dt'))
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

    def forward(self, L: int) -> torch.Tensor:
        """The (channels, H, L) kernel, computed and returned in float32 (float64 for a float64 layer; a float16 or
        bfloat16 layer, or autocast, still gets a float32 kernel)."""
        H, copies = self.d_model, self.d_model // self.n_ssm
        dtype = torch.promote_types(self.C.dtype, torch.float32)
        dt = self.log_dt.to(dtype).exp().unsqueeze(-1)  # (H, 1)
        A = torch.complex(-self.log_A_real.to(dtype).exp(), self.A_imag.to(dtype)).repeat(copies, 1)  # (H, N/2)
        dtA = A * dt
        C = torch.view_as_complex(self.C.to(dtype)).reshape(self.channels, H, -1)  # (c, H, N/2)
        if self.B is not None:
            C = C * torch.view_as_complex(self.B.to(dtype)).repeat(copies, 1)

        if self.disc == 'zoh':
            coef, log_z, scale = C * (_complex_exp(dtA) - 1) / A, dtA, 2.0
        elif self.disc == 'bilinear':
            coef = C * dt / (1 - dtA / 2)
            log_z, scale = torch.log((1 + dtA / 2) / (1 - dtA / 2)), 2.0
        else:  # dss: kernel normalized over the length, K = Re sum C (e^dtA - 1) / ((e^(L dtA) - 1) A) e^(l dtA)
            denom = (_complex_exp(dtA * L) - 1) * A
            inv_denom = denom.conj() / (denom.abs().square() + 1e-7)
            coef, log_z, scale = C * (_complex_exp(dtA) - 1) * inv_denom, dtA, 1.0
        return scale * vandermonde_real(coef, log_z, L)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, channels={self.channels}, init={self.init!r}, "
                f"disc={self.disc!r}, n_ssm={self.n_ssm}")


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
    Options beyond the minimal layer: `init` in S4D_INITS, `disc` in S4D_DISCRETIZATIONS, `bidirectional`,
    `channels`, `n_ssm` (independent (A, B) copies shared across features), `learn_B` (B as its own parameter, as in
    the full s4 layer), `dt_min`/`dt_max`, `lr` for the SSM parameters (a float for dt, A and B, or a dict with keys
    'dt', 'A', 'B'; None = global lr; 0.0 = frozen; weight decay is always 0), `tie_dropout`, `glu`, `transposed`.
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
    ):
        super().__init__(
            d_model, channels=channels, bidirectional=bidirectional, dropout=dropout, tie_dropout=tie_dropout,
            glu=glu, transposed=transposed, kernel_backend=kernel_backend)
        self.D = nn.Parameter(torch.randn(d_model) if channels == 1 else torch.randn(channels, d_model))
        self.kernel = S4DKernel(
            d_model, d_state, channels=channels * (2 if bidirectional else 1), init=init, disc=disc,
            dt_min=dt_min, dt_max=dt_max, n_ssm=n_ssm, learn_B=learn_B, lr=lr)

    def compute_kernel(self, L: int) -> torch.Tensor:
        return self.kernel(L)
