"""Triton depthwise conv2d (stride 1, any odd kernel, dilation) with forward, input-grad and weight-grad kernels.

The kernels work on *channel segments*: consecutive channel ranges that each have their own kernel size, padding
and slice of a packed fp32 weight vector. A plain depthwise conv is one segment; the InceptionNeXt mixer
(`kernels.triton.inception_mixer`) is four (identity as a 1x1 conv with weight 1, kxk, 1xk, kx1), so it runs in the same single
launch and writes the concatenated output directly.

Work decomposition (one program = one block of channels of one segment x one spatial tile x one sample):
- forward / input grad: the program loads its output tile's shifted input window once per tap (so the halo window
  is re-read from L1/L2 k*k times, from HBM about once), multiplies by the per-channel tap weight and accumulates in
  fp32. The input grad is the same kernel run on dy with the flipped taps and the complementary padding.
  fp16/bf16 NCHW planes of at least `tensor_core_min_size` use `_dw_fwd_dot_kernel` instead: one channel per
  program, per kernel row a tensor-core product of the input window with a banded Toeplitz matrix of the row's
  taps, so the loads per output drop from k*k to k; their weight grad is `_dw_wgrad_dot_kernel` (per kernel row
  G = X^T dy on tensor cores, dw = sums of G's band diagonals).
- weight grad: per program a blocked reduction over its tile and a chunk of the batch, one plain store per tap into
  a (splits, weights) fp32 scratch that a final `sum(0)` reduces: no atomics at all.
Both memory formats are handled through strides; the tile shape follows the layout (pixel-major tiles for NCHW,
channel-major tiles for channels_last) so loads are coalesced along the contiguous axis.

Tuning values are arguments of every host function, with the defaults below: `tensor_core_min_size` and `gpu_tiles`
(the GPU heuristics for tiles and batch splits; off under Triton's interpreter, where each program is a Python loop
and one tile per plane is fastest).
"""
import functools
from typing import Optional

import torch
import triton
import triton.language as tl

from ..backend import interpret_mode

SEG_FIELDS = 7  # segment-table columns: c_begin, c_end, kh, kw, pad_h, pad_w, weight offset of c_begin
# fp16/bf16 NCHW convs on planes at least this large use the tensor-core (tl.dot) kernels; smaller planes would
# waste most of their 16x16 minimum tile. 0 disables them.
TENSOR_CORE_MIN_SIZE = 12


@triton.jit
def _load_segment(seg_ptr):
    """This program's segment-table row (SEG_FIELDS columns): c_begin, c_end, kh, kw, pad_h, pad_w, weight offset."""
    seg = seg_ptr + tl.program_id(0) * 7
    return (tl.load(seg), tl.load(seg + 1), tl.load(seg + 2), tl.load(seg + 3), tl.load(seg + 4), tl.load(seg + 5),
            tl.load(seg + 6))


