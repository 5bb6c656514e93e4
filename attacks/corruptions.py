"""The 19 CIFAR-10-C corruptions at severities 1-5, on batches of uint8 images, in torch.

The spec is the reference generator, hendrycks/robustness make_cifar_c.py (shared/docs/
cifar10c-reference.md): same parameters, same formulas, same float dtype (float64 where numpy
gives float64, float32 where the reference works in float32), and the same final ``np.uint8``,
which truncates. The reference sets no seed, so its arrays cannot be regenerated bit for bit:
every random draw here comes from a CPU generator seeded by (seed, corruption, severity, image
index), which makes an image's corruption independent of the batch it is in and of the device.
The eight deterministic corruptions match the reference to within one uint8 level (a value a
rounding error away from an integer can truncate either way); the other eleven match it in
distribution. Work runs on the input's device, in chunks that stay in cache on a CPU, where
the chunks are shared among torch's intra-op threads. What is per image (the seeded draws,
OpenCV's JPEG codec for jpeg_compression, PIL's resampler for pixelate, OpenCV's Canny for the
water mode of spatter) runs on the CPU whatever the device.

A corruption is one decorated function (``register_corruption``); ``corrupt`` applies one at one
severity, ``corrupt_severities`` at several, sharing what severities have in common.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import inspect
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from bench.errors import BenchError

F64, F32 = torch.float64, torch.float32
SIZE = 32

# ----------------------------------------------------------------------------------------------
# Registry.

FAMILIES = ("benchmark", "extra")


@dataclass(frozen=True)
class CorruptionInfo:
    name: str
    family: str  # "benchmark": one of the 15 of the CIFAR-10-C benchmark; "extra": one of the 4 held out
    params: tuple  # the reference's parameters at severities 1..5
    deterministic: bool  # the same image gives the same output whatever the seed
    description: str
    fn: Callable  # fn(images, severity, seed=0, indices=None): corrupt() with the name bound
    impl: Callable  # impl(x, c, keys[, memo]) on one chunk at one severity (register_corruption)
    chunk: int = 64  # images per impl call on a CPU (on a GPU: 8192)

    @property
    def benchmark(self) -> bool:
        return self.family == "benchmark"


CORRUPTIONS: Dict[str, CorruptionInfo] = {}  # the benchmark family first, each in registration order
PARAMS: Dict[str, tuple] = {}
BENCHMARK: Tuple[str, ...] = ()
EXTRA: Tuple[str, ...] = ()


def register_corruption(name: str, *, family: str, params: Sequence, deterministic: bool, description: str,
                        chunk: int = 64):
    """Register ``impl(x, c, keys)`` as corruption ``name``: x is a chunk of uint8 images [n, 3,
    32, 32] on any device, c = params[severity - 1], keys the chunk's per-image seeds (pass them to
    ``_draw``); it returns the corrupted uint8 chunk. An impl with a ``memo`` parameter also gets a
    dict shared by the severities of one chunk in ``corrupt_severities``, for work they have in
    common. ``chunk``: images per call on a CPU; 64 keeps float64 intermediates in cache, 128
    suits an impl of many small steps (their cost is per call). BENCHMARK, EXTRA and PARAMS
    follow."""
    if family not in FAMILIES:
        raise ValueError(f"corruption {name!r}: family must be one of {FAMILIES}, got {family!r}")
    if len(params) != 5:
        raise ValueError(f"corruption {name!r}: params needs one entry per severity 1-5, got {len(params)}")
    if name in CORRUPTIONS:
        raise ValueError(f"corruption {name!r} is already registered")

    def deco(impl: Callable) -> Callable:
        global BENCHMARK, EXTRA
        info = CorruptionInfo(name, family, tuple(params), deterministic, description, _bind(name), impl, chunk)
        entries = [*CORRUPTIONS.values(), info]
        CORRUPTIONS.clear()
        CORRUPTIONS.update((i.name, i) for f in FAMILIES for i in entries if i.family == f)
        PARAMS.clear()
        PARAMS.update((i.name, i.params) for i in CORRUPTIONS.values())
        BENCHMARK = tuple(n for n, i in CORRUPTIONS.items() if i.family == "benchmark")
        EXTRA = tuple(n for n, i in CORRUPTIONS.items() if i.family == "extra")
        return impl
    return deco


def _bind(name: str) -> Callable:
    def fn(images: torch.Tensor, severity: int, seed: int = 0, indices: Optional[torch.Tensor] = None) -> torch.Tensor:
        return corrupt(images, name, severity, seed, indices)
    fn.__name__ = name
    return fn


# ----------------------------------------------------------------------------------------------
# Random draws: one CPU generator per image, so batch size, batch order and device change nothing.


def _keys(seed: int, name: str, severity: int, indices: Sequence[int]) -> List[int]:
    """A stable seed per image (blake2b, not Python's salted hash()). torch's CPU generator keeps
    the low 32 bits (mt19937's seed), so two images of one corruption and severity share their
    draws with probability about n^2 / 2^33 (none among the 10,000 test images at seed 0)."""
    head = hashlib.blake2b(f"cifar10c/{int(seed)}/{name}/{int(severity)}/".encode(), digest_size=8)
    keys = []
    for i in indices:  # the head's state copied: a third faster than hashing head + index afresh
        h = head.copy()
        h.update(str(int(i)).encode())
        keys.append(int.from_bytes(h.digest(), "little") >> 1)
    return keys


_POOLS: Dict[int, ThreadPoolExecutor] = {}


def _blocks(fn: Callable[[int, int], list], n: int) -> list:
    """fn(lo, hi) -> list over range(n), split into one contiguous block per intra-op thread and
    run in parallel (per-image torch draws and OpenCV calls release the GIL); results in order."""
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        return fn(0, n)
    pool = _POOLS.get(workers) or _POOLS.setdefault(workers, ThreadPoolExecutor(workers, "corrupt"))
    parts = pool.map(lambda w: fn(n * w // workers, n * (w + 1) // workers), range(workers))
    return [r for part in parts for r in part]


@functools.lru_cache(maxsize=None)
def _openmp() -> bool:
    """torch's intra-op threads are OpenMP's (the wheels for Linux, macOS and Windows), where
    torch.set_num_threads sets the calling thread's count; the native pool has one process-wide."""
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


def _draw(keys: Sequence[int], make: Callable) -> Tuple[torch.Tensor, ...]:
    """make(generator, i) -> tuple of CPU tensors for image i; stacked over the images. Keep make
    to the draws themselves: arithmetic on them is cheaper once on the stack."""
    def block(lo, hi):
        g = torch.Generator()
        return [make(g.manual_seed(keys[i]), i) for i in range(lo, hi)]
    return tuple(torch.stack(col) for col in zip(*_blocks(block, len(keys))))


def _u8(y: torch.Tensor) -> torch.Tensor:
    """np.uint8 of a value the reference has already clipped to [0, 255]: truncation, which
    torch's conversion does itself (toward zero: the floor, on values that are never negative)."""
    return y.to(torch.uint8)


def _unit(x: torch.Tensor, dtype=F64) -> torch.Tensor:
    return x.to(dtype) / 255.


def _finish(y: torch.Tensor) -> torch.Tensor:
    """The reference's closing ``np.clip(y, 0, 1) * 255`` then np.uint8, in place: y is spent."""
    return y.clamp_(0, 1).mul_(255).to(torch.uint8)  # truncates, as _u8


# ----------------------------------------------------------------------------------------------
# Linear filters as the reference libraries compute them.


def _border(n: int, lo: int, hi: int, mode: str, device) -> torch.Tensor:
    """Source index for positions lo..hi-1 of a length-n axis under a border mode: 'nearest'
    (edge repeated), 'reflect' (scipy: d c b a | a b c d | d c b a) or 'reflect101' (cv2's
    default, scipy 'mirror': d c b | a b c d | c b a)."""
    i = torch.arange(lo, hi, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    i = i % (2 * n - 2)
    return torch.where(i >= n, 2 * n - 2 - i, i)


def _gauss_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage._gaussian_kernel1d, order 0: the same float64 weights."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def _correlate1d(x: torch.Tensor, w: np.ndarray, dim: int, mode: str) -> torch.Tensor:
    """scipy's symmetric correlate1d in its own order of operations (centre tap, then the pairs
    from the outermost in, no fused multiply-add, as in the manylinux x86_64 build), so float64
    in gives scipy's float64 out and float32 in is rounded to float32 once per pass, as there."""
    r = (len(w) - 1) // 2
    n = x.shape[dim]
    xp = x.to(F64)
    if r and mode == "nearest" and x.dim() == 4 and r < n:  # F.pad copies rows, index_select gathers
        xp = torch.nn.functional.pad(xp, (r, r, 0, 0) if dim in (-1, 3) else (0, 0, r, r), mode="replicate")
    elif r:
        xp = xp.index_select(dim, _border(n, -r, n + r, mode, x.device))
    out = xp.narrow(dim, r, n) * float(w[r])
    pair = torch.empty_like(out)
    for j in range(r, 0, -1):
        out += torch.add(xp.narrow(dim, r - j, n), xp.narrow(dim, r + j, n), out=pair).mul_(float(w[r - j]))
    return out.to(x.dtype)


def _gaussian(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian over the last two axes (channels apart): scipy's
    gaussian_filter, rows then columns; an axis with sigma <= 1e-15 is skipped, as scipy does."""
    w = _gauss_weights(sigma, truncate)
    if sigma <= 1e-15 or len(w) == 1:  # a one-tap kernel is [1.0]: the identity
        return x.clone()
    return _correlate1d(_correlate1d(x, w, -2, mode), w, -1, mode)


@functools.lru_cache(maxsize=None)
def _gaussian_matrix(n: int, sigma: float, mode: str, truncate: float) -> torch.Tensor:
    """scipy's gaussian_filter1d along an axis of length n as an [n, n] matrix (the border rule
    folded in): M @ x filters the rows of x, x @ M.T its columns. The sums run in another order
    than scipy's, a few float64 ulps away: for elastic_transform's field, which the reference
    casts to float32 at once, not for the filters whose float64 output is truncated to uint8."""
    w = _gauss_weights(sigma, truncate)
    r = (len(w) - 1) // 2
    src = _border(n, -r, n + r, mode, "cpu").numpy()
    m = np.zeros((n, n))
    for i in range(n):
        np.add.at(m[i], src[i:i + 2 * r + 1], w)
    return torch.from_numpy(m)


def _filter2d(x: torch.Tensor, kernel: np.ndarray, mode: str = "reflect101") -> torch.Tensor:
    """cv2.filter2D (a correlation, BORDER_REFLECT_101) of x [..., n, n] by a small k x k kernel:
    the sum of the k*k shifted copies of the padded image, each times its weight, in the kernel's
    row-major order (within 1e-15 of cv2; zero weights skipped, which changes no sum)."""
    k = kernel.shape[0]
    r, n = k // 2, x.shape[-1]
    src = _border(n, -r, n + r, mode, x.device)
    xp = x.index_select(-2, src).index_select(-1, src)
    out, term = torch.zeros_like(x), torch.empty_like(x)
    for a, b in zip(*np.nonzero(kernel)):
        out += torch.mul(xp[..., a:a + n, b:b + n], float(kernel[a, b]), out=term)
    return out


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference's disk(): a 17x17 aliased disk, normalised, then cv2.GaussianBlur (3x3,
    REFLECT_101) in float32; cropped to its non-zero support, which changes no sum."""
    L = np.arange(-8, 8 + 1)
    X, Y = np.meshgrid(L, L)
    d = np.array((X ** 2 + Y ** 2) <= radius ** 2, dtype=np.float32)
    d /= np.sum(d)
    g = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    g = (g / g.sum()).astype(np.float32)
    p = np.pad(d, ((0, 0), (1, 1)), mode="reflect")  # numpy 'reflect' is REFLECT_101; rows first
    d = (g[0] * p[:, 0:17] + g[1] * p[:, 1:18] + g[2] * p[:, 2:19]).astype(np.float32)
    p = np.pad(d, ((1, 1), (0, 0)), mode="reflect")
    d = (g[0] * p[0:17] + g[1] * p[1:18] + g[2] * p[2:19]).astype(np.float32)
    nz = np.nonzero(d.any(axis=0))[0]
    r = max(8 - nz.min(), nz.max() - 8)
    return d[8 - r:9 + r, 8 - r:9 + r].astype(np.float64)


def _glass_shuffle(x: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """One pass of the reference's 'swap' loop, for h, w = 31..2 descending, offsets d[n, h-2,
    w-2] = (dx, dy) in {-1, 0}. Its numpy swap ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` swaps
    nothing: both right-hand sides are views, so x[h', w'] gets back its own value and the step
    is the copy x[h, w] = x[h', w']. The source (h' <= h, w' <= w, not both equal) has not been
    written yet in that descending order, so the sequential loop is exactly one parallel
    gather from the input, which this is."""
    n = x.shape[0]
    hw = torch.arange(2, SIZE, device=x.device)
    rows = hw.view(1, -1, 1) + d[..., 1]
    cols = hw.view(1, 1, -1) + d[..., 0]
    idx = torch.arange(SIZE * SIZE, device=x.device).view(SIZE, SIZE).repeat(n, 1, 1)
    idx[:, 2:, 2:] = rows * SIZE + cols
    idx = idx.view(n, 1, -1).expand(n, x.shape[1], -1)
    return x.flatten(2).gather(2, idx).view_as(x)


# ----------------------------------------------------------------------------------------------
# Noise.


@register_corruption("gaussian_noise", family="benchmark", params=(0.04, 0.06, .08, .09, .10), deterministic=False,
                     description="additive N(0, sigma) on [0,1]")
def _gaussian_noise(x, c, keys):
    (z,) = _draw(keys, lambda g, i: (torch.randn(x.shape[1:], generator=g),))
    return _finish(_unit(x) + z.to(x.device, F64) * c)


@register_corruption("shot_noise", family="benchmark", params=(500, 250, 100, 75, 50), deterministic=False,
                     description="Poisson(x*c)/c photon noise")
def _shot_noise(x, c, keys):
    rate = _unit(x).cpu() * c
    (k,) = _draw(keys, lambda g, i: (torch.poisson(rate[i], generator=g),))
    return _finish(k.to(x.device) / c)


@register_corruption("impulse_noise", family="benchmark", params=(.01, .02, .03, .05, .07), deterministic=False,
                     description="salt and pepper on a fraction of the values")
def _impulse_noise(x, c, keys):
    """skimage random_noise 's&p': each value (per channel) flipped with probability c, to 1 or
    0 with even odds."""
    (u,) = _draw(keys, lambda g, i: (torch.rand((2,) + tuple(x.shape[1:]), generator=g, dtype=F64),))
    u = u.to(x.device)
    y = torch.where(u[:, 0] <= c, (u[:, 1] <= 0.5).to(F64), _unit(x))
    return _finish(y)


# ----------------------------------------------------------------------------------------------
# Blurs.


@register_corruption("defocus_blur", family="benchmark",
                     params=((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
                     deterministic=True, description="anti-aliased disk kernel")
def _defocus_blur(x, c, keys):
    return _finish(_filter2d(_unit(x), _disk(*c)))


@register_corruption("glass_blur", family="benchmark",
                     params=((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)), deterministic=False,
                     description="Gaussian blur, local pixel shuffling, Gaussian blur")
def _glass_blur(x, c, keys):
    sigma, delta, iterations = c
    (d,) = _draw(keys, lambda g, i: (torch.randint(-delta, delta, (iterations, SIZE - 2, SIZE - 2, 2), generator=g),))
    d = d.to(x.device)
    y = torch.floor(_gaussian(_unit(x), sigma) * 255)  # np.uint8(gaussian(x/255) * 255)
    for it in range(iterations):
        y = _glass_shuffle(y, d[:, it])
    return _finish(_gaussian(y / 255., sigma))


def _motion_offsets(width: int, angle: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """ImageMagick's MotionBlurImage taps: offset i = (ceil(i cos a - .5), ceil(i sin a - .5))
    in (column, row), computed as it does (i * width * cos / hypot)."""
    a = angle.to(F64) * (math.pi / 180.0)
    px, py = width * torch.sin(a), width * torch.cos(a)
    h = torch.hypot(px, py)
    i = torch.arange(width, dtype=F64)
    ox = torch.ceil(i * py[:, None] / h[:, None] - 0.5).long()
    oy = torch.ceil(i * px[:, None] / h[:, None] - 0.5).long()
    return ox, oy


def _motion_blur_core(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """Wand's MagickMotionBlurImage, rewritten: 2*ceil(radius)+1 taps along a line at ``angle``
    with half-Gaussian weights exp(-i^2 / 2 sigma^2) (normalised), from the pixel forwards
    (i = 0 is the pixel itself: a one-sided comet tail, not a centred line, as in ImageMagick),
    edge pixels repeated beyond the border (ImageMagick's default virtual pixels). The sum s
    (in 0..255) is stored as ImageMagick Q16 stores it, rounded to the nearest 16-bit quantum
    q = floor(257 s + .5), and the 8-bit PNG the reference decodes holds q // 257, a truncation:
    a value a hair under an integer (a flat area) keeps that integer, one above 254.5 is not
    raised to 255. Checked against Wand 0.6 on ImageMagick 6.9.11 Q16: equal on every value.
    Differences from Wand: taps whose weight is below 1e-9 are dropped (at most 2.6e-7 of a
    level in all), and the sum is in float64 in another order, so a sum within 1e-12 of a
    quantum boundary may land one quantum away. x: [N, C, H, W] whole numbers in 0..255 (any
    dtype); angle: [N] degrees on the CPU. Returns float64 whole numbers."""
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width, dtype=np.float64)
    k = np.exp(-(i * i) / (2.0 * sigma * sigma))
    k /= k.sum()
    taps = [t for t in range(width) if k[t] >= 1e-9]
    ox, oy = _motion_offsets(width, angle)
    n, ch, hgt, wid = x.shape
    rows = (torch.arange(hgt).view(1, 1, -1, 1) + oy[:, taps, None, None]).clamp_(0, hgt - 1) * wid  # [N, T, H, 1]
    cols = (torch.arange(wid).view(1, 1, 1, -1) + ox[:, taps, None, None]).clamp_(0, wid - 1)  # [N, T, 1, W]
    rows, cols = rows.to(x.device), cols.to(x.device)
    src = x.to(F64).flatten(2)
    # one tap at a time into reused buffers: gathering every tap at once made tensors large
    # enough for malloc to hand their pages back to the system after each chunk (page faults)
    idx = torch.empty((n, hgt, wid), dtype=torch.int64, device=x.device)
    out = torch.zeros((n, ch, hgt * wid), dtype=F64, device=x.device)
    term = torch.empty_like(out)
    for j, t in enumerate(taps):
        torch.add(rows[:, j], cols[:, j], out=idx)
        out += torch.gather(src, 2, idx.view(n, 1, -1).expand(n, ch, -1), out=term).mul_(float(k[t]))
    quantum = torch.floor(out.mul_(257).add_(0.5))  # q / 257 below: never a hair under an integer
    return torch.floor(quantum.div_(257)).clamp_(0, 255).view(n, ch, hgt, wid)


@register_corruption("motion_blur", family="benchmark", params=((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
                     deterministic=False, description="one-sided Gaussian streak at a random angle in [-45, 45]")
def _motion_blur(x, c, keys):
    (u,) = _draw(keys, lambda g, i: (torch.rand((), generator=g, dtype=F64),))
    return _motion_blur_core(x, c[0], c[1], u * 90 - 45).to(torch.uint8)


@functools.lru_cache(maxsize=None)
def _zoom_taps(z: float, n: int = SIZE) -> Tuple[torch.Tensor, ...]:
    """clipped_zoom on one axis: the centre crop of ch = ceil(n/z), scipy.ndimage.zoom order 1
    (output o samples o * (ch-1)/(out-1), out = round(ch*z)), then the centre n outputs. Output o
    is w0[o] * x[i0[o]] + w1[o] * x[i1[o]] (global indices, float64 weights)."""
    ch = int(np.ceil(n / z))
    top = (n - ch) // 2
    out_n = int(round(ch * z))
    trim = (out_n - n) // 2
    cc = (np.arange(n) + trim) * ((ch - 1) / (out_n - 1)) if out_n != ch else np.arange(n, dtype=np.float64)
    i0 = np.minimum(np.floor(cc).astype(np.int64), ch - 1)
    f = cc - i0
    i1 = np.minimum(i0 + 1, ch - 1)
    return (torch.from_numpy(top + i0), torch.from_numpy(top + i1),
            torch.from_numpy(1 - f), torch.from_numpy(np.where(i1 > i0, f, 0.0)))


def _zoom(x: torch.Tensor, taps) -> torch.Tensor:
    """clipped_zoom of float64 x [..., n, n] on both axes (rows, then columns)."""
    i0, i1, w0, w1 = (t.to(x.device) for t in taps)
    r = x.index_select(-2, i0) * w0[:, None] + x.index_select(-2, i1) * w1[:, None]
    return r.index_select(-1, i0) * w0 + r.index_select(-1, i1) * w1


def _add_zooms(acc: torch.Tensor, y64: torch.Tensor, zooms) -> None:
    """acc (float32) += each clipped zoom of y64 (float64 [n, C, 32, 32]) in turn, rounded to
    float32 first (scipy's float32 output): _zoom's arithmetic, into reused buffers (allocating
    them per zoom cost more than the arithmetic), columns by gather (faster than index_select)."""
    rows, other, cols = torch.empty_like(y64), torch.empty_like(y64), torch.empty_like(y64)
    as32 = torch.empty_like(acc)
    for z in zooms:
        i0, i1, w0, w1 = (t.to(y64.device) for t in _zoom_taps(float(z)))
        torch.index_select(y64, -2, i0, out=rows).mul_(w0[:, None])
        rows.add_(torch.index_select(y64, -2, i1, out=other).mul_(w1[:, None]))
        torch.gather(rows, -1, i0.expand_as(rows), out=cols).mul_(w0)
        cols.add_(torch.gather(rows, -1, i1.expand_as(rows), out=other).mul_(w1))
        acc.add_(as32.copy_(cols))


@register_corruption("zoom_blur", family="benchmark",
                     params=tuple(np.arange(1, end, 0.01) for end in (1.06, 1.11, 1.16, 1.21, 1.26)),  # 7 ... 26 zooms
                     deterministic=True, description="average of centre zooms")
def _zoom_blur(x, c, keys, memo):
    """(x + sum of clipped_zooms) / (len + 1), as the reference: each zoom in float64 (scipy
    interpolates in double) rounded to float32, accumulated in float32 in the same order; the
    zoom = 1 term is the image itself. A severity's zooms begin with the milder one's (aranges
    from 1 by .01), so within one corrupt_severities call the running sum carries over."""
    y = _unit(x).to(F32)  # (x / 255.).astype(float32)
    done, acc = memo.get("zoom", (c[:0], None))
    if acc is None or len(done) > len(c) or not np.array_equal(c[:len(done)], done):
        done, acc = c[:1], y.clone()  # c[0] == 1: the image itself
    _add_zooms(acc, y.to(F64), c[len(done):])
    memo["zoom"] = (c, acc)
    return _finish((y + acc) / (len(c) + 1))


# ----------------------------------------------------------------------------------------------
# Weather.


@register_corruption("snow", family="benchmark",
                     params=((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                             (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                             (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
                     deterministic=False, description="motion-blurred snow flakes over a brightened, greyed image",
                     chunk=128)
def _snow(x, c, keys):
    loc, scale, zoom, thresh, radius, sigma, blend = c
    (z, u) = _draw(keys, lambda g, i: (torch.randn((SIZE, SIZE), generator=g), torch.rand((), generator=g, dtype=F64)))
    return _snow_apply(x, c, z.to(x.device, F64) * scale + loc, u * 90 - 135)


def _snow_apply(x, c, layer, angle):
    """layer: the N(loc, scale) draw [N, 32, 32]; angle: [N] degrees in [-135, -45]."""
    loc, scale, zoom, thresh, radius, sigma, blend = c
    if zoom != 1:
        layer = _zoom(layer, _zoom_taps(zoom))
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer)
    layer = _u8(layer.clamp(0, 1) * 255)  # the PIL 'L' image
    layer = _motion_blur_core(layer[:, None], radius, sigma, angle) / 255.
    y = _unit(x, F32)
    gray = y[:, 0] * 0.299 + y[:, 1] * 0.587 + y[:, 2] * 0.114  # cv2 RGB2GRAY on float32
    y = blend * y + (1 - blend) * torch.maximum(y, gray[:, None] * 1.5 + 0.5)
    return _finish(y.to(F64) + layer + layer.flip(-1, -2))


_FROST: List[Tuple[torch.Tensor, ...]] = []
_FROST_LOCK = threading.Lock()


def _frost_textures() -> Tuple[torch.Tensor, ...]:
    """frost1..frost5 from the imagecorruptions package data (byte-identical to the reference
    files), read as the reference does: cv2.imread (BGR), resize by 0.2, kept as RGB uint8; laid
    end to end per channel, flat [3, total], with each one's start, height and width, so every
    crop is one gather. Read once, by whichever chunk's thread comes first."""
    with _FROST_LOCK:
        if not _FROST:
            _FROST.append(_read_frost())
        return _FROST[0]


def _read_frost() -> Tuple[torch.Tensor, ...]:
    spec = importlib.util.find_spec("imagecorruptions")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the frost corruption needs the frost textures: pip install imagecorruptions")
    import cv2
    folder = Path(list(spec.submodule_search_locations)[0]) / "frost"
    textures = []
    for name in ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg"):
        img = cv2.imread(str(folder / name))
        if img is None:
            raise BenchError(f"cannot read {folder / name}: reinstall it with pip install imagecorruptions")
        textures.append(torch.from_numpy(np.ascontiguousarray(cv2.resize(img, (0, 0), fx=0.2, fy=0.2)[..., ::-1])))
    sizes = torch.tensor([t.shape[0] * t.shape[1] for t in textures])
    flat = torch.cat([t.permute(2, 0, 1).flatten(1) for t in textures], 1)
    return (flat, torch.cumsum(sizes, 0) - sizes, torch.tensor([t.shape[0] for t in textures]),
            torch.tensor([t.shape[1] for t in textures]))


@register_corruption("frost", family="benchmark", params=((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
                     deterministic=False, description="blend with a crop of a frost photograph")
def _frost(x, c, keys):
    (u,) = _draw(keys, lambda g, i: (torch.rand(3, generator=g, dtype=F64),))
    return _frost_apply(x, c, u)


def _frost_apply(x, c, u):
    """u [N, 3] uniforms on the CPU: the texture (randint(5)) and the crop's top and left."""
    which = (u[:, 0] * 5).long()  # np.random.randint(5): frost6 is never picked
    flat, start, height, width = _frost_textures()
    top = (u[:, 1] * (height[which] - SIZE)).long()  # randint(0, H - 32)
    left = (u[:, 2] * (width[which] - SIZE)).long()
    ar = torch.arange(SIZE)
    row_starts = (start[which] + left)[:, None] + (top[:, None] + ar) * width[which][:, None]  # [N, 32]
    idx = (row_starts[:, :, None] + ar).view(1, -1).expand(3, -1)
    crop = flat.gather(1, idx).view(3, -1, SIZE, SIZE).transpose(0, 1)
    y = c[0] * x.to(F64) + c[1] * crop.to(x.device, F64)
    return _u8(y.clamp(0, 255))


def _plasma(u: torch.Tensor, decay: float, mapsize: int = SIZE) -> torch.Tensor:
    """The reference's plasma_fractal (diamond-square, mapsize 32) on a batch; u [N, 1023] are the
    uniforms of its wibbledmean draws in draw order (squares, then the two diamond sets, per
    step), so the same uniforms give the reference's map."""
    n = u.shape[0]
    m = torch.zeros((n, mapsize, mapsize), dtype=F64, device=u.device)
    step, wibble, pos = mapsize, 100.0, 0

    def wibbledmean(a):
        nonlocal pos
        k = a.shape[1] * a.shape[2]
        r = u[:, pos:pos + k].view_as(a)
        pos += k
        return a / 4 + wibble * (-wibble + (2 * wibble) * r)

    while step >= 2:
        h = step // 2
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, h:mapsize:step, h:mapsize:step] = wibbledmean(sq)
        dr = m[:, h:mapsize:step, h:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = (dr + torch.roll(dr, 1, 1)) + (ul + torch.roll(ul, -1, 2))
        m[:, 0:mapsize:step, h:mapsize:step] = wibbledmean(lt)
        tt = (dr + torch.roll(dr, 1, 2)) + (ul + torch.roll(ul, -1, 1))
        m[:, h:mapsize:step, 0:mapsize:step] = wibbledmean(tt)
        step //= 2
        wibble /= decay
    m = m - m.amin((1, 2), keepdim=True)
    return m / m.amax((1, 2), keepdim=True)


_PLASMA_DRAWS = sum(3 * (SIZE // s) ** 2 for s in (32, 16, 8, 4, 2))  # 1023


@register_corruption("fog", family="benchmark", params=((.2, 3), (.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
                     deterministic=False, description="plasma fractal haze", chunk=128)
def _fog(x, c, keys):
    (u,) = _draw(keys, lambda g, i: (torch.rand(_PLASMA_DRAWS, generator=g, dtype=F64),))
    y = _unit(x)
    top = y.amax((1, 2, 3), keepdim=True)
    y = y + c[0] * _plasma(u.to(x.device), c[1])[:, None]
    return _finish(y * top / (top + c[0]))


def _rgb2hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv in its float64 operations (ties: blue over green over red, the
    branch it writes last), one division for the three branches."""
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)
    zero = delta == 0
    s = torch.where(zero, torch.zeros_like(v), delta / v)
    bmax, gmax = b == v, g == v
    h = torch.where(bmax, r - g, torch.where(gmax, b - r, g - b)) / delta
    h = torch.where(bmax, 4.0 + h, torch.where(gmax, 2.0 + h, h))
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(zero, torch.zeros_like(h), h)
    return torch.stack((h, s, v), 1)


# skimage's np.choose table: for each output channel and hue sector 0-5, which of (v, t, p, q)
_HSV_PICK = torch.tensor([[0, 3, 2, 2, 1, 0], [1, 0, 0, 3, 2, 2], [2, 2, 1, 0, 0, 3]])


def _hue_sector(h: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """hsv2rgb's use of the hue: the fraction f = 6h - floor(6h), and per output channel which of
    (v, t, p, q) the sector floor(6h) % 6 takes (an index for _choose)."""
    h6 = h * 6
    hi = torch.floor(h6)
    return h6 - hi, _HSV_PICK.to(h.device)[:, hi.to(torch.int64) % 6].transpose(0, 1)


def _choose(v, t, p, q, pick) -> torch.Tensor:
    """The end of skimage.color.hsv2rgb (p = v(1 - s), q = v(1 - fs), t = v(1 - (1 - f)s), in its
    float64 operations), its np.choose of (v, t, p, q) per channel: RGB [N, 3, H, W]."""
    return torch.stack((v, t, p, q), 1).gather(1, pick)


@register_corruption("brightness", family="benchmark", params=(.05, .1, .15, .2, .3), deterministic=True,
                     description="HSV value raised")
def _brightness(x, c, keys, memo):
    """hsv2rgb with v raised: p, q, t are v times factors of s and the hue alone, made once per
    chunk for all severities."""
    if "hsv" not in memo:
        h, s, v = _rgb2hsv(_unit(x)).unbind(1)
        f, pick = _hue_sector(h)
        memo["hsv"] = (v, 1 - (1 - f) * s, 1 - s, 1 - f * s, pick)
    v, to_t, to_p, to_q, pick = memo["hsv"]
    v = (v + c).clamp(0, 1)
    return _finish(_choose(v, v * to_t, v * to_p, v * to_q, pick))


# ----------------------------------------------------------------------------------------------
# Digital.


@register_corruption("contrast", family="benchmark", params=(.75, .5, .4, .3, 0.15), deterministic=True,
                     description="per-channel deviations from the mean scaled down")
def _contrast(x, c, keys):
    """The per-channel mean is summed pixel by pixel in order, as numpy's mean over axes (0, 1) of
    an HxWx3 array does (the reduction axes are not the contiguous one, so no pairwise sum)."""
    y = _unit(x)
    means = (y.flatten(2).cumsum(-1)[..., -1] / (SIZE * SIZE))[..., None, None]
    return _finish((y - means) * c + means)


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """cv2.getAffineTransform for a batch: M [N, 2, 3] with M @ [p, 1] = q for the 3 points."""
    a = torch.cat([src, torch.ones(3, 1, dtype=F64)], 1)  # [3, 3]
    return torch.linalg.solve(a, dst).transpose(1, 2)  # a @ M^T = dst


def _warp_affine(img: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """cv2.warpAffine(img, M, (32, 32), INTER_LINEAR, BORDER_REFLECT_101) for a batch of float32
    images: the inverse map is quantised to 1/32 pixel as cv2 does (fixed point, AB_BITS 10,
    INTER_BITS 5) and the bilinear weights are float32 products of (1 - f, f)."""
    n, ch, hgt, wid = img.shape
    M = M.to(F64)
    d = M[:, 0, 0] * M[:, 1, 1] - M[:, 0, 1] * M[:, 1, 0]
    d = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    a11, a22 = M[:, 1, 1] * d, M[:, 0, 0] * d
    a12, a21 = -M[:, 0, 1] * d, -M[:, 1, 0] * d
    b1 = -a11 * M[:, 0, 2] - a12 * M[:, 1, 2]
    b2 = -a21 * M[:, 0, 2] - a22 * M[:, 1, 2]
    xs = torch.arange(wid, dtype=F64, device=img.device).view(1, 1, -1)
    ys = torch.arange(hgt, dtype=F64, device=img.device).view(1, -1, 1)
    v = lambda t: t.to(img.device).view(-1, 1, 1)
    X = (torch.round(v(a11) * xs * 1024) + torch.round((v(a12) * ys + v(b1)) * 1024) + 16).long() >> 5
    Y = (torch.round(v(a21) * xs * 1024) + torch.round((v(a22) * ys + v(b2)) * 1024) + 16).long() >> 5
    x0, y0 = (X >> 5).to(F64), (Y >> 5).to(F64)
    fx, fy = (X & 31).to(F32) / 32, (Y & 31).to(F32) / 32
    return _bilinear(img, y0, x0, fy, fx, "reflect101")


def _bilinear(img, y0, x0, fy, fx, mode):
    """Bilinear sample of img [N, C, H, W] at corners (y0, x0) [N, H, W] (whole numbers, float64)
    and fractions, the four neighbours' indices mapped by the border rule."""
    n, ch, hgt, wid = img.shape

    def fold(i, size):
        """Exact on float64 whole numbers, with abs: reflect101 is s-1 - |s-1 - |i||, scipy's
        reflect s-.5 - |s - |i+.5||, both right within a period either side of 0; further out
        (never, for the small moves here) i is wrapped into one period first."""
        period = 2 * size - 2 if mode == "reflect101" else 2 * size
        lo, hi = torch.aminmax(i)
        if lo < -period or hi > period - 1:
            i = i - period * torch.floor(i / period)
        if mode == "reflect101":
            return (size - 1.0) - ((size - 1.0) - i.abs()).abs_()
        return (size - 0.5) - (size - (i + 0.5).abs_()).abs_()
    ya, yb, xa, xb = fold(y0, hgt) * wid, fold(y0 + 1, hgt) * wid, fold(x0, wid), fold(x0 + 1, wid)
    flat = img.flatten(2)

    def at(yy, xx):
        return flat.gather(2, (yy + xx).long().view(n, 1, -1).expand(n, ch, -1)).view(n, ch, hgt, wid)
    fy, fx = fy[:, None].to(img.dtype), fx[:, None].to(img.dtype)
    return (at(ya, xa) * ((1 - fy) * (1 - fx)) + at(ya, xb) * ((1 - fy) * fx)
            + at(yb, xa) * (fy * (1 - fx)) + at(yb, xb) * (fy * fx))


@register_corruption("elastic_transform", family="benchmark",
                     params=tuple((SIZE * a, SIZE * b, SIZE * c) for a, b, c in (
                         (0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
                     deterministic=False, description="random affine then smooth displacement field", chunk=128)
def _elastic_transform(x, c, keys):
    """The reference: a random affine (3 points moved by U(-c2, c2)) through cv2.warpAffine, then
    a displacement field (Gaussian-smoothed U(-1, 1), sigma c1, 'reflect', truncate 3, times
    c0) sampled by map_coordinates, order 1, 'reflect'."""
    alpha, sigma, affine = c
    (u,) = _draw(keys, lambda g, i: (torch.rand(6 + 2 * SIZE * SIZE, generator=g, dtype=F64),))
    return _elastic_apply(x, c, u)


def _elastic_apply(x, c, u):
    """u [N, 2054] uniforms in [0, 1): 6 for the affine points, then the dx and dy fields."""
    alpha, sigma, affine = c
    cs = float(SIZE // 2)  # np.float32(shape) // 2
    sq = SIZE // 3
    pts1 = torch.tensor([[cs + sq, cs + sq], [cs + sq, cs - sq], [cs - sq, cs - sq]], dtype=F32)
    pts2 = pts1 + (-affine + 2 * affine * u[:, :6]).view(-1, 3, 2).to(F32)
    M = _affine_from_points(pts1.to(F64), pts2.to(F64))
    img = _warp_affine(_unit(x, F32), M)
    if alpha == 0:
        return _finish(img)
    field = (-1 + 2 * u[:, 6:]).view(-1, 2, SIZE, SIZE).to(x.device)
    smooth = _gaussian_matrix(SIZE, sigma, "reflect", 3).to(x.device)
    field = ((smooth @ field @ smooth.T) * alpha).to(F32).to(F64)
    dx, dy = field[:, 0], field[:, 1]
    ar = torch.arange(SIZE, dtype=F64, device=x.device)
    ry, rx = ar.view(1, -1, 1) + dy, ar.view(1, 1, -1) + dx
    y0, x0 = torch.floor(ry), torch.floor(rx)
    out = _bilinear(img, y0, x0, ry - y0, rx - x0, "reflect")
    return _finish(out)


@register_corruption("pixelate", family="benchmark", params=(0.95, 0.9, 0.85, 0.75, 0.65), deterministic=True,
                     description="PIL box down- and up-sampling")
def _pixelate(x, c, keys):
    """PIL's BOX resize to int(32c) and back, on the chunk's images side by side in one strip: a
    BOX output pixel's support never crosses into the next image when the scale is 32 / k or
    k / 32, and its weights depend only on its place within its image, so the strip's pixels
    are each image's own (tested; equal on all 10,000 test images), with two PIL calls per
    chunk instead of two per image."""
    from PIL import Image
    n, k = x.shape[0], int(SIZE * c)
    strip = x.permute(2, 0, 3, 1).reshape(SIZE, n * SIZE, 3).contiguous().cpu().numpy()
    out = Image.fromarray(strip).resize((k * n, k), Image.BOX).resize((SIZE * n, SIZE), Image.BOX)
    return torch.from_numpy(np.array(out)).view(SIZE, n, SIZE, 3).permute(1, 3, 0, 2).contiguous().to(x.device)


@register_corruption("jpeg_compression", family="benchmark", params=(80, 65, 58, 50, 40), deterministic=True,
                     description="PIL JPEG round trip")
def _jpeg_compression(x, c, keys):
    """The reference's PIL JPEG save and load at quality c, through OpenCV: both are libjpeg-turbo
    with the same settings (that quality's tables, 4:2:0, baseline, integer DCT, fancy
    upsampling), so the bytes are PIL's (the tests compare them), at a quarter of PIL's cost."""
    import cv2
    bgr = x.flip(1).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = np.empty_like(bgr)

    def block(lo, hi):
        for i in range(lo, hi):
            out[i] = cv2.imdecode(cv2.imencode(".jpg", bgr[i], [cv2.IMWRITE_JPEG_QUALITY, int(c)])[1], cv2.IMREAD_COLOR)
        return []
    _blocks(block, len(bgr))
    return torch.from_numpy(out).permute(0, 3, 1, 2).flip(1).contiguous().to(x.device)


# ----------------------------------------------------------------------------------------------
# The four extra (held-out) corruptions.


@register_corruption("speckle_noise", family="extra", params=(.06, .1, .12, .16, .2), deterministic=False,
                     description="multiplicative x*N(0, c) noise")
def _speckle_noise(x, c, keys):
    (z,) = _draw(keys, lambda g, i: (torch.randn(x.shape[1:], generator=g),))
    y = _unit(x)
    return _finish(y + y * (z.to(x.device, F64) * c))


@register_corruption("gaussian_blur", family="extra", params=(.4, .6, 0.7, .8, 1), deterministic=True,
                     description="Gaussian blur")
def _gaussian_blur(x, c, keys):
    return _finish(_gaussian(_unit(x), c))


@register_corruption("spatter", family="extra",
                     params=((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                             (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)),
                     deterministic=False, description="water drops (severities 1-3) or mud (4-5)", chunk=128)
def _spatter(x, c, keys):
    loc, scale, sigma, thresh, intensity, mode = c
    (z,) = _draw(keys, lambda g, i: (torch.randn((SIZE, SIZE), generator=g),))
    return _spatter_apply(x, c, z.to(x.device, F64) * scale + loc)


def _spatter_apply(x, c, liquid):
    """liquid: the N(loc, scale) draw [N, 32, 32]."""
    loc, scale, sigma, thresh, intensity, mode = c
    liquid = _gaussian(liquid, sigma)
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    y = _unit(x, F32)
    if mode == 0:
        # (liquid * 255).astype(uint8): values above 255 would wrap as numpy's cast does on x86
        lu8 = (torch.floor(liquid * 255).long() % 256).to(torch.uint8)
        dist = torch.from_numpy(_water_dist(lu8.cpu().numpy())).to(x.device)
        m = lu8.to(F32) * dist
        top = m.amax((1, 2), keepdim=True)
        # an all-zero layer would be 0/0 = NaN in the reference (a black image); here no water
        m = torch.where(top > 0, m / top.clamp_min(1e-30), torch.zeros_like(m)) * np.float32(intensity)
        color = torch.tensor([175 / 255., 238 / 255., 238 / 255.], dtype=F32, device=x.device).view(1, 3, 1, 1)
        return _finish(y + m[:, None] * color)
    m = (liquid > thresh).to(F32)
    m = _gaussian(m, intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)[:, None]
    color = torch.tensor([63 / 255., 42 / 255., 20 / 255.], dtype=F32, device=x.device).view(1, 3, 1, 1) * m
    return _finish(y * (1 - m) + color)


def _water_dist(layers: np.ndarray) -> np.ndarray:
    """The reference's water-drop relief, per image with OpenCV (Canny and distanceTransform have
    no batched torch counterpart worth writing for 32x32)."""
    import cv2
    ker = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
    out = np.empty(layers.shape, dtype=np.float32)

    def block(lo, hi):
        for i in range(lo, hi):
            dist = 255 - cv2.Canny(layers[i], 50, 150)
            dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
            _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
            dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
            dist = cv2.equalizeHist(dist)
            dist = cv2.filter2D(dist, cv2.CV_8U, ker)
            out[i] = cv2.blur(dist, (3, 3)).astype(np.float32)
        return []
    _blocks(block, len(layers))
    return out


@register_corruption("saturate", family="extra", params=((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
                     deterministic=True, description="HSV saturation scaled (1-2 down, 3-5 up)")
def _saturate(x, c, keys, memo):
    """hsv2rgb with s scaled; the hue's part made once per chunk for all severities."""
    if "hsv" not in memo:
        h, s, v = _rgb2hsv(_unit(x)).unbind(1)
        f, pick = _hue_sector(h)
        memo["hsv"] = (s, v, f, 1 - f, pick)
    s, v, f, g, pick = memo["hsv"]
    s = (s * c[0] + c[1]).clamp(0, 1)
    return _finish(_choose(v, v * (1 - g * s), v * (1 - s), v * (1 - f * s), pick))


# ----------------------------------------------------------------------------------------------
# Entry points.


def corrupt_severities(images: torch.Tensor, name: str, severities: Sequence[int], seed: int = 0,
                       indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``corrupt`` at each of ``severities``: uint8 [len(severities), N, 3, 32, 32], each equal to
    its own ``corrupt`` call; work the severities share (zoom_blur's running sum, the HSV of
    brightness and saturate) is done once."""
    if name not in CORRUPTIONS:
        raise BenchError(f"unknown corruption {name!r}: choose one of {', '.join(CORRUPTIONS)}")
    for severity in severities:
        if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
            raise BenchError(f"severity must be one of 1, 2, 3, 4, 5, got {severity!r}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
            or tuple(images.shape[1:]) != (3, SIZE, SIZE):
        got = f"{tuple(images.shape)} {images.dtype}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise BenchError(f"corrupt needs uint8 images of shape [N, 3, 32, 32], got {got}")
    n = images.shape[0]
    if indices is None:
        idx = list(range(n))
    else:
        idx = torch.as_tensor(indices).flatten().tolist()
        if len(idx) != n:
            raise BenchError(f"indices has {len(idx)} entries for {n} images")
    info = CORRUPTIONS[name]
    takes_memo = "memo" in inspect.signature(info.impl).parameters
    keys = [_keys(seed, name, int(s), idx) for s in severities]
    out = torch.empty((len(severities),) + tuple(images.shape), dtype=torch.uint8, device=images.device)
    starts = range(0, n, info.chunk if images.device.type == "cpu" else 8192)
    step, threads = starts.step, torch.get_num_threads()
    # On a CPU the chunks are shared among torch's threads, each running its chunks' ops alone: a
    # chunk's ops are too small for OpenMP to split well, and on a busy machine every split op
    # waits for its slowest thread (20x slower than this, measured on a shared 2-core machine)
    parallel = images.device.type == "cpu" and threads > 1 and len(starts) > 1 and _openmp()

    def run(lo: int, hi: int) -> list:
        if parallel:
            torch.set_num_threads(1)  # under OpenMP, this thread's own setting
        with torch.no_grad():
            for a in starts[lo:hi]:
                memo: dict = {}
                for k, severity in enumerate(severities):
                    args = (images[a:a + step], info.params[int(severity) - 1], keys[k][a:a + step])
                    out[k, a:a + step] = info.impl(*args, memo) if takes_memo else info.impl(*args)
        return []
    try:
        _blocks(run, len(starts)) if parallel else run(0, len(starts))
    finally:
        if parallel:
            torch.set_num_threads(threads)  # also the default that threads started later take
    return out


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0,
            indices: Optional[torch.Tensor] = None) -> torch.Tensor:
    """CIFAR-10-C corruption ``name`` at ``severity`` (1-5) of uint8 images [N, 3, 32, 32] (RGB),
    on their device. ``indices`` are the images' indices in the dataset (default 0..N-1): with
    ``seed`` and the corruption they fix every random draw, so an image comes out the same in
    any batch."""
    return corrupt_severities(images, name, [severity], seed, indices)[0]
