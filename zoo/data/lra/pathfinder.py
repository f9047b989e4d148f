"""Pathfinder / Path-X (Linsley et al. 2018; LRA): contour-image generator, released-layout reader, DataModules.

Each image holds two target contours of ``contour_length`` short line segments ("paddles") and a few shorter
distractor contours. Two circular markers sit on contour ends: label 1 when both mark the two ends of the same
contour, label 0 when they mark ends of different contours. The generator reproduces the algorithm of
``drewlinsley/pathfinder`` (``snakes2.py``) in our own code, with the LRA parameters per resolution:

  * the first target seed is drawn uniformly where a paddle fits, away from the border by 2 x ``seed_distance``;
    the second seed lies ``seed_distance`` away in a random direction;
  * a contour grows paddle by paddle: the next paddle's far end is drawn from the integer points of a circle of
    radius paddle_length + margin around a pivot placed just past the previous paddle, weighted by
    max(cos(min(turn x continuity, pi/2)), 0)^2 x (1 - occupancy dilated by the margin); a paddle that would cross
    an earlier one (summed footprints >= 1.8) is redrawn, up to ``max_paddle_retrial`` times; a failed target pair
    is regrown from scratch, a failed distractor is retried and then dropped;
  * distractors use the snake contrast, targets the snake x paddle contrast (as in the original).

Deliberate differences:
  * endpoint markers are drawn at full intensity (peak 1.0 before the final 0-255 scaling, like the 2019 code with
    ``scipy.misc.imresize``). The current public head divides a 0-1 circle by 255 again and makes the markers
    invisible; we never do;
  * anti-aliasing by box-filtered supersampling of exact segment distances instead of PIL drawing at 2x plus a
    Lanczos resize (same geometry, no ringing), and the last paddle of *both* target contours enters the occupancy
    mask (the original forgot the first contour's, letting distractors touch its end);
  * labels are exactly balanced within each batch of images (the original drew each label independently);
  * randomness: batch ``b`` uses ``numpy.random.default_rng([seed, resolution, b])``, so batches can be made in
    any order and in parallel, and an interrupted run resumes where it stopped.
Distractor counts use the integer division the data were made with (Python 2): 14 // 3 = 4 paddles and
20 // 4, 22 // 4, 35 // 4 = 5, 5, 8 distractors at 32, 64, 128 px.

Output layout (same as the released ``lra_release/pathfinder{32,64,128}``):
``<root>/curv_contour_length_14/imgs/<batch>/sample_<k>.png`` and ``metadata/<batch>.npy`` holding *text* lines
``imgs/<batch> sample_<k>.png <k> <label> <continuity> <contour_length> <distractor_length> <paddle_length>
<paddle_thickness> <margin> <num_paddle_contrasts>``.
"""
from __future__ import annotations

import functools
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from .common import LRADataError, LRADataModule, check_label, missing_data_error, pool_context, seeded_split

DIFFICULTY = 'curv_contour_length_14'  # LRA uses the "hard" split only


@dataclass(frozen=True)
class ContourParams:
    resolution: int
    padding: int
    antialias_scale: int
    paddle_margin_list: tuple
    seed_distance: int
    marker_radius: float
    contour_length: int = 14
    paddle_length: int = 5
    paddle_thickness: float = 1.5
    continuity: float = 1.8
    distractor_length: int = 14 // 3
    num_distractor_snakes: int = 5
    snake_contrast_list: tuple = (1.0,)
    paddle_contrast_list: tuple = (1.0,)
    max_distractor_contour_retrial: int = 4
    max_paddle_retrial: int = 2