@triton.jit
def _dw_fwd_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, seg_ptr,
        H_in, W_in, H_out, W_out, n_tiles_w,
        sxb, sxc, sxh, sxw, syb, syc, syh, syw,
        dil_h, dil_w,
        HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    c0, c1, kh_size, kw_size, pad_h, pad_w, w_off = _load_segment(seg_ptr)
    pid_t = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    offs_c = c0 + tl.arange(0, BLOCK_C)
    mask_c = offs_c < c1
    offs_p = tl.arange(0, TILE_H * TILE_W)
    oh = (pid_t // n_tiles_w) * TILE_H + offs_p // TILE_W
    ow = (pid_t % n_tiles_w) * TILE_W + offs_p % TILE_W
    mask_p = (oh < H_out) & (ow < W_out)

    x_base = x_ptr + b * sxb + offs_c[:, None] * sxc
    w_base = w_ptr + w_off + (offs_c - c0) * (kh_size * kw_size)
    acc = tl.zeros([BLOCK_C, TILE_H * TILE_W], dtype=tl.float32)
    # Row quantities are hoisted out of the tap loop (this also keeps the interpreter's per-op cost down).
    for i in range(kh_size):
        ih = oh + (i * dil_h - pad_h)
        row_ptrs = x_base + (ih * sxh)[None, :]
        row_mask = mask_c[:, None] & (mask_p & (ih >= 0) & (ih < H_in))[None, :]
        w_row = w_base + i * kw_size
        iw = ow - pad_w
        for j in range(kw_size):
            mask = row_mask & ((iw >= 0) & (iw < W_in))[None, :]
            xv = tl.load(row_ptrs + (iw * sxw)[None, :], mask=mask, other=0.0)
            wv = tl.load(w_row + j, mask=mask_c, other=0.0)
            acc += xv.to(tl.float32) * wv[:, None]
            iw += dil_w
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_c, mask=mask_c, other=0.0)[:, None]
    y_ptrs = y_ptr + b * syb + offs_c[:, None] * syc + (oh * syh + ow * syw)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_c[:, None] & mask_p[None, :])


@triton.jit
def _dw_wgrad_kernel(
        x_ptr, dy_ptr, dw_ptr, db_ptr, seg_ptr,
        B, H_in, W_in, H_out, W_out, n_tiles_w, n_wts, n_chans, batch_per_split,
        sxb, sxc, sxh, sxw, syb, syc, syh, syw,
        dil_h, dil_w,
        HAS_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
):
    """dw[c, i, j] = sum_{b, oh, ow} dy[b, c, oh, ow] * x[b, c, oh - pad_h + i*dil_h, ow - pad_w + j*dil_w]."""
    c0, c1, kh_size, kw_size, pad_h, pad_w, w_off = _load_segment(seg_ptr)
    pid_t = tl.program_id(1)
    pid_b = tl.program_id(2)
    split = (pid_t * tl.num_programs(2) + pid_b).to(tl.int64)
    b_begin = pid_b * batch_per_split
    b_end = tl.minimum(b_begin + batch_per_split, B)

    offs_c = c0 + tl.arange(0, BLOCK_C)
    mask_c = offs_c < c1
    offs_p = tl.arange(0, TILE_H * TILE_W)
    oh = (pid_t // n_tiles_w) * TILE_H + offs_p // TILE_W
    ow = (pid_t % n_tiles_w) * TILE_W + offs_p % TILE_W
    mask_p = (oh < H_out) & (ow < W_out)
    x_base = x_ptr + offs_c[:, None] * sxc
    dy_tile = dy_ptr + offs_c[:, None] * syc + (oh * syh + ow * syw)[None, :]

    if HAS_BIAS:
        acc = tl.zeros([BLOCK_C, TILE_H * TILE_W], dtype=tl.float32)
        dy_ptrs = dy_tile + b_begin.to(tl.int64) * syb
        for _ in range(b_begin, b_end):
            acc += tl.load(dy_ptrs, mask=mask_c[:, None] & mask_p[None, :], other=0.0).to(tl.float32)
            dy_ptrs += syb
        tl.store(db_ptr + split * n_chans + offs_c, tl.sum(acc, axis=1), mask=mask_c)

    # Taps outside, batch inside: the chunk's dy tiles and input windows stay cache-resident across taps, and
    # each tap's partial sum is reduced once and stored once (no read-modify-write, no atomics).
    dw_base = dw_ptr + split * n_wts + w_off + (offs_c - c0) * (kh_size * kw_size)
    x_base += b_begin.to(tl.int64) * sxb
    dy_tile += b_begin.to(tl.int64) * syb
    for i in range(kh_size):
        ih = oh + (i * dil_h - pad_h)
        row_ptrs = x_base + (ih * sxh)[None, :]
        row_mask = mask_c[:, None] & (mask_p & (ih >= 0) & (ih < H_in))[None, :]
        dw_row = dw_base + i * kw_size
        iw = ow - pad_w
        for j in range(kw_size):
            mask = row_mask & ((iw >= 0) & (iw < W_in))[None, :]
            x_ptrs = row_ptrs + (iw * sxw)[None, :]
            dy_ptrs = dy_tile
            acc = tl.zeros([BLOCK_C, TILE_H * TILE_W], dtype=tl.float32)
            for _ in range(b_begin, b_end):
                xv = tl.load(x_ptrs, mask=mask, other=0.0).to(tl.float32)
                dyv = tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)
                acc += xv * dyv
                x_ptrs += sxb
                dy_ptrs += syb
            tl.store(dw_row + j, tl.sum(acc, axis=1), mask=mask_c)
            iw += dil_w


