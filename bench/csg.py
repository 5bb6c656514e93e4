"""The Cumulative Spectral Gradient (CSG): a dataset-difficulty measure that needs no training.

Branchaud-Charron, Achkar, Jodoin, "Spectral Metric for Dataset Complexity Assessment", CVPR 2019;
reference code: github.com/Dref360/spectral-metric (formerly ElementAI/spectral_metric),
``spectral_metric/estimator.py`` and ``lib.py``. Claim B uses ln(CSG) as a correction to the
analytical temperature T* (see ``bench/tools/fit_temperature.py``).

The computation, for K classes in an embedding space:

1. sample M points of each class (``m_per_class``, default 250 as in the reference estimator;
   fewer when a class has fewer);
2. for each sampled point x, its k nearest neighbours (Euclidean) among *all* embedded points
   (x itself excluded) give the class proportions (neighbours of class j) / k;
3. the class similarity S[i, j] = E_{x ~ C_i}[p(x | C_j)], a Monte-Carlo mean over the M points
   of class i; with ``parzen=True`` each point's proportions are first divided by the volume of
   the hyper-rectangle around x that encloses its neighbours (the paper's Parzen-window density
   p(x | C_j) ~ K_j / (M V)); each row of S is then normalised to sum to 1;
4. W = 1 - BrayCurtis(S_i, S_j) between rows (for rows that sum to 1 this is 1 minus their total
   variation distance), L = D - W, its eigenvalues 0 = l_0 <= ... <= l_{K-1};
5. CSG = sum_i cummax_i (l_{i+1} - l_i) / (K - i), i = 0 .. K-2.

Where the paper leaves room, this follows the reference code, and says so:

* the divisor in 5 is K - i with i counted from 0 (K, K-1, ..., 2), as ``_csg_from_evals`` does;
  read with eigenvalues counted from 1 the paper's formula would divide by K-1, ..., 1. With the
  reference's choice, K classes with identical distributions give W = all ones,
  L = K*I - 11^T, eigenvalues (0, K, ..., K) and CSG = K - 1; perfectly separated classes give
  W = I, L = 0, CSG = 0.
* the neighbours are searched among all points of the data given, not only the sampled ones
  (``compute_expectation_with_monte_carlo`` passes the whole data to ``pairwise_distances``);
* the Parzen volume is prod_d 2 * max_neighbours |x_nd - x_d|, floored at 1e-4; the rows are
  normalised after the weighted sum (``expectation[class_ix] /= expectation[class_ix].sum()``).
  The weights are computed in log space and rescaled per row, which the row normalisation makes
  exact (the reference overflows to inf beyond a few dozen dimensions and its rows become 0).
* the query point itself is excluded by index (the reference drops the first of the k+1 sorted
  neighbours, which is the point itself unless it has exact duplicates).

One departure, by default: ``parzen=False``. The authors compute CSG in a low-dimensional t-SNE
embedding (3-D in the reference's experiments), where the volumes are tame. In a d-dimensional
embedding a volume scales like r^d, so a handful of points in dense regions carry a whole row and
the value jumps with the sample: on the CIFAR-10 JPEG copy (train, pca32, k=3, M=250, seeds 0-3)
the Parzen estimate gave 0.97, 1.27, 2.60, 1.27, the plain k-NN mean 3.54, 3.57, 3.47, 3.53. The
plain mean estimates E_{x ~ C_i}[P(C_j | x)], the expected k-NN class posterior, which is the
overlap the CSG is meant to read; ``parzen=True`` reproduces the reference computation where that
is wanted (a 2-D or 3-D embedding).

The embedding matters: the authors' experiments (``experiments/embedding`` of the reference
repository; its README: "In the paper, we use t-SNE to reduce the dimensionality") embed images
with a 3-D t-SNE of the pixels (MulticoreTSNE, 10,000 iterations), a CNN autoencoder, or
pretrained VGG19 / Xception features. None is offered here: t-SNE of 50,000 images takes minutes
to hours on 2 CPU cores and would add a dependency, and a pretrained CNN is a download.
``dataset_csg`` offers ``raw`` (flattened pixels in [0, 1]) and ``pca<d>`` (their first d
principal components, seeded randomized PCA), and every result records which embedding it used.
CSG values from different embeddings are not comparable; a fit that uses CSG must use one
embedding for every dataset. CSG also depends on the size of the neighbour pool (a denser pool
has purer neighbourhoods: CIFAR-10's 10,000 test images gave 4.1 where its 50,000 training images
gave 3.5), so compare datasets on the same split and record n.

``python -m bench.csg --data-root DIR --json csg.json`` computes a dataset's CSG and merges it
into a JSON file that ``python -m bench.tools.fit_temperature --csg-json csg.json`` reads.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np
import torch

from bench.atomic import check_output_file, user_path, write_json_atomic
from bench.data import load_dataset, stratified_indices
from bench.errors import BenchError

DEFAULT_EMBEDDING = "pca32"
MIN_VOLUME = 1e-4  # the reference's floor on the Parzen volume


@dataclass
class CSGResult:
    value: float  # the CSG
    eigenvalues: np.ndarray  # [K] of the Laplacian, ascending
    similarity: np.ndarray  # S [K, K], rows sum to 1
    adjacency: np.ndarray  # W [K, K] = 1 - Bray-Curtis between rows of S
    embedding: str  # how the features were made (recorded with the value)
    m_per_class: int
    k: int
    seed: int
    parzen: bool
    n_points: int  # the neighbour pool
    dim: int  # of the embedding
    classes: Optional[List[str]] = None
    extra: dict = field(default_factory=dict)
    # points each class gave: m_per_class, or all a smaller class has (the value says how it was made)
    per_class: List[int] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.eigenvalues)

    @property
    def max_value(self) -> float:
        """The CSG of K identical class distributions (the complete graph): K - 1."""
        return float(self.num_classes - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("eigenvalues", "similarity", "adjacency"):
            d[key] = np.asarray(d[key]).tolist()
        return d


def csg_from_eigenvalues(eigenvalues) -> float:
    """Sum of the cumulative maximum of the normalised eigengaps (the reference's divisors K..2)."""
    ev = np.sort(np.asarray(eigenvalues, np.float64))
    k = len(ev)
    if k < 2:
        raise BenchError("CSG needs at least 2 classes")
    gaps = np.diff(ev) / (k - np.arange(k - 1))
    return float(np.maximum.accumulate(gaps).sum())


def laplacian_eigenvalues(adjacency: np.ndarray) -> np.ndarray:
    """Eigenvalues of L = D - W, ascending; self-loops cancel (they add to D and subtract in W)."""
    w = np.array(adjacency, np.float64)
    np.fill_diagonal(w, 0.0)
    lap = np.diag(w.sum(1)) - w
    return np.linalg.eigvalsh(lap)


def bray_curtis_adjacency(similarity: np.ndarray) -> np.ndarray:
    """W[i, j] = 1 - sum|S_i - S_j| / sum|S_i + S_j| (scipy's braycurtis), for every pair of rows."""
    s = np.asarray(similarity, np.float64)
    num = np.abs(s[:, None, :] - s[None, :, :]).sum(-1)
    den = np.abs(s[:, None, :] + s[None, :, :]).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        bc = np.where(den > 0, num / den, 0.0)
    return 1.0 - bc


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def sample_per_class(labels: np.ndarray, num_classes: int, m_per_class: int, seed: int) -> List[np.ndarray]:
    """Seeded: up to m indices of each class."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        out.append(np.sort(rng.permutation(idx)[:m_per_class]))
    return out


def _knn(pool: torch.Tensor, queries: np.ndarray, k: int, chunk: int = 1024) -> torch.Tensor:
    """Indices [Q, k] of each query's k nearest pool points (Euclidean), the query excluded."""
    out = []
    sq = (pool * pool).sum(1)
    for a in range(0, len(queries), chunk):
        q = torch.as_tensor(queries[a:a + chunk])
        # |x - y|^2 = |x|^2 - 2 x.y + |y|^2; the query's own |x|^2 does not change its ranking
        d = sq[None, :] - 2 * pool[q] @ pool.T
        d[torch.arange(len(q)), q] = math.inf
        out.append(d.topk(k, dim=1, largest=False).indices)
    return torch.cat(out)


def csg(features, labels, *, m_per_class: int = 250, k: int = 3, seed: int = 0, parzen: bool = False,
        embedding: str = "given", classes: Optional[List[str]] = None) -> CSGResult:
    """CSG of the points ``features`` [N, d] with integer ``labels`` [N] in 0..K-1.

    ``embedding`` only names what the features are (it is recorded in the result); embed with
    ``embed`` or ``dataset_csg``."""
    x = torch.as_tensor(_as_numpy(features), dtype=torch.float64)
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    y = _as_numpy(labels).astype(np.int64)
    if len(y) != len(x):
        raise BenchError(f"features have {len(x)} rows but labels {len(y)}")
    if not torch.isfinite(x).all():
        raise BenchError("features contain NaN or inf")
    if k < 1 or m_per_class < 1:
        raise BenchError(f"k and m_per_class must be positive, got k={k}, m_per_class={m_per_class}")
    num_classes = int(y.max()) + 1 if len(y) else 0
    counts = np.bincount(y, minlength=num_classes)
    if num_classes < 2 or counts.min() == 0:
        raise BenchError(f"CSG needs labels 0..K-1 with K >= 2 and every class present; got counts {counts.tolist()}")
    if len(y) <= k:
        raise BenchError(f"k={k} neighbours need more than {k} points, got {len(y)}")

    picked = sample_per_class(y, num_classes, m_per_class, seed)
    queries = np.concatenate(picked)
    nn = _knn(x, queries, k)  # [Q, k]
    nn_labels = torch.as_tensor(y)[nn]
    # p(C_j | x): the class proportions among the k neighbours
    props = torch.nn.functional.one_hot(nn_labels, num_classes).double().mean(1)  # [Q, K]
    if parzen:
        r = (x[nn] - x[torch.as_tensor(queries)][:, None, :]).abs().amax(1)  # [Q, d] half-sides
        log_vol = torch.log(2 * r).sum(1)  # -inf when a side is 0: the floor takes over
        log_vol = log_vol.clamp(min=math.log(MIN_VOLUME))
    else:
        log_vol = torch.zeros(len(queries), dtype=torch.float64)
    sim = np.zeros((num_classes, num_classes))
    start = 0
    for c, idx in enumerate(picked):
        lv = log_vol[start:start + len(idx)]
        w = torch.exp(-(lv - lv.min()))  # 1/volume up to a per-row factor the normalisation removes
        row = (w[:, None] * props[start:start + len(idx)]).sum(0)
        sim[c] = (row / row.sum()).numpy()
        start += len(idx)

    adjacency = bray_curtis_adjacency(sim)
    evals = laplacian_eigenvalues(adjacency)
    return CSGResult(csg_from_eigenvalues(evals), evals, sim, adjacency, embedding, m_per_class, k, seed, parzen,
                     len(y), x.shape[1], classes, per_class=[len(idx) for idx in picked])


# --- embeddings of image splits -----------------------------------------------------------------

_EMBED_RE = re.compile(r"^(raw|pca([0-9]+))$")


def check_embedding(embedding: str) -> re.Match:
    m = _EMBED_RE.match(embedding)
    if not m:
        raise BenchError(f"unknown embedding {embedding!r}; use raw or pca<d> (e.g. pca32)")
    return m


def embed(images: torch.Tensor, embedding: str = DEFAULT_EMBEDDING, seed: int = 0) -> torch.Tensor:
    """Features [N, d] of uint8 images [N, 3, H, W]: ``raw`` = flattened pixels in [0, 1];
    ``pca<d>`` = their projection on the first d principal components (centred), from
    torch.pca_lowrank under a fixed seed, so the same images give the same features."""
    m = check_embedding(embedding)
    x = images.reshape(len(images), -1).float().div_(255)
    if embedding == "raw":
        return x
    d = int(m.group(2))
    if not 1 <= d <= min(x.shape):
        raise BenchError(f"{embedding}: the dimension must be between 1 and {min(x.shape)}")
    with torch.random.fork_rng(devices=[]):  # pca_lowrank draws from the global generator
        torch.manual_seed(seed)
        _, _, v = torch.pca_lowrank(x, q=min(d + 10, min(x.shape)), center=True, niter=4)
    return (x - x.mean(0)) @ v[:, :d]


def dataset_csg(split, embedding: str = DEFAULT_EMBEDDING, *, n: Optional[int] = None, m_per_class: int = 250,
                k: int = 3, seed: int = 0, parzen: bool = False, classes: Optional[List[str]] = None,
                dataset: str = "") -> CSGResult:
    """CSG of a ``bench.data.Split`` (optionally a seeded class-stratified subset of n images as
    the neighbour pool), in the named embedding. The result's ``extra`` records the dataset name
    and n, so a stored value says where it came from."""
    if n:
        split = split.subset(stratified_indices(split.labels, n, seed))
    feats = embed(split.images.cpu(), embedding, seed)
    res = csg(feats, split.labels.cpu(), m_per_class=m_per_class, k=k, seed=seed, parzen=parzen,
              embedding=embedding, classes=classes)
    res.extra.update(dataset=dataset, n=len(split))
    return res


# --- the command line ---------------------------------------------------------------------------

def _json_table(path) -> dict:
    """--json's table as it is now. Read before the data is too (decoding and the neighbour search
    take minutes on CIFAR-10's 50,000 images): a path that cannot take the table is named first."""
    import json
    check_output_file("--json", path, "csg.json")
    if not path.exists():
        return {}
    try:
        table = json.loads(path.read_text())
    except ValueError:
        raise BenchError(f"--json {path} is not a JSON file: give a new path, or a file that python -m bench.csg "
                         f"--json wrote") from None
    if not isinstance(table, dict):
        raise BenchError(f"--json {path} holds a JSON {type(table).__name__}, not the {{dataset: result}} table "
                         f"that python -m bench.csg --json writes: give another path")
    return table


def main(argv=None) -> int:
    from bench.command import Parser, finish

    ap = Parser(prog="python -m bench.csg",
                description="Cumulative Spectral Gradient of a dataset (Branchaud-Charron et al.)")
    ap.add_argument("--data-root", type=user_path,
                    help="as for bench.run (default $BENCH_DATA, else the download folder)")
    ap.add_argument("--dataset", choices=["cifar10", "cifar100"], help="which torchvision folder of the root")
    ap.add_argument("--cache", type=user_path, help="decoded data cache (default $BENCH_CACHE or .cache)")
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--embedding", default=DEFAULT_EMBEDDING, help="raw or pca<d> (default %(default)s)")
    ap.add_argument("--n", type=int, help="a seeded class-stratified subset of n images as the neighbour pool")
    ap.add_argument("--m-per-class", type=int, default=250)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parzen", action="store_true", help="weight by the Parzen volume, as the reference code")
    ap.add_argument("--json", type=user_path,
                    help="merge {dataset: result} into this JSON file (bench.tools.fit_temperature --csg-json)")
    args = ap.parse_args(argv)
    return finish(lambda: _main(args), "nothing was written (the --json merge is atomic); rerun the same command")


def _main(args) -> int:
    import sys
    import time
    from pathlib import Path

    try:
        check_embedding(args.embedding)
        for flag, value, least in (("--n", args.n, 2), ("--m-per-class", args.m_per_class, 1), ("--k", args.k, 1)):
            if value is not None and value < least:
                raise BenchError(f"{flag} must be >= {least}, got {value}")
        if args.json:
            _json_table(Path(args.json))
        data = load_dataset(args.data_root, Path(args.cache) if args.cache else None, dataset=args.dataset)
        t0 = time.perf_counter()
        res = dataset_csg(data.split(args.split), args.embedding, n=args.n, m_per_class=args.m_per_class, k=args.k,
                          seed=args.seed, parzen=args.parzen, classes=data.classes, dataset=data.name)
        wall = time.perf_counter() - t0
        lo, hi = min(res.per_class), max(res.per_class)
        used = "" if lo == args.m_per_class else f" asked, {lo if lo == hi else f'{lo}-{hi}'} per class used"
        print(f"{data.name} ({args.split}, n={res.n_points}, K={res.num_classes}): CSG {res.value:.4f} "
              f"(max {res.max_value:g}) in {args.embedding}, k={args.k}, M={args.m_per_class}{used}, seed {args.seed}"
              f"{', parzen' if args.parzen else ''}; {wall:.1f}s")
        if args.json:
            from filelock import FileLock
            path = Path(args.json)
            entry = {key: v for key, v in res.to_dict().items() if key not in ("similarity", "adjacency", "classes")}
            entry.update(split=args.split, fingerprint=data.fingerprint, wall_s=round(wall, 2))
            # two runs (two datasets) merging into one file: each reads, adds and writes under the
            # lock, or the later write drops the other's entry
            with FileLock(str(path) + ".lock"):
                table = _json_table(path)  # as it is now: another run may have added its dataset meanwhile
                table[data.name] = entry
                write_json_atomic(path, table)
    except (BenchError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