# The LRA overrides (docstrings of lra_benchmarks/data/pathfinder.py), "hard" = contour length 14.
LRA_PARAMS = {
    32: ContourParams(32, padding=1, antialias_scale=2, paddle_margin_list=(1,), seed_distance=7, marker_radius=1.5,
                      paddle_length=2, paddle_thickness=0.5, continuity=1.0, num_distractor_snakes=20 // 4,
                      snake_contrast_list=(2.0,), paddle_contrast_list=(0.75,)),
    64: ContourParams(64, padding=1, antialias_scale=2, paddle_margin_list=(1,), seed_distance=12, marker_radius=2.5,
                      paddle_thickness=1.0, num_distractor_snakes=22 // 4, snake_contrast_list=(0.8,)),
    128: ContourParams(128, padding=1, antialias_scale=2, paddle_margin_list=(2, 3), seed_distance=20,
                       marker_radius=3.0, paddle_thickness=1.5, num_distractor_snakes=35 // 4,
                       snake_contrast_list=(0.9,)),
}

_SUPERSAMPLE = 4  # subsamples per pixel side for coverage


# ------------------------------------------------------------------------------------------------ drawing

def _advance(point, theta: float, dist: float):
    """Integer point ``dist`` away along ``theta`` (rounded up, as the original's translate_coord)."""
    return (int(math.ceil(point[0] + dist * math.sin(theta))), int(math.ceil(point[1] + dist * math.cos(theta))))


def _flip(theta: float) -> float:
    return theta + math.pi if theta < 0 else theta - math.pi


class _Paddle:
    """A drawn segment: intensity (``core``) and occupancy footprint with margin (``foot``) on a local patch."""
    __slots__ = ('y0', 'x0', 'core', 'foot')

    def __init__(self, y0, x0, core, foot):
        self.y0, self.x0, self.core, self.foot = y0, x0, core, foot

    def region(self, arr: np.ndarray) -> np.ndarray:
        return arr[self.y0:self.y0 + self.core.shape[0], self.x0:self.x0 + self.core.shape[1]]


def _segment_distance(size: int, p0, p1, reach: float):
    """Distances of supersampled points to segment p0-p1 on the clipped bounding patch; (y0, x0, d (h, s, w, s))."""
    y0 = max(int(math.floor(min(p0[0], p1[0]) - reach)) - 1, 0)
    y1 = min(int(math.ceil(max(p0[0], p1[0]) + reach)) + 2, size)
    x0 = max(int(math.floor(min(p0[1], p1[1]) - reach)) - 1, 0)
    x1 = min(int(math.ceil(max(p0[1], p1[1]) + reach)) + 2, size)
    sub = (np.arange(_SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    ys = (np.arange(y0, y1)[:, None] + sub).reshape(-1, 1)
    xs = (np.arange(x0, x1)[:, None] + sub).reshape(1, -1)
    dy, dx = p1[0] - p0[0], p1[1] - p0[1]
    norm2 = dy * dy + dx * dx
    t = np.clip(((ys - p0[0]) * dy + (xs - p0[1]) * dx) / norm2, 0.0, 1.0) if norm2 > 0 else 0.0
    d = np.hypot(ys - (p0[0] + t * dy), xs - (p0[1] + t * dx))
    return y0, x0, d.reshape(y1 - y0, _SUPERSAMPLE, x1 - x0, _SUPERSAMPLE)


@functools.lru_cache(maxsize=8192)
def _paddle_patch(p: ContourParams, theta: float, margin: int, contrast: float):
    """Paddle from (0, 0) along ``theta``: (dy, dx, core, foot). Starts are integer points, so every paddle with
    the same orientation is this patch shifted; caching it is what makes the generator fast."""
    half_width = round(p.paddle_thickness * p.antialias_scale) / (2 * p.antialias_scale)
    end = (p.paddle_length * math.sin(theta), p.paddle_length * math.cos(theta))
    reach = int(math.ceil(p.paddle_length + half_width + margin)) + 2
    y0, x0, d = _segment_distance(2 * reach + 1, (reach, reach), (reach + end[0], reach + end[1]),
                                  half_width + margin + 1)
    core = (d <= half_width).mean(axis=(1, 3))
    core *= contrast / core.max()  # each paddle peaks at 1 x contrast (the original bytescaled every paddle)
    foot = (d <= half_width + margin).mean(axis=(1, 3))
    for arr in (core, foot):
        arr.flags.writeable = False
    return y0 - reach, x0 - reach, core, foot


def _draw_paddle(p: ContourParams, start, theta: float, margin: int, contrast: float) -> _Paddle:
    """Paddle from integer point ``start`` along ``theta``, clipped to the image."""
    dy, dx, core, foot = _paddle_patch(p, theta, margin, contrast)
    y0, x0, n = start[0] + dy, start[1] + dx, p.resolution
    cy, cx = max(0, -y0), max(0, -x0)
    ey, ex = min(core.shape[0], n - y0), min(core.shape[1], n - x0)
    return _Paddle(y0 + cy, x0 + cx, core[cy:ey, cx:ex], foot[cy:ey, cx:ex])


@functools.lru_cache(maxsize=16)
def _circle_offsets(radius: int):
    """Integer points of a circle (one sample per pixel of arc, truncated like the original): offsets, angles."""
    angles = np.arange(0, 360, 360.0 / (2 * radius * math.pi)) * math.pi / 180
    offsets = np.unique(np.floor(np.stack([radius * np.sin(angles), radius * np.cos(angles)], 1)).astype(int),
                        axis=0)
    return offsets, np.arctan2(offsets[:, 0], offsets[:, 1])


def _draw_marker(size: int, center, radius: float) -> tuple[int, int, np.ndarray]:
    y0, x0, d = _segment_distance(size, center, center, radius + 1)
    disk = (d <= radius).mean(axis=(1, 3))
    return y0, x0, disk / disk.max()  # peak 1.0: visible markers


# ------------------------------------------------------------------------------------------------ contours

class _Snake:
    __slots__ = ('pivot', 'theta', 'last', 'tip', 'origin', 'paddles')

    def __init__(self, pivot, theta, first: _Paddle, origin):
        self.pivot, self.theta, self.last, self.tip, self.origin = pivot, theta, first, origin, origin
        self.paddles = [first]


class _Canvas:
    """One image being generated: committed intensity and occupancy, and the random stream."""

    def __init__(self, p: ContourParams, margin: int, rng: np.random.Generator):
        self.p, self.margin, self.rng = p, margin, rng
        n = p.resolution
        self.image = np.zeros((n, n), np.float32)
        self.mask = np.zeros((n, n), np.float32)
        if p.padding:
            self.mask[:p.padding] = self.mask[-p.padding:] = 1
            self.mask[:, :p.padding] = self.mask[:, -p.padding:] = 1
        r = margin  # grey dilation by a disk of radius `margin` (the original's small dilation struct)
        oy, ox = np.nonzero(np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r)
        self.disk_offsets = (oy - r, ox - r)

    # ---- helpers

    def _inside(self, point) -> bool:
        n = self.p.resolution
        return 0 <= point[0] < n and 0 <= point[1] < n

    def _random_theta(self) -> float:
        return int(self.rng.integers(-180, 180)) * math.pi / 180

    def _fits(self, paddle: _Paddle, blocked: np.ndarray) -> bool:
        """Seed placement test: the paddle's full-coverage footprint (the original's uint8 dilation struct) avoids
        occupied pixels; the callers mark the border as occupied."""
        return not (paddle.region(blocked)[paddle.foot >= 0.99] > 0.3).any()

    def _seed(self, blocked: np.ndarray, contrast: float, near=None):
        """Place a first paddle (random orientation); returns (tail, pivot, theta, paddle) or None.

        Without ``near`` the tail is uniform over the points where the paddle's footprint is free; with
        ``near=(point, distance)`` it is ``distance`` from ``point`` in a random direction (second target seed).
        """
        p, m = self.p, self.margin
        free = np.flatnonzero(blocked.ravel() <= 0.3) if near is None else None
        for _ in range(p.max_paddle_retrial + 1):
            theta = self._random_theta()
            if near is None:
                found = None
                for idx in self.rng.choice(free, size=min(len(free), 64), replace=False) if len(free) else ():
                    cand = divmod(int(idx), p.resolution)
                    paddle = _draw_paddle(p, cand, theta, m, contrast)
                    if self._fits(paddle, blocked):
                        found = cand, paddle
                        break
                if found is None:
                    return None  # no room left for this orientation's footprint
                start, paddle = found
            else:
                (y, x), dist = near
                phi = int(self.rng.integers(0, 360)) * math.pi / 180
                start, paddle = (int(round(y + dist * math.sin(phi))), int(round(x + dist * math.cos(phi)))), None
            head = _advance(start, theta, p.paddle_length)
            pivot = _advance(head, _flip(theta), p.paddle_length + m)
            if self._inside(start) and self._inside(head) and self._inside(pivot):
                return start, pivot, theta, paddle or _draw_paddle(p, start, theta, m, contrast)
        return None

    def _extend(self, snake: _Snake, mask: np.ndarray, contrast: float) -> bool:
        """Add one paddle to ``snake`` against occupancy ``mask`` (updated in place on success)."""
        p, m, n = self.p, self.margin, self.p.resolution
        pivot = _advance(snake.pivot, snake.theta, p.paddle_length + 2 * m)
        offsets, angles = _circle_offsets(p.paddle_length + m)
        coords = offsets + pivot
        keep = ((coords >= 0) & (coords < n)).all(axis=1)
        if not keep.any():
            return False
        coords, orient = coords[keep], angles[keep]
        turn = np.abs(orient - snake.theta)
        turn = np.minimum(np.minimum(turn, 2 * math.pi - turn) * p.continuity, math.pi / 2)
        # occupancy dilated by the margin, read at the candidate points only
        ny, nx = coords[:, :1] + self.disk_offsets[0], coords[:, 1:] + self.disk_offsets[1]
        valid = (ny >= 0) & (ny < n) & (nx >= 0) & (nx < n)
        near = np.where(valid, mask[ny.clip(0, n - 1), nx.clip(0, n - 1)], 0).max(axis=1)
        pmf = (1 - near) * np.maximum(np.cos(turn), 0) ** 2
        total = pmf.sum()
        if total < 1e-4:
            return False
        cmf = np.cumsum(pmf / total)
        for _ in range(p.max_paddle_retrial + 1):
            i = int(np.argmax(cmf - self.rng.random() > 0))
            tip = (int(coords[i, 0]), int(coords[i, 1]))
            paddle = _draw_paddle(p, tip, _flip(float(orient[i])), m, contrast)
            if not (paddle.region(mask) + paddle.foot >= 1.8).any():
                region = snake.last.region(mask)
                np.maximum(region, snake.last.foot, out=region)
                snake.pivot, snake.theta, snake.last, snake.tip = pivot, float(orient[i]), paddle, tip
                snake.paddles.append(paddle)
                return True
        return False

    def _commit(self, snakes, mask):
        for snake in snakes:
            region = snake.last.region(mask)
            np.maximum(region, snake.last.foot, out=region)
            for paddle in snake.paddles:
                region = paddle.region(self.image)
                np.maximum(region, paddle.core, out=region)
        self.mask = mask

    # ---- public steps

    def target_pair(self):
        """Two target contours grown side by side; returns them or None (caller retries)."""
        p, sd = self.p, self.p.seed_distance
        contrasts = list(p.snake_contrast_list) * 2
        self.rng.shuffle(contrasts)
        paddle_contrast = lambda: p.paddle_contrast_list[int(self.rng.integers(len(p.paddle_contrast_list)))]
        mask = self.mask.copy()
        banded = mask.copy()
        banded[:2 * sd] = banded[-2 * sd:] = 1
        banded[:, :2 * sd] = banded[:, -2 * sd:] = 1
        first = self._seed(banded, paddle_contrast() * contrasts[0])
        if first is None:
            return None
        second = self._seed(mask, paddle_contrast() * contrasts[1], near=(first[0], sd))
        if second is None:
            return None
        snakes = [_Snake(s[1], s[2], s[3], s[0]) for s in (first, second)]
        for _ in range(p.contour_length - 1):
            contrast = paddle_contrast()
            for k, snake in enumerate(snakes):
                if not self._extend(snake, mask, contrast * contrasts[k]):
                    return None
        self._commit(snakes, mask)
        return snakes

    def distractor(self, contrast: float) -> bool:
        """One distractor contour; on failure nothing is drawn."""
        mask = self.mask.copy()
        if (mask <= 0.3).mean() < 0.01:  # almost no free space left
            return False
        lined = mask.copy()
        lined[0] = lined[-1] = 1
        lined[:, 0] = lined[:, -1] = 1
        seed = self._seed(lined, contrast)
        if seed is None:
            return False
        snake = _Snake(seed[1], seed[2], seed[3], seed[0])
        for _ in range(self.p.distractor_length - 1):
            if not self._extend(snake, mask, contrast):
                return False
        self._commit([snake], mask)
        return True


def render_pathfinder(p: ContourParams, rng: np.random.Generator, label: int, max_pair_tries: int = 1000):
    """One image (uint8 (R, R)) with the given label; returns (image, margin, marker points)."""
    margin = int(p.paddle_margin_list[int(rng.integers(len(p.paddle_margin_list)))])
    for _ in range(max_pair_tries):
        canvas = _Canvas(p, margin, rng)
        snakes = canvas.target_pair()
        if snakes is not None:
            break
    else:
        raise RuntimeError(f'pathfinder{p.resolution}: no target pair fitted in {max_pair_tries} tries')
    for _ in range(p.num_distractor_snakes):
        for _ in range(p.max_distractor_contour_retrial + 1):
            contrast = p.snake_contrast_list[int(rng.integers(len(p.snake_contrast_list)))]
            if canvas.distractor(contrast):
                break
    origin = int(rng.integers(0, 2))
    terminal = origin if label == 1 else 1 - origin
    points = (snakes[origin].origin, snakes[terminal].tip)
    image = canvas.image
    for point in points:
        y0, x0, disk = _draw_marker(p.resolution, point, p.marker_radius)
        region = image[y0:y0 + disk.shape[0], x0:x0 + disk.shape[1]]
        np.maximum(region, disk, out=region)
    # the original saved with scipy's imsave, which stretches min..max to 0..255
    lo, hi = float(image.min()), float(image.max())
    out = np.round((image - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return out, margin, points


def _generate_batch(job):
    root, p, seed, batch, count = job
    meta_path = root / 'metadata' / f'{batch}.npy'
    if meta_path.is_file():
        return batch, 0.0
    start = time.time()
    rng = np.random.default_rng([seed, p.resolution, batch])
    labels = rng.permutation(np.arange(count) % 2)
    img_dir = root / 'imgs' / str(batch)
    img_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, label in enumerate(labels.tolist()):
        image, margin, _ = render_pathfinder(p, rng, label)
        Image.fromarray(image, mode='L').save(img_dir / f'sample_{k}.png')
        lines.append(f'imgs/{batch} sample_{k}.png {k} {label} {p.continuity} {p.contour_length} '
                     f'{p.distractor_length} {p.paddle_length} {p.paddle_thickness} {margin} '
                     f'{len(p.paddle_contrast_list)}')
    tmp = meta_path.with_suffix('.tmp')
    tmp.write_text('\n'.join(lines) + '\n')
    tmp.rename(meta_path)  # the metadata file marks a finished batch
    return batch, time.time() - start


def generate_pathfinder(out_dir, resolution: int = 32, num_images: int = 200000, images_per_batch: int = 1000,
                        seed: int = 0, processes: int | None = None, verbose: bool = False) -> Path:
    """Generate (or complete) a Pathfinder set in the released layout; returns the ``pathfinder<R>`` folder.

    The folder is keyed by resolution, seed, size and batch size, so different settings never mix.
    """
    if resolution not in LRA_PARAMS:
        raise ValueError(f'resolution must be one of {sorted(LRA_PARAMS)}, got {resolution}')
    p = LRA_PARAMS[resolution]
    folder = Path(out_dir) / f'pathfinder{resolution}_seed{seed}_n{num_images}_b{images_per_batch}'
    root = folder / DIFFICULTY
    (root / 'metadata').mkdir(parents=True, exist_ok=True)
    sizes = [min(images_per_batch, num_images - b * images_per_batch)
             for b in range(-(-num_images // images_per_batch))]
    jobs = [(root, p, seed, b, n) for b, n in enumerate(sizes)]
    processes = processes or max(1, mp.cpu_count())
    start = time.time()
    if processes > 1 and len(jobs) > 1:
        with pool_context().Pool(min(processes, len(jobs))) as pool:
            for batch, _ in pool.imap_unordered(_generate_batch, jobs):
                if verbose:
                    print(f'pathfinder{resolution}: batch {batch} done, {time.time() - start:.0f}s', flush=True)
    else:
        for job in jobs:
            _generate_batch(job)
    (folder / 'params.txt').write_text(repr(asdict(p)) + '\n')
    return folder


# ------------------------------------------------------------------------------------------------ reading

def read_pathfinder_metadata(root: Path):
    """(relative image path, label, metadata file, line) for every listed image of one difficulty folder."""
    meta_files = sorted((root / 'metadata').glob('*.npy'), key=lambda f: int(f.stem) if f.stem.isdigit() else -1)
    samples = []
    for meta in meta_files:
        if not meta.stem.isdigit():
            raise LRADataError(f'{meta}: metadata files are named <batch>.npy')
        try:
            text = meta.read_text()
        except UnicodeDecodeError:
            raise LRADataError(f'{meta}: not a text metadata file (the released format is text lines '
                               '"imgs/<batch> sample_<k>.png <k> <label> ...")') from None
        for line, row in enumerate(text.splitlines(), start=1):
            fields = row.split()
            if not fields:
                continue
            where = f'{meta}:{line}'
            if len(fields) < 4:
                raise LRADataError(f'{where}: expected at least 4 fields (dir, file, index, label), got {row!r}')
            samples.append((f'{fields[0]}/{fields[1]}', check_label(fields[3], 2, where), str(meta), line))
    return samples


class PathfinderImages(Dataset):
    """Grayscale PNGs -> (H*W, 1) float in [0, 1] (S4 ``center: False``), or [-1, 1] with ``center``."""

    def __init__(self, root: Path, samples, resolution: int, center: bool = False):
        self.root, self.resolution, self.center = root, resolution, center
        self.paths = [s[0] for s in samples]
        self.labels = np.array([s[1] for s in samples], dtype=np.int64)
        self.rows = [(s[2], s[3]) for s in samples]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        path = self.root / self.paths[i]
        try:
            with Image.open(path) as im:
                pixels = np.asarray(im.convert('L'), dtype=np.uint8)
        except (OSError, ValueError) as e:
            raise LRADataError(f'{path} (listed at {self.rows[i][0]}:{self.rows[i][1]}): cannot read image: {e}') \
                from None
        if pixels.shape != (self.resolution, self.resolution):
            raise LRADataError(f'{path} (listed at {self.rows[i][0]}:{self.rows[i][1]}): size {pixels.shape}, '
                               f'expected {self.resolution}x{self.resolution}')
        x = torch.from_numpy(pixels.astype(np.float32) / 255.0).reshape(-1, 1)
        if self.center:
            x = x * 2 - 1
        return x, int(self.labels[i])


class PathfinderDataModule(LRADataModule):
    """Pathfinder (32x32, L = 1024) from the released layout or our generator; 80/10/10 split with seed 42.

    Released data: ``data_dir/pathfinder<R>/curv_contour_length_14/{imgs,metadata}``. With ``generate=True``:
    ``num_images`` images are made under ``data_dir/generated/`` (200k like LRA takes hours on a few cores;
    see docs/lra.md for measured times).
    """

    task = 'pathfinder'
    num_classes = 2
    in_chans = 1
    default_resolution = 32

    def __init__(self, data_dir: str, resolution: int | None = None, generate: bool = False,
                 num_images: int = 200000, images_per_batch: int = 1000, seed: int = 0,
                 processes: int | None = None, split_seed: int = 42, val_split: float = 0.1,
                 test_split: float = 0.1, center: bool = False, **loader_kw):
        super().__init__(data_dir, **loader_kw)
        self.resolution = resolution or self.default_resolution
        self.generate = generate
        self.gen_cfg = dict(resolution=self.resolution, num_images=num_images, images_per_batch=images_per_batch,
                            seed=seed)
        self.processes = processes
        self.split_seed, self.fractions = split_seed, (1 - val_split - test_split, val_split, test_split)
        self.center = center
        self.seq_len = self.resolution ** 2

    def dataset_root(self) -> Path:
        if self.generate:
            folder = generate_pathfinder(self.data_dir / 'generated', processes=self.processes, **self.gen_cfg)
        else:
            folder = self.data_dir / f'pathfinder{self.resolution}'
        return folder / DIFFICULTY

    def prepare_data(self) -> None:
        self.dataset_root()

    def _load(self):
        root = self.dataset_root()
        if not (root / 'metadata').is_dir():
            raise missing_data_error(
                self.task, root, ['metadata/<batch>.npy (text lines)', 'imgs/<batch>/sample_<k>.png'],
                f'Extract lra_release.gz and point data_dir at the folder holding pathfinder{self.resolution}/, '
                f'or set generate=true to build the images offline.')
        samples = read_pathfinder_metadata(root)
        if not samples:
            raise LRADataError(f'{root / "metadata"}: no samples listed')
        full = PathfinderImages(root, samples, self.resolution, self.center)
        return tuple(Subset(full, idx.tolist()) for idx in seeded_split(len(full), self.fractions, self.split_seed))

    def extra_stats(self) -> dict:
        return {'resolution': self.resolution, 'source': str(self.dataset_root())}


class PathXDataModule(PathfinderDataModule):
    """Path-X: the same task at 128x128 (L = 16384)."""

    task = 'pathx'
    default_resolution = 128