@triton.jit
def _dw_fwd_dot_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, seg_ptr,
        H_in, W_in, H_out, W_out, n_tiles_w,
        sxb, sxc, sxh, sxw, syb, syc, syh, syw,
        dil_h, dil_w,
        HAS_BIAS: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr, KPAD: tl.constexpr,
):
    """Tensor-core forward for fp16/bf16 NCHW, one channel per program: for each kernel row i,
    y_tile += X_i (TILE_H x KPAD input window) @ T_i (KPAD x TILE_W banded Toeplitz matrix of row i's taps),
    so each output costs one load per kernel row instead of one per tap."""
    c, _, kh_size, kw_size, pad_h, pad_w, w_off = _load_segment(seg_ptr)  # one channel per row here
    w_row = w_ptr + w_off
    pid_t = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    oh = (pid_t // n_tiles_w) * TILE_H + tl.arange(0, TILE_H)
    ow0 = (pid_t % n_tiles_w) * TILE_W
    kk = tl.arange(0, KPAD)
    nn = tl.arange(0, TILE_W)
    iw = ow0 - pad_w + kk  # input columns of the window
    col_ok = (iw >= 0) & (iw < W_in)
    lag = kk[:, None] - nn[None, :]  # window column - output column = tap * dil_w on the band
    tap = lag // dil_w
    band = (lag >= 0) & (lag % dil_w == 0) & (tap < kw_size)

    x_base = x_ptr + b * sxb + c * sxc + (iw * sxw)[None, :]
    acc = tl.zeros([TILE_H, TILE_W], dtype=tl.float32)
    for i in range(kh_size):
        ih = oh + (i * dil_h - pad_h)
        xw = tl.load(x_base + (ih * sxh)[:, None], mask=((ih >= 0) & (ih < H_in))[:, None] & col_ok[None, :],
                     other=0.0)
        toeplitz = tl.load(w_row + i * kw_size + tap, mask=band, other=0.0).to(xw.dtype)
        acc = tl.dot(xw, toeplitz, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + c).to(tl.float32)
    ow = ow0 + nn
    y_ptrs = y_ptr + b * syb + c * syc + (oh * syh)[:, None] + (ow * syw)[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=(oh < H_out)[:, None] & (ow < W_out)[None, :])


@triton.jit
def _dw_wgrad_dot_kernel(
        x_ptr, dy_ptr, dw_ptr, seg_ptr,
        B, H_in, W_in, H_out, W_out, n_tiles_w, n_wts, batch_per_split,
        sxb, sxc, sxh, sxw, syb, syc, syh, syw,
        dil_h, dil_w,
        TILE_H: tl.constexpr, TILE_W: tl.constexpr, KPAD: tl.constexpr,
):
    """Tensor-core weight grad for fp16/bf16 NCHW, one channel per program: per kernel row i,
    G = sum_b X_i^T (KPAD x TILE_H) @ dy (TILE_H x TILE_W); then dw[i, j] is the sum of G's j-th band diagonal."""
    c, _, kh_size, kw_size, pad_h, pad_w, w_off = _load_segment(seg_ptr)  # one channel per row here
    pid_t = tl.program_id(1)
    pid_b = tl.program_id(2)
    split = (pid_t * tl.num_programs(2) + pid_b).to(tl.int64)
    dw_row = dw_ptr + split * n_wts + w_off
    b_begin = pid_b * batch_per_split
    b_end = tl.minimum(b_begin + batch_per_split, B)

    oh = (pid_t // n_tiles_w) * TILE_H + tl.arange(0, TILE_H)
    ow = (pid_t % n_tiles_w) * TILE_W + tl.arange(0, TILE_W)
    kk = tl.arange(0, KPAD)
    iw = (pid_t % n_tiles_w) * TILE_W - pad_w + kk
    col_ok = (iw >= 0) & (iw < W_in)
    lag = kk[:, None] - tl.arange(0, TILE_W)[None, :]
    dy_mask = (oh < H_out)[:, None] & (ow < W_out)[None, :]
    x_base = x_ptr + b_begin.to(tl.int64) * sxb + c * sxc + (iw * sxw)[None, :]
    dy_base = dy_ptr + b_begin.to(tl.int64) * syb + c * syc + (oh * syh)[:, None] + (ow * syw)[None, :]
    for i in range(kh_size):
        ih = oh + (i * dil_h - pad_h)
        x_mask = ((ih >= 0) & (ih < H_in))[:, None] & col_ok[None, :]
        x_ptrs = x_base + (ih * sxh)[:, None]
        dy_ptrs = dy_base
        gram = tl.zeros([KPAD, TILE_W], dtype=tl.float32)
        for _ in range(b_begin, b_end):
            xw = tl.load(x_ptrs, mask=x_mask, other=0.0)
            dyt = tl.load(dy_ptrs, mask=dy_mask, other=0.0)
            gram = tl.dot(tl.trans(xw), dyt, gram)
            x_ptrs += sxb
            dy_ptrs += syb
        for j in range(kw_size):
            tl.store(dw_row + i * kw_size + j, tl.sum(tl.sum(tl.where(lag == j * dil_w, gram, 0.0), axis=1), axis=0))


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def is_channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1 and not x.is_contiguous()


def pick_tiles(channels: int, h: int, w: int, channels_last: bool, gpu_tiles: bool) -> tuple[int, int, int, int]:
    """(BLOCK_C, TILE_H, TILE_W, num_warps) for a plane of h x w and segments of at most `channels` channels.

    1024 elements per program on a GPU. NCHW tiles run along W (the contiguous axis) and stay wide so the halo
    re-read per tap stays near 2x the tile; channels_last tiles are 8x8 pixels by up to 16 channels (32 contiguous
    bytes per pixel in 16-bit types) on 8 warps (32 channels on 4 warps needed 238 registers). Both compile for
    sm_90 without spills (tests compile them with ptxas, no GPU needed); the sizes are untuned first guesses.
    Without `gpu_tiles` (the interpreter) one tile covers the plane, since each program costs a Python loop there.
    """
    if not gpu_tiles:
        return _next_pow2(channels), _next_pow2(h), _next_pow2(w), 4
    if channels_last:
        return min(_next_pow2(channels), 16), min(_next_pow2(h), 8), min(_next_pow2(w), 8), 8
    tile_w = min(_next_pow2(w), 64)
    tile_h = min(_next_pow2(h), max(1, 1024 // tile_w))
    block_c = min(_next_pow2(channels), max(1, 1024 // (tile_h * tile_w)))
    return block_c, tile_h, tile_w, 4


def _dot_tiles(x: torch.Tensor, h: int, w: int, segments: tuple, dilation,
               tensor_core_min_size: int) -> Optional[tuple[int, int, int]]:
    """(TILE_H, TILE_W, KPAD) when the tensor-core kernels apply (fp16/bf16 NCHW, plane >= tensor_core_min_size)."""
    if (is_channels_last(x) or x.dtype not in (torch.float16, torch.bfloat16) or not tensor_core_min_size
            or min(h, w) < tensor_core_min_size):
        return None
    tile_h, tile_w = max(16, min(_next_pow2(h), 32)), max(16, min(_next_pow2(w), 32))
    span = max(dilation[1] * (kw - 1) for _, _, _, kw, *_ in segments)
    return tile_h, tile_w, _next_pow2(tile_w + span)


@functools.lru_cache(maxsize=256)
def segment_table(segments: tuple, block_c: int, device: torch.device) -> torch.Tensor:
    """One row per channel block: (c_begin, c_end, kh, kw, pad_h, pad_w, weight offset of c_begin).

    Cached per shape so steady-state calls do no host-to-device copy (and stay CUDA-graph friendly).
    """
    rows = []
    for c_begin, c_end, kh, kw, ph, pw, w_off in segments:
        for c in range(c_begin, c_end, block_c):
            rows.append((c, c_end, kh, kw, ph, pw, w_off + (c - c_begin) * kh * kw))
    return torch.tensor(rows, dtype=torch.int32, device=device)


def _num_sms(device) -> int:
    if device.type == 'cuda':
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _out_like(x: torch.Tensor, h: int, w: int, channels_last: bool) -> torch.Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((x.shape[0], x.shape[1], h, w), dtype=x.dtype, device=x.device, memory_format=fmt)


def _unflatten(segments: list[int]) -> tuple:
    return tuple(tuple(segments[i:i + SEG_FIELDS]) for i in range(0, len(segments), SEG_FIELDS))


# Custom ops (opaque to torch.compile, with fake implementations) so compiled models keep one graph.
@torch.library.custom_op('kernelzoo::dw_segments_fwd', mutates_args=())
def conv_segments_fwd(x: torch.Tensor, w_packed: torch.Tensor, b_packed: Optional[torch.Tensor], segments: list[int],
                      dilation: list[int], out_hw: list[int], tensor_core_min_size: int,
                      gpu_tiles: bool) -> torch.Tensor:
    """y = segmented depthwise conv of x. w_packed / b_packed: fp32, contiguous; b_packed may be None.

    segments: flattened (c_begin, c_end, kh, kw, pad_h, pad_w, w_off) per segment.
    """
    segments = _unflatten(segments)
    B, C, H, W = x.shape
    H_out, W_out = out_hw
    cl = is_channels_last(x)
    y = _out_like(x, H_out, W_out, cl)
    dot_tiles = _dot_tiles(x, H_out, W_out, segments, dilation, tensor_core_min_size)
    if dot_tiles:
        tile_h, tile_w, kpad = dot_tiles
        table = segment_table(segments, 1, x.device)
        n_tiles_w = triton.cdiv(W_out, tile_w)
        grid = (table.shape[0], triton.cdiv(H_out, tile_h) * n_tiles_w, B)
        _dw_fwd_dot_kernel[grid](
            x, w_packed, w_packed if b_packed is None else b_packed, y, table,
            H, W, H_out, W_out, n_tiles_w,
            *x.stride(), *y.stride(), *dilation,
            HAS_BIAS=b_packed is not None, TILE_H=tile_h, TILE_W=tile_w, KPAD=kpad, num_warps=4,
        )
        return y
    max_c = max(s[1] - s[0] for s in segments)
    block_c, tile_h, tile_w, num_warps = pick_tiles(max_c, H_out, W_out, cl, gpu_tiles)
    table = segment_table(segments, block_c, x.device)
    n_tiles_w = triton.cdiv(W_out, tile_w)
    grid = (table.shape[0], triton.cdiv(H_out, tile_h) * n_tiles_w, B)
    _dw_fwd_kernel[grid](
        x, w_packed, w_packed if b_packed is None else b_packed, y, table,
        H, W, H_out, W_out, n_tiles_w,
        *x.stride(), *y.stride(), *dilation,
        HAS_BIAS=b_packed is not None, BLOCK_C=block_c, TILE_H=tile_h, TILE_W=tile_w, num_warps=num_warps,
    )
    return y


@conv_segments_fwd.register_fake
def _(x, w_packed, b_packed, segments, dilation, out_hw, tensor_core_min_size, gpu_tiles):
    return _out_like(x, out_hw[0], out_hw[1], is_channels_last(x))


@torch.library.custom_op('kernelzoo::dw_segments_wgrad', mutates_args=())
def conv_segments_wgrad(x: torch.Tensor, dy: torch.Tensor, segments: list[int], n_wts: int, dilation: list[int],
                        with_bias: bool, tensor_core_min_size: int, gpu_tiles: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight grad (packed fp32, n_wts long) and bias grad (fp32, C; empty without bias) of the segmented conv."""
    segments = _unflatten(segments)
    B, C, H, W = x.shape
    H_out, W_out = dy.shape[-2:]
    dot_tiles = (_dot_tiles(x, H_out, W_out, segments, dilation, tensor_core_min_size)
                 if dy.stride() == x.stride() else None)
    if dot_tiles:
        (tile_h, tile_w, kpad), block_c, num_warps = dot_tiles, 1, 4
        halo = tile_h * kpad
    else:
        block_c, tile_h, tile_w, num_warps = pick_tiles(max(s[1] - s[0] for s in segments), H_out, W_out,
                                                        is_channels_last(x), gpu_tiles)
        halo = max((tile_h + dilation[0] * (kh - 1)) * (tile_w + dilation[1] * (kw - 1))
                   for _, _, kh, kw, *_ in segments)
    table = segment_table(segments, block_c, x.device)
    n_tiles_w = triton.cdiv(W_out, tile_w)
    n_tiles = triton.cdiv(H_out, tile_h) * n_tiles_w
    # Split the batch until there are ~4 programs per SM, and so far that one program's batch chunk (input windows
    # with halo + dy tiles) stays within ~64 KB: every tap re-reads the chunk, which must come from L1, not L2.
    target = 4 * _num_sms(x.device) if gpu_tiles else 2
    n_split_b = max(1, min(B, triton.cdiv(target, table.shape[0] * n_tiles)))
    if gpu_tiles:
        chunk_bytes = block_c * (halo + tile_h * tile_w) * x.element_size()
        n_split_b = max(n_split_b, triton.cdiv(B, max(1, (64 * 1024) // chunk_bytes)))
        # ...but keep the fp32 partials (written, then summed) no larger than the input itself.
        n_split_b = min(n_split_b, max(1, x.numel() * x.element_size() // (n_tiles * n_wts * 4)))
    batch_per_split = triton.cdiv(B, n_split_b)
    n_split_b = triton.cdiv(B, batch_per_split)
    n_splits = n_tiles * n_split_b
    dw_part = torch.zeros((n_splits, n_wts), dtype=torch.float32, device=x.device)
    grid = (table.shape[0], n_tiles, n_split_b)
    if dot_tiles:
        _dw_wgrad_dot_kernel[grid](
            x, dy, dw_part, table,
            B, H, W, H_out, W_out, n_tiles_w, n_wts, batch_per_split,
            *x.stride(), *dy.stride(), *dilation,
            TILE_H=tile_h, TILE_W=tile_w, KPAD=kpad, num_warps=num_warps,
        )
        db = dy.sum((0, 2, 3), dtype=torch.float32) if with_bias else dw_part.new_empty(0)
        return dw_part.sum(0), db
    db_part = torch.zeros((n_splits, C), dtype=torch.float32, device=x.device) if with_bias else None
    _dw_wgrad_kernel[grid](
        x, dy, dw_part, dw_part if db_part is None else db_part, table,
        B, H, W, H_out, W_out, n_tiles_w, n_wts, C, batch_per_split,
        *x.stride(), *dy.stride(), *dilation,
        HAS_BIAS=with_bias, BLOCK_C=block_c, TILE_H=tile_h, TILE_W=tile_w, num_warps=num_warps,
    )
    return dw_part.sum(0), (db_part.sum(0) if with_bias else dw_part.new_empty(0))


@conv_segments_wgrad.register_fake
def _(x, dy, segments, n_wts, dilation, with_bias, tensor_core_min_size, gpu_tiles):
    return x.new_empty(n_wts, dtype=torch.float32), x.new_empty(x.shape[1] if with_bias else 0, dtype=torch.float32)


class DWConv2dFunction(torch.autograd.Function):
    """Depthwise conv2d, stride 1; x (B, C, H, W) in NCHW or channels_last, weight (C, 1, kh, kw)."""

    @staticmethod
    def forward(ctx, x, weight, bias, padding, dilation, tuning):
        C, _, kh, kw = weight.shape
        ph, pw = padding
        dh, dw = dilation
        H_out = x.shape[2] + 2 * ph - dh * (kh - 1)
        W_out = x.shape[3] + 2 * pw - dw * (kw - 1)
        if H_out < 1 or W_out < 1:
            raise ValueError(f"dwconv2d: empty output for input {tuple(x.shape)}, kernel {kh}x{kw}, "
                             f"padding {padding}, dilation {dilation}")
        w_packed = weight.detach().reshape(-1).float().contiguous()
        b_packed = None if bias is None else bias.detach().float().contiguous()
        y = conv_segments_fwd(x, w_packed, b_packed, [0, C, kh, kw, ph, pw, 0], list(dilation), [H_out, W_out],
                              *tuning)
        ctx.save_for_backward(x, weight)
        ctx.conv = (padding, dilation, bias is not None, None if bias is None else bias.dtype, tuning)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight = ctx.saved_tensors
        (ph, pw), dilation, has_bias, bias_dtype, tuning = ctx.conv
        C, _, kh, kw = weight.shape
        dx = dw = db = None
        if dy.stride() != x.stride():
            dy = dy.contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
        if ctx.needs_input_grad[0]:
            # dx is the correlation of dy with the flipped taps under the complementary padding.
            w_flip = weight.detach().flip(-1, -2).reshape(-1).float().contiguous()
            seg = [0, C, kh, kw, dilation[0] * (kh - 1) - ph, dilation[1] * (kw - 1) - pw, 0]
            dx = conv_segments_fwd(dy, w_flip, None, seg, list(dilation), list(x.shape[-2:]), *tuning)
        need_b = has_bias and ctx.needs_input_grad[2]
        if ctx.needs_input_grad[1] or need_b:
            dw_flat, db = conv_segments_wgrad(x, dy, [0, C, kh, kw, ph, pw, 0], weight.numel(), list(dilation), need_b,
                                              *tuning)
            dw = dw_flat.view_as(weight).to(weight.dtype) if ctx.needs_input_grad[1] else None
            db = db.to(bias_dtype) if need_b else None
        return dx, dw, db, None, None, None


def tuning(tensor_core_min_size: int = TENSOR_CORE_MIN_SIZE, gpu_tiles: Optional[bool] = None) -> tuple[int, bool]:
    """The tuning arguments of the custom ops; `gpu_tiles=None`: GPU heuristics unless the interpreter runs."""
    return tensor_core_min_size, (not interpret_mode()) if gpu_tiles is None else gpu_tiles


def dwconv2d_triton(x, weight, bias, padding: tuple[int, int], dilation: tuple[int, int],
                    tensor_core_min_size: int = TENSOR_CORE_MIN_SIZE, gpu_tiles: Optional[bool] = None):
    """Checked arguments (see `kernels.dwconv2d`) -> the Triton depthwise conv with autograd."""
    return DWConv2dFunction.apply(x, weight, bias, padding, dilation, tuning(tensor_core_min_size, gpu_tiles))
