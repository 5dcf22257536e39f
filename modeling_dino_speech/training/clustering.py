"""Clustering without labels: the pseudo-labelling step of iterative DINO training.

The authors' later recipe (hyperion ``egs/voxceleb/ssl.v1``) turns teacher embeddings into speaker
pseudo-labels with: PCA keeping ~99% of the variance, k-means pre-clustering with about 4 samples per
cluster, agglomerative clustering of the k-means centroids with cosine similarity and a threshold (0.80),
then keeping clusters of 8-50 members and dropping low-confidence members. :func:`cluster_embeddings`
runs that pipeline with library code: scikit-learn, and faiss where it is importable and helps. With
``backend="auto"`` k-means runs in scikit-learn and the nearest-neighbour search in faiss: faiss's k-means was
the slower of the two on the development machine (its wheel's bundled BLAS), while faiss's inverted-file
search is what makes the neighbour step scale (``benchmarks/RESULTS.md``, section 6). ``backend="faiss"`` or
``"sklearn"`` forces one library for both steps::

    embeddings (N, D) float
      -> L2-normalise                                  (N, D) float32
      -> PCA, keep ``pca_variance`` of the variance    (N, d), then L2-normalise again (cosine space)
      -> k-means pre-clustering, P ~ N / 4 clusters    pre-cluster id per point, centroids (P, d)
      -> agglomerative clustering of the P centroids   cosine, average linkage, threshold or target count
      -> map back to points, confidence + size filter  labels (N,) int64, -1 = dropped

Scaling to VoxCeleb2 (N = 1.09M utterances, D = 256, P = N / 4 = 273k pre-clusters)
-----------------------------------------------------------------------------------
Read literally the recipe is quadratic twice over, so two steps have a scalable path that switches on by
size. Both paths are tested to give the same answer where it is known.

* **k-means with K = N/4 is O(N^2 d)** per Lloyd iteration (1.09M x 273k x ~250 = 7e13 multiply-adds).
  Above ``kmeans_flat_max_clusters`` (256) pre-clusters we run a *two-level* k-means: a coarse k-means into
  G = ceil(sqrt(P)) groups (523 at VoxCeleb2, random seeding, fitted on <= 256 points per centroid), then
  an independent k-means++-seeded k-means inside each group with n_g / 4 clusters: N d (G + P/G) =
  2 N d sqrt(P) per iteration, O(N^1.5). A speaker cut by a coarse border would leave a few utterances in
  a neighbour's pre-cluster, so each point is then moved to its nearest pre-cluster centroid among its
  ``kmeans_border_probes`` (5) nearest coarse groups, an inverted-file style multi-probe pass of
  N x 5 x P/G x d multiply-adds.
* **Average-linkage clustering of P points needs O(P^2) memory** (scipy's condensed distance matrix: 273k
  centroids -> 3.7e10 float64 = 298 GB). Above ``agglomerative_dense_max`` (10k) centroids we use an
  *exact decomposition*: with average linkage two clusters merge at distance threshold t only if their
  mean distance is below t, which needs at least one pair closer than t, so every final cluster lies in
  one connected component of the graph "cosine similarity > s". We build that graph from the
  ``knn_neighbors`` (32) nearest neighbours of each centroid, take its connected components (scipy) and run
  the ordinary dense sklearn average linkage inside each one. This is exact unless a centroid has more
  than 32 neighbours above the threshold (an edge may then be missed). A component still larger than
  ``agglomerative_dense_max`` (chaining) goes to sklearn's connectivity-constrained average linkage on all
  its k-NN edges, which averages over connected pairs only (approximate; counted in
  ``stages["n_sparse_components"]``). The neighbour search is exact (faiss ``IndexFlatIP`` or sklearn brute
  force, O(P^2 d)) up to ``knn_exact_max`` (50k) centroids; above that the faiss backend uses an
  inverted-file index (4 sqrt(P) lists, ``knn_nprobe`` = 16 probed, O(P^1.5 d)). The sklearn backend stays
  exact and quadratic: use faiss at scale. In target-count mode (``n_clusters``) the scalable path bisects
  the similarity threshold until the count is met (average linkage has no inversions, so the count is
  monotone in the threshold): ~20 passes of the component step, so prefer threshold mode at VoxCeleb2 scale.
  A kept share (``kept_fraction``) searches the threshold the same way, 10-50 passes of the agglomerative and
  filter steps over one neighbour graph, built once.

Memory beyond the caller's N x D array, per stage (float32, d ~ 250 after PCA): normalise and PCA an N x D
and an N x d copy, k-means the N x d means and the fit subsets, the k-NN graph P x k x 12 B (the exact
sklearn search works in chunks), the components' dense linkages sum c_i^2 x 8 B over small components, the
filter an N x d gather. ``benchmarks/bench_clustering.py`` measures every stage and extrapolates to
VoxCeleb2; its figures are in ``benchmarks/RESULTS.md`` (section 6).

Threads: ``num_threads`` caps BLAS/OpenMP/faiss threads for the call; on a machine shared with other jobs
oversubscribed OpenMP threads slow the same k-means down many times over.

Outputs: :class:`ClusteringResult` (labels, confidence, counts and seconds per stage) and
:func:`clustering_report` (cluster count, kept fraction, sizes, and purity / inverse purity / NMI / ARI
against true labels when a corpus has them).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, ContextManager, Iterator, Literal, Mapping, Optional, Sequence, TypeVar

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import AgglomerativeClustering, KMeans, kmeans_plusplus
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

Backend = Literal["auto", "faiss", "sklearn"]
T = TypeVar("T")

# faiss subsamples at most this many training points per centroid; we apply the same rule to sklearn so
# both backends see the same amount of data (and the coarse level stays cheap at 1M points).
_MAX_POINTS_PER_CENTROID = 256
# Slack on the similarity threshold when building the candidate graph: a superset of edges keeps the
# component decomposition exact despite float32 (faiss) vs float64 (scipy) rounding.
_GRAPH_SLACK = 1e-5


@dataclass
class ClusteringConfig:
    """Settings of the pseudo-label clustering (defaults follow the authors' ``ssl.v1`` recipe).

    Attributes:
        pca_variance: fraction of the variance the PCA keeps, in (0, 1]; 1.0 keeps every component.
        pca_whiten: scale PCA components to unit variance before the cosine geometry.
        kmeans_samples_per_cluster: points per k-means pre-cluster (P = round(N / this)).
        kmeans_iters: Lloyd iterations for each k-means call.
        kmeans_flat_max_clusters: above this many pre-clusters, use the two-level k-means (module doc).
        kmeans_border_probes: two-level only: after the per-group k-means, move each point to its nearest
            pre-cluster among this many nearest coarse groups (repairs speakers cut by a group border;
            0 disables).
        similarity_threshold: agglomerative clustering stops merging when the average cosine similarity
            between two clusters is at or below this (distance_threshold = 1 - similarity_threshold).
        n_clusters: target number of agglomerative clusters instead of the threshold (None = threshold).
        kept_fraction: target share of the pool that keeps a label, instead of ``similarity_threshold``:
            the threshold is searched for, and set to the strictest (highest) whose clusters keep at least
            this share after filtering (None = use ``similarity_threshold``). The same threshold means
            different clusters for embeddings of different spread (a longer-trained or a whitened model has
            other same-voice cosines); a kept share carries over between them. Each pass of the search
            reruns the agglomerative and filter stages (10-50 passes; ``stages["threshold_search_passes"]``);
            the labels are those of the pass at the threshold found, not a pass more.
        agglomerative_dense_max: largest number of centroids clustered by one dense average linkage;
            above it the k-NN graph decomposition is used (module doc).
        knn_neighbors: neighbours per centroid in that graph.
        knn_exact_max: above this many centroids the faiss backend finds neighbours with an inverted-file
            index (approximate, ``knn_nprobe`` lists probed) instead of exact search.
        knn_nprobe: inverted lists probed per query in that index.
        min_cluster_size: clusters with fewer members are dropped (after confidence filtering too).
        max_cluster_size: clusters with more members are handled by ``large_cluster_policy``; None = no cap.
        large_cluster_policy: "trim" keeps the ``max_cluster_size`` most confident members (default: a big
            cluster is most often a prolific speaker, VoxCeleb2 averages ~180 utterances per speaker, and
            trimming keeps that speaker with its most typical utterances while bounding class imbalance for
            AAM-softmax); "drop" discards the whole cluster (safer if big clusters are merged speakers).
        confidence_quantile: drop members whose cosine similarity to their cluster centroid is below this
            quantile of all candidate members (0 disables).
        min_confidence: drop members whose cosine similarity to their cluster centroid is below this
            absolute value (None disables).
        backend: library for k-means and nearest neighbours: "faiss", "sklearn", or "auto" = sklearn
            k-means and faiss neighbours when faiss is importable (the faster pairing; module doc).
        num_threads: cap on BLAS/OpenMP/faiss threads during the call (None = the libraries' default).
            On a machine shared with other jobs, 1 usually beats oversubscribing the cores.
        seed: seed of every random choice (k-means init, subsampling).
    """

    pca_variance: float = 0.99
    pca_whiten: bool = False
    kmeans_samples_per_cluster: float = 4.0
    kmeans_iters: int = 20
    kmeans_flat_max_clusters: int = 256
    kmeans_border_probes: int = 5
    similarity_threshold: float = 0.80
    n_clusters: int | None = None
    kept_fraction: float | None = None
    agglomerative_dense_max: int = 10_000
    knn_neighbors: int = 32
    knn_exact_max: int = 50_000
    knn_nprobe: int = 16
    min_cluster_size: int = 8
    max_cluster_size: int | None = 50
    large_cluster_policy: Literal["trim", "drop"] = "trim"
    confidence_quantile: float = 0.05
    min_confidence: float | None = None
    backend: Backend = "auto"
    num_threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ValueError:
            return ValueError(f"ClusteringConfig.{name}={getattr(self, name)!r}: {why}")

        if not 0.0 < self.pca_variance <= 1.0:
            raise bad("pca_variance", "must be in (0, 1]")
        if not self.kmeans_samples_per_cluster >= 1.0:
            raise bad("kmeans_samples_per_cluster", "must be >= 1")
        for name in (
            "kmeans_iters",
            "kmeans_flat_max_clusters",
            "knn_neighbors",
            "knn_exact_max",
            "knn_nprobe",
            "min_cluster_size",
        ):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        if self.kmeans_border_probes < 0:
            raise bad("kmeans_border_probes", "must be >= 0")
        if self.agglomerative_dense_max < 2:
            raise bad("agglomerative_dense_max", "must be >= 2")
        if not -1.0 < self.similarity_threshold < 1.0:
            raise bad("similarity_threshold", "must be in (-1, 1)")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise bad("n_clusters", "must be >= 1 or None")
        if self.kept_fraction is not None:
            if not 0.0 < self.kept_fraction <= 1.0:
                raise bad("kept_fraction", "must be in (0, 1] or None")
            if self.n_clusters is not None:
                raise bad("kept_fraction", "sets the threshold, so it cannot be combined with n_clusters")
        if self.max_cluster_size is not None and self.max_cluster_size < self.min_cluster_size:
            raise bad("max_cluster_size", f"must be >= min_cluster_size={self.min_cluster_size}")
        if self.large_cluster_policy not in ("trim", "drop"):
            raise bad("large_cluster_policy", 'must be "trim" or "drop"')
        if not 0.0 <= self.confidence_quantile < 1.0:
            raise bad("confidence_quantile", "must be in [0, 1)")
        if self.min_confidence is not None and not -1.0 <= self.min_confidence <= 1.0:
            raise bad("min_confidence", "must be in [-1, 1] or None")
        if self.num_threads is not None and self.num_threads < 1:
            raise bad("num_threads", "must be >= 1 or None")
        if self.backend not in ("auto", "faiss", "sklearn"):
            raise bad("backend", 'must be "auto", "faiss" or "sklearn"')


@dataclass
class ClusteringResult:
    """Output of :func:`cluster_embeddings`.

    Attributes:
        labels: (N,) int64 pseudo-label per point, 0..n_clusters-1 (largest cluster first), -1 = dropped.
        confidence: (N,) float32 cosine similarity of each point to the centroid of its agglomerative
            cluster (before filtering), in the PCA space.
        n_clusters: number of clusters kept.
        kept_fraction: fraction of points with a label.
        stages: counts per stage (pca_dim, n_preclusters, n_clusters_agglomerative, dropped counts, ...).
        timings: wall-clock seconds per stage.
        backend: the libraries that ran, "<k-means>+<neighbours>" (e.g. "sklearn+faiss").
        config: the configuration, as a dict.
    """

    labels: np.ndarray
    confidence: np.ndarray
    n_clusters: int
    kept_fraction: float
    stages: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = "sklearn"
    config: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- backend


def _faiss_or_none() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def resolve_backend(backend: Backend) -> tuple[str, str]:
    """(k-means library, neighbour-search library) for ``backend``; "faiss" without faiss is an error."""
    if backend == "sklearn":
        return "sklearn", "sklearn"
    has_faiss = _faiss_or_none() is not None
    if backend == "faiss":
        if not has_faiss:
            raise ValueError('ClusteringConfig.backend="faiss" but faiss is not importable (pip install faiss-cpu)')
        return "faiss", "faiss"
    return "sklearn", "faiss" if has_faiss else "sklearn"


# ---------------------------------------------------------------------------------------------- stages


def _l2_normalise(x: np.ndarray, what: str) -> np.ndarray:
    """Row-normalise (N, D) float32 in place-safe fashion; a zero row cannot be given a direction."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = np.flatnonzero(norms == 0.0)
    if zero.size:
        raise ValueError(f"{what}: {zero.size} row(s) have zero norm (first at index {int(zero[0])})")
    x /= norms.astype(np.float32)[:, None]
    return x


def _validated_copy(embeddings: np.ndarray, min_points: int) -> np.ndarray:
    """Check shape and values; return an L2-normalised float32 copy (N, D)."""
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"cluster_embeddings: embeddings must be a 2-D array (N, D), got shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"cluster_embeddings: embeddings must be numeric, got dtype {x.dtype}")
    n, d = x.shape
    if d < 2:
        raise ValueError(f"cluster_embeddings: embeddings need at least 2 dimensions, got D={d}")
    if n < min_points:
        raise ValueError(
            f"cluster_embeddings: too few points ({n}); need at least {min_points} "
            "(2, and at least min_cluster_size so that a cluster can be kept)"
        )
    x = np.array(x, dtype=np.float32, copy=True)
    # A row sum is non-finite iff the row holds NaN/Inf (or overflows): check those rows only, so the
    # test costs O(N) extra memory instead of an (N, D) boolean mask.
    suspicious = np.flatnonzero(~np.isfinite(x.sum(axis=1, dtype=np.float64)))
    if suspicious.size:
        bad = suspicious[~np.isfinite(x[suspicious]).all(axis=1)]
        if bad.size:
            raise ValueError(f"cluster_embeddings: {bad.size} row(s) contain NaN or Inf (first at index {int(bad[0])})")
    return _l2_normalise(x, "cluster_embeddings")


def reduce_dimension(
    x: np.ndarray, variance: float, whiten: bool = False, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """PCA keeping ``variance`` of the variance, then L2-normalise (cosine geometry).

    Args:
        x: (N, D) float32 unit-norm embeddings.
    Returns:
        (N, d) float32 unit-norm projections, and {"pca_dim", "pca_explained_variance"}.
    """
    n, d = x.shape
    n_components: float | int | None = variance if variance < 1.0 else None
    if n_components is None or n < 2:
        n_components = min(n, d)
    # "auto" picks the covariance eigendecomposition when N >> D: O(N D^2) time and O(D^2) extra memory,
    # no (N, D) copy of U as the SVD solvers would make.
    pca = PCA(n_components=n_components, whiten=whiten, svd_solver="auto", random_state=seed)
    y = pca.fit_transform(x).astype(np.float32, copy=False)
    y = _l2_normalise(np.ascontiguousarray(y), "reduce_dimension (a point equals the data mean)")
    return y, {
        "pca_dim": int(pca.n_components_),
        "pca_explained_variance": float(np.sum(pca.explained_variance_ratio_)),
    }


def _kmeans_assign(x: np.ndarray, k: int, backend: str, iters: int, seed: int, plusplus: bool = True) -> np.ndarray:
    """One library k-means call: fit on at most 256 points per centroid, assign all (N,) int64.

    ``plusplus`` seeds both backends with the same k-means++ centres (D^2 sampling, one trial per centre):
    faiss's own random seeding often leaves a small speaker without a centre, so its points join another
    speaker's pre-cluster. sklearn's default greedy k-means++ tries 2 + log k candidates per centre, each a
    pass over the points, and would dominate the whole two-level k-means. Without ``plusplus`` both seed with
    random points: enough for the coarse partition of the two-level scheme.
    """
    n, d = x.shape
    k = min(k, n)
    if k <= 1:
        return np.zeros(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    fit_x = x
    if n > _MAX_POINTS_PER_CENTROID * k:
        fit_x = x[np.sort(rng.choice(n, _MAX_POINTS_PER_CENTROID * k, replace=False))]
    init = None
    if plusplus:
        # float64: sklearn's float32 distance path upcasts chunk by chunk, which is the slower route.
        init, _ = kmeans_plusplus(fit_x.astype(np.float64), k, random_state=seed % (2**32), n_local_trials=1)
    if backend == "faiss":
        faiss = _faiss_or_none()
        # min_points_per_centroid=1: 4 points per cluster is the recipe, not a mistake worth a warning;
        # max_points_per_centroid is applied above so both backends subsample the same way.
        km = faiss.Kmeans(
            d,
            k,
            niter=iters,
            seed=int(seed) % (2**31),
            verbose=False,
            min_points_per_centroid=1,
            max_points_per_centroid=n + 1,
        )
        fit32 = np.ascontiguousarray(fit_x, dtype=np.float32)
        km.train(fit32, init_centroids=None if init is None else np.ascontiguousarray(init, dtype=np.float32))
        _, assign = km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
        return assign[:, 0].astype(np.int64)
    km = KMeans(
        n_clusters=k,
        init="random" if init is None else init.astype(fit_x.dtype),
        n_init=1,
        max_iter=iters,
        random_state=seed % (2**32),
        algorithm="lloyd",
    )
    km.fit(fit_x)
    return km.predict(x).astype(np.int64) if fit_x is not x else km.labels_.astype(np.int64)


def _reassign_across_borders(
    x: np.ndarray, coarse: np.ndarray, assign: np.ndarray, probes: int
) -> tuple[np.ndarray, int]:
    """Move each point to its nearest fine centroid among its ``probes`` nearest coarse groups.

    The fine k-means of the two-level scheme never looks across a coarse boundary, so a few utterances of a
    speaker cut by one end up in a neighbouring speaker's pre-cluster (pre-cluster purity below flat k-means';
    ``benchmarks/RESULTS.md``, section 6). One nearest-centroid pass over the fine centroids
    of the nearest coarse groups (multi-probe, as an inverted-file index searches) repairs that at a cost
    of N x probes x (P / G) x d multiply-adds.

    Args:
        x: (N, d) points; coarse: (N,) coarse group ids; assign: (N,) fine pre-cluster ids (each fine
            cluster inside one coarse group).
    Returns:
        (N,) int64 new fine ids and the number of points that moved.
    """
    n = x.shape[0]
    n_groups = int(coarse.max()) + 1
    n_fine = int(assign.max()) + 1
    fine = _group_means(x, assign, n_fine, normalise=False)
    coarse_c = _group_means(x, coarse, n_groups, normalise=False)
    fine_group = np.zeros(n_fine, dtype=np.int64)
    fine_group[assign] = coarse  # every member of a fine cluster shares its coarse group
    probes = min(probes, n_groups)
    # Nearest coarse groups of every point by squared Euclidean distance (k-means' own metric), chunked.
    near = np.empty((n, probes + 1), dtype=np.int64)
    c_sq = np.einsum("ij,ij->i", coarse_c, coarse_c)
    for lo in range(0, n, 65536):
        score = 2.0 * (x[lo : lo + 65536] @ coarse_c.T) - c_sq
        near[lo : lo + 65536, :probes] = np.argpartition(-score, probes - 1, axis=1)[:, :probes]
    near[:, probes] = coarse  # the own group is always a candidate
    # Inverted lists: the points that probe each group.
    probed = near.ravel()
    owner = np.repeat(np.arange(n), probes + 1)
    order = np.argsort(probed, kind="stable")
    bounds = np.searchsorted(probed[order], np.arange(n_groups + 1))
    f_order = np.argsort(fine_group, kind="stable")
    f_bounds = np.searchsorted(fine_group[f_order], np.arange(n_groups + 1))
    f_sq = np.einsum("ij,ij->i", fine, fine)
    best = assign.copy()
    best_score = np.full(n, -np.inf)
    for g in range(n_groups):
        pts = np.unique(owner[order[bounds[g] : bounds[g + 1]]])
        cand = f_order[f_bounds[g] : f_bounds[g + 1]]
        if pts.size == 0 or cand.size == 0:
            continue
        score = 2.0 * (x[pts] @ fine[cand].T) - f_sq[cand]
        j = score.argmax(axis=1)
        top = score[np.arange(pts.size), j]
        better = top > best_score[pts]
        best[pts[better]] = cand[j[better]]
        best_score[pts[better]] = top[better]
    return best, int((best != assign).sum())


def precluster_kmeans(
    x: np.ndarray,
    n_preclusters: int,
    backend: str,
    iters: int = 20,
    flat_max_clusters: int = 256,
    seed: int = 0,
    border_probes: int = 5,
) -> tuple[np.ndarray, dict[str, Any]]:
    """k-means pre-clustering into about ``n_preclusters`` clusters (two-level above ``flat_max_clusters``).

    Args:
        x: (N, d) float32 points.
        border_probes: in the two-level scheme, coarse groups searched when points are reassigned across
            group borders (0: no reassignment).
    Returns:
        (N,) int64 pre-cluster ids 0..P-1 (every id non-empty), and {"n_preclusters", "kmeans_levels",
        "n_coarse_groups", "n_reassigned"}.
    """
    n = x.shape[0]
    n_preclusters = max(1, min(int(n_preclusters), n))
    moved = 0
    if n_preclusters <= flat_max_clusters:
        assign = _kmeans_assign(x, n_preclusters, backend, iters, seed)
        levels, n_groups = 1, 1
    else:
        n_groups = math.ceil(math.sqrt(n_preclusters))
        coarse = _kmeans_assign(x, n_groups, backend, iters, seed, plusplus=False)
        _, coarse = np.unique(coarse, return_inverse=True)
        points_per_cluster = n / n_preclusters
        assign = np.empty(n, dtype=np.int64)
        order = np.argsort(coarse, kind="stable")
        bounds = np.searchsorted(coarse[order], np.arange(int(coarse.max()) + 2))
        offset = 0
        for g in range(bounds.size - 1):
            members = order[bounds[g] : bounds[g + 1]]
            k_g = max(1, round(members.size / points_per_cluster))
            local = _kmeans_assign(x[members], k_g, backend, iters, seed + 1 + g)
            assign[members] = local + offset
            offset += int(local.max()) + 1
        levels = 2
        if border_probes > 0:
            _, assign = np.unique(assign, return_inverse=True)
            assign, moved = _reassign_across_borders(x, coarse, assign, border_probes)
    # k-means (and the reassignment) may leave a centroid without points; renumber so every id is used.
    _, assign = np.unique(assign, return_inverse=True)
    return assign.astype(np.int64), {
        "n_preclusters": int(assign.max()) + 1,
        "kmeans_levels": levels,
        "n_coarse_groups": n_groups,
        "n_reassigned": moved,
    }


def _group_means(x: np.ndarray, labels: np.ndarray, n_groups: int, normalise: bool = True) -> np.ndarray:
    """(n_groups, d) float32 mean of each label (sparse indicator product, O(N d)); unit-norm by default."""
    n = x.shape[0]
    indicator = sp.csr_matrix((np.ones(n, dtype=np.float32), (labels, np.arange(n))), shape=(n_groups, n))
    means = np.asarray(indicator @ x, dtype=np.float32)
    if not normalise:
        counts = np.bincount(labels, minlength=n_groups).astype(np.float32)
        return means / np.maximum(counts, 1.0)[:, None]
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    # A zero mean (perfectly opposed members) has no direction: its members get confidence 0.
    return means / np.where(norms > 0, norms, 1.0)


def _dense_average_linkage(c: np.ndarray, threshold: float | None, n_clusters: int | None) -> np.ndarray:
    """Exact sklearn average linkage with cosine distance on (n, d) centroids -> (n,) labels."""
    if c.shape[0] == 1:
        return np.zeros(1, dtype=np.int64)
    if threshold is not None:
        model = AgglomerativeClustering(
            n_clusters=None, metric="cosine", linkage="average", distance_threshold=1.0 - threshold
        )
    else:
        model = AgglomerativeClustering(n_clusters=n_clusters, metric="cosine", linkage="average")
    return model.fit_predict(c.astype(np.float64)).astype(np.int64)


def _knn_graph(
    c: np.ndarray, k: int, backend: str, exact_max: int = 50_000, nprobe: int = 16, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours by cosine of (P, d) unit-norm centroids -> (P, k+1) indices and similarities.

    Exact (faiss ``IndexFlatIP`` or sklearn brute force, O(P^2 d)) up to ``exact_max`` centroids; above it,
    with faiss, an inverted-file index (4 sqrt(P) lists, ``nprobe`` probed) cuts the work by ~nlist/nprobe:
    the above-threshold neighbours we need are close, so they sit in the same or adjacent lists.
    Missing neighbours are -1.
    """
    p, d = c.shape
    k1 = min(k + 1, p)  # +1: each point finds itself
    if backend == "faiss":
        faiss = _faiss_or_none()
        cf = np.ascontiguousarray(c, dtype=np.float32)
        if p > exact_max:
            nlist = int(4 * math.sqrt(p))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.min_points_per_centroid = 1
            index.cp.max_points_per_centroid = 64  # the coarse quantizer need not see every centroid
            index.cp.seed = int(seed) % (2**31)
            index.train(cf)
            index.nprobe = min(nprobe, nlist)
        else:
            index = faiss.IndexFlatIP(d)
        index.add(cf)
        sims, idx = index.search(cf, k1)
        return idx.astype(np.int64), sims.astype(np.float32)
    nn = NearestNeighbors(n_neighbors=k1, metric="cosine", algorithm="brute").fit(c)
    dist, idx = nn.kneighbors(c)
    return idx.astype(np.int64), (1.0 - dist).astype(np.float32)


def _threshold_graph(idx: np.ndarray, sims: np.ndarray, threshold: float | None) -> sp.csr_matrix:
    """Symmetric (P, P) sparse graph of the k-NN edges whose similarity exceeds ``threshold`` (None: all)."""
    p = idx.shape[0]
    rows = np.repeat(np.arange(p), idx.shape[1])
    cols, vals = idx.ravel(), sims.ravel()
    keep = (cols >= 0) & (cols != rows)
    if threshold is not None:
        keep &= vals > threshold - _GRAPH_SLACK
    g = sp.coo_matrix((np.ones(int(keep.sum()), dtype=np.int8), (rows[keep], cols[keep])), shape=(p, p))
    g = g.tocsr()
    return ((g + g.T) > 0).astype(np.int8).tocsr()


def _agglomerate_by_components(
    c: np.ndarray, idx: np.ndarray, sims: np.ndarray, threshold: float, dense_max: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Threshold-mode average linkage of (P, d) centroids, one connected component at a time."""
    graph = _threshold_graph(idx, sims, threshold)
    n_comp, comp = connected_components(graph, directed=False)
    labels = np.empty(c.shape[0], dtype=np.int64)
    order = np.argsort(comp, kind="stable")
    bounds = np.searchsorted(comp[order], np.arange(n_comp + 1))
    offset, n_sparse, largest = 0, 0, 0
    knn_graph: sp.csr_matrix | None = None
    for j in range(n_comp):
        members = order[bounds[j] : bounds[j + 1]]
        largest = max(largest, members.size)
        if members.size <= dense_max:
            local = _dense_average_linkage(c[members], threshold, None)
        else:
            # Chained giant component: connectivity-constrained average linkage on all its k-NN edges
            # (not only the above-threshold ones: more pairs in each average, exact when k covers all).
            n_sparse += 1
            if knn_graph is None:
                knn_graph = _threshold_graph(idx, sims, None)
            sub = knn_graph[members][:, members]
            model = AgglomerativeClustering(
                n_clusters=None,
                metric="cosine",
                linkage="average",
                distance_threshold=1.0 - threshold,
                connectivity=sub,
            )
            local = model.fit_predict(c[members].astype(np.float64)).astype(np.int64)
        labels[members] = local + offset
        offset += int(local.max()) + 1
    return labels, {"n_components": int(n_comp), "largest_component": int(largest), "n_sparse_components": n_sparse}


def agglomerate(
    centroids: np.ndarray,
    threshold: float,
    n_clusters: int | None = None,
    dense_max: int = 10_000,
    knn_neighbors: int = 32,
    backend: str = "sklearn",
    knn_exact_max: int = 50_000,
    knn_nprobe: int = 16,
    seed: int = 0,
    knn_cache: dict[str, Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Average-linkage agglomerative clustering of pre-cluster centroids with cosine similarity.

    Args:
        centroids: (P, d) unit-norm pre-cluster centroids.
        threshold: merge while the average cosine similarity exceeds it (ignored when n_clusters is set).
        n_clusters: target number of clusters instead of the threshold.
        dense_max, knn_neighbors, knn_exact_max, knn_nprobe: see :class:`ClusteringConfig`.
        knn_cache: a dict kept between calls on the same centroids: the scalable path stores the centroids'
            neighbour graph in it and reuses it (it does not depend on the threshold; a threshold search
            builds it once).
    Returns:
        (P,) int64 cluster id per centroid, and stage counts.
    """
    p = centroids.shape[0]
    if n_clusters is not None and n_clusters > p:
        raise ValueError(
            f"agglomerate: target n_clusters={n_clusters} exceeds the {p} k-means pre-clusters; "
            "lower kmeans_samples_per_cluster or the target"
        )
    if p <= dense_max:
        labels = _dense_average_linkage(centroids, None if n_clusters else threshold, n_clusters)
        return labels, {"agglomerative_path": "dense", "n_clusters_agglomerative": int(labels.max()) + 1}

    start = time.perf_counter()
    cached = knn_cache.get("graph") if knn_cache is not None else None
    idx, sims = cached or _knn_graph(centroids, knn_neighbors, backend, knn_exact_max, knn_nprobe, seed)
    if knn_cache is not None:
        knn_cache["graph"] = (idx, sims)
    knn_seconds = time.perf_counter() - start
    approximate = backend == "faiss" and p > knn_exact_max
    stats: dict[str, Any] = {
        "agglomerative_path": "knn_components",
        "knn_neighbors": knn_neighbors,
        "knn_search": "faiss_ivf" if approximate else f"{backend}_exact",
        "knn_seconds": knn_seconds,
    }
    if n_clusters is None:
        labels, extra = _agglomerate_by_components(centroids, idx, sims, threshold, dense_max)
    else:
        # The cluster count rises monotonically with the threshold: bisect it.
        lo, hi = float(sims[idx >= 0].min()) - 1e-3, 1.0
        best: tuple[int, np.ndarray, dict[str, int]] | None = None
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            labels, extra = _agglomerate_by_components(centroids, idx, sims, mid, dense_max)
            count = int(labels.max()) + 1
            if best is None or abs(count - n_clusters) < abs(best[0] - n_clusters):
                best = (count, labels, extra)
            if count == n_clusters or hi - lo < 1e-6:
                break
            if count > n_clusters:
                hi = mid
            else:
                lo = mid
        assert best is not None
        count, labels, extra = best
        stats["bisected_threshold"] = mid
        if count != n_clusters:
            warnings.warn(
                f"agglomerate: reached {count} clusters, not the target {n_clusters} (the k-NN graph has "
                f"too few edges or ties); raise knn_neighbors",
                stacklevel=2,
            )
    stats.update(extra)
    stats["n_clusters_agglomerative"] = int(labels.max()) + 1
    return labels, stats


def filter_clusters(
    x: np.ndarray,
    labels: np.ndarray,
    min_cluster_size: int = 8,
    max_cluster_size: int | None = 50,
    large_cluster_policy: str = "trim",
    confidence_quantile: float = 0.0,
    min_confidence: float | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Keep clusters of a sensible size and drop low-confidence members.

    Order: (1) clusters smaller than ``min_cluster_size`` are dropped; (2) among the rest, members whose
    cosine similarity to their cluster centroid is below ``min_confidence`` or below the
    ``confidence_quantile`` of those members' similarities are dropped; (3) clusters that fell below
    ``min_cluster_size`` are dropped; (4) clusters above ``max_cluster_size`` are trimmed to their most
    confident members or dropped, per ``large_cluster_policy``.

    Args:
        x: (N, d) unit-norm points; labels: (N,) int cluster ids >= 0.
    Returns:
        (N,) int64 labels 0..K-1 (largest cluster first, ties by first member) or -1; (N,) float32
        confidence (cosine to the cluster centroid); counts of points dropped at each step.
    """
    n = x.shape[0]
    _, labels = np.unique(labels, return_inverse=True)
    k = int(labels.max()) + 1
    centroids = _group_means(x, labels, k)
    confidence = np.einsum("ij,ij->i", x, centroids[labels]).astype(np.float32)

    sizes = np.bincount(labels, minlength=k)
    keep = sizes[labels] >= min_cluster_size
    stats = {"dropped_small": int(n - keep.sum())}

    low = np.zeros(n, dtype=bool)
    if min_confidence is not None:
        low |= confidence < min_confidence
    if confidence_quantile > 0 and keep.any():
        low |= confidence < np.quantile(confidence[keep], confidence_quantile)
    low &= keep
    keep &= ~low
    stats["dropped_low_confidence"] = int(low.sum())

    sizes = np.bincount(labels[keep], minlength=k)
    shrunk = keep & (sizes[labels] < min_cluster_size)
    keep &= ~shrunk
    stats["dropped_small_after_confidence"] = int(shrunk.sum())

    stats["dropped_large"] = 0
    stats["trimmed_large"] = 0
    if max_cluster_size is not None:
        sizes = np.bincount(labels[keep], minlength=k)
        if large_cluster_policy == "drop":
            big = keep & (sizes[labels] > max_cluster_size)
            keep &= ~big
            stats["dropped_large"] = int(big.sum())
        else:
            kept_idx = np.flatnonzero(keep)
            # Rank members inside each cluster by confidence (descending, ties by index) and keep the top.
            order = kept_idx[np.lexsort((kept_idx, -confidence[kept_idx], labels[kept_idx]))]
            grp = labels[order]
            starts = np.searchsorted(grp, grp, side="left")
            rank = np.arange(order.size) - starts
            over = order[rank >= max_cluster_size]
            keep[over] = False
            stats["trimmed_large"] = int(over.size)

    out = np.full(n, -1, dtype=np.int64)
    if keep.any():
        kept_labels = labels[keep]
        sizes = np.bincount(kept_labels, minlength=k)
        first = np.full(k, n, dtype=np.int64)
        np.minimum.at(first, kept_labels, np.flatnonzero(keep))
        present = np.flatnonzero(sizes)
        ranked = present[np.lexsort((first[present], -sizes[present]))]
        new_id = np.full(k, -1, dtype=np.int64)
        new_id[ranked] = np.arange(ranked.size)
        out[keep] = new_id[kept_labels]
    return out, confidence, stats


# ---------------------------------------------------------------------------------------------- pipeline


@contextmanager
def _thread_limit(num_threads: int | None, uses_faiss: bool) -> Iterator[None]:
    """Cap sklearn/scipy/numpy (threadpoolctl) and faiss OpenMP threads for the duration of a call."""
    if num_threads is None:
        yield
        return
    faiss = _faiss_or_none() if uses_faiss else None
    old = faiss.omp_get_max_threads() if faiss is not None else None
    with threadpool_limits(limits=num_threads):
        if faiss is not None:
            faiss.omp_set_num_threads(num_threads)
        try:
            yield
        finally:
            if faiss is not None:
                faiss.omp_set_num_threads(old)


#: Called with a stage's name, returns a context manager that is entered around the stage (what
#: ``benchmarks/bench_clustering.py`` measures each stage's memory with).
StageHook = Callable[[str], ContextManager[Any]]


@contextmanager
def _stage(name: str, timings: dict[str, float], hook: Optional[StageHook]) -> Iterator[None]:
    with hook(name) if hook is not None else contextlib.nullcontext():
        start = time.perf_counter()
        yield
        # summed: a threshold search (kept_fraction) enters the same stage once per pass
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def threshold_for_kept_fraction(
    kept_at: Callable[[float], tuple[float, T]], target: float, step: float = 0.05, tolerance: float = 1e-3
) -> tuple[float, int, T]:
    """The strictest similarity threshold `t` whose kept share `kept_at(t)[0]` is at least `target`, how many
    times it called `kept_at`, and what that call returned beside the share (the pass at `t`, so that the
    caller need not run it again).

    The kept share falls as the threshold rises once clusters start falling under `min_cluster_size` (below
    that, giant clusters trimmed to `max_cluster_size` make it fall again as the threshold drops), so the
    search walks down from the strictest threshold in `step`s until the target is met, then bisects the last
    step to `tolerance`. A target no threshold meets gets the threshold that keeps the most, with a warning.
    """
    passes, high, best, best_out = 0, 0.999, (-1.0, 0.999), None
    threshold = high
    while threshold > -1.0:
        kept, out = kept_at(threshold)
        passes += 1
        if (kept, threshold) > best:
            best, best_out = (kept, threshold), out
        if kept >= target:
            break
        high, threshold = threshold, threshold - step
    else:
        warnings.warn(
            f"kept_fraction={target}: no similarity threshold keeps that much of the pool (at most "
            f"{best[0]:.3f}, at threshold {best[1]:.3f}); lower kept_fraction or min_cluster_size",
            stacklevel=3,
        )
        return best[1], passes, best_out
    low, low_out = threshold, out
    while high - low > tolerance:
        mid = 0.5 * (low + high)
        passes += 1
        kept, out = kept_at(mid)
        if kept >= target:
            low, low_out = mid, out
        else:
            high = mid
    return low, passes, low_out


def cluster_embeddings(
    embeddings: np.ndarray, cfg: ClusteringConfig | None = None, stage_hook: Optional[StageHook] = None
) -> ClusteringResult:
    """Pseudo-labels for (N, D) utterance embeddings without any speaker labels.

    Args:
        embeddings: (N, D) float array, one embedding per utterance (any scale: rows are L2-normalised).
        cfg: the clustering settings (defaults: the authors' recipe).
        stage_hook: entered around each stage (normalise, pca, kmeans, agglomerative, filter), e.g. to
            measure it; see `StageHook`.
    Returns:
        :class:`ClusteringResult` with labels (N,) int64 (-1 = dropped).
    Raises:
        ValueError: wrong ndim, non-numeric, NaN/Inf, zero rows, or fewer points than min_cluster_size.
    """
    cfg = cfg or ClusteringConfig()
    backends = resolve_backend(cfg.backend)
    with _thread_limit(cfg.num_threads, "faiss" in backends):
        return _cluster(embeddings, cfg, backends, stage_hook)


def _cluster(
    embeddings: np.ndarray, cfg: ClusteringConfig, backends: tuple[str, str], hook: Optional[StageHook]
) -> ClusteringResult:
    timings: dict[str, float] = {}
    stages: dict[str, Any] = {}
    total_start = time.perf_counter()

    with _stage("normalise", timings, hook):
        x = _validated_copy(embeddings, max(2, cfg.min_cluster_size))
        n = x.shape[0]
        stages["n_points"], stages["input_dim"] = n, x.shape[1]

    with _stage("pca", timings, hook):
        y, info = reduce_dimension(x, cfg.pca_variance, cfg.pca_whiten, cfg.seed)
        del x
        stages.update(info)

    with _stage("kmeans", timings, hook):
        target_p = max(1, round(n / cfg.kmeans_samples_per_cluster))
        pre, info = precluster_kmeans(
            y,
            target_p,
            backends[0],
            cfg.kmeans_iters,
            cfg.kmeans_flat_max_clusters,
            cfg.seed,
            cfg.kmeans_border_probes,
        )
        stages.update(info)
        centroids = _group_means(y, pre, info["n_preclusters"])

    knn_cache: dict[str, Any] = {}

    def cluster_at(threshold: float) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        with _stage("agglomerative", timings, hook):
            cluster_of_pre, info = agglomerate(
                centroids,
                threshold,
                cfg.n_clusters,
                cfg.agglomerative_dense_max,
                cfg.knn_neighbors,
                backends[1],
                cfg.knn_exact_max,
                cfg.knn_nprobe,
                cfg.seed,
                knn_cache,
            )
        with _stage("filter", timings, hook):
            labels, confidence, counts = filter_clusters(
                y,
                cluster_of_pre[pre],
                cfg.min_cluster_size,
                cfg.max_cluster_size,
                cfg.large_cluster_policy,
                cfg.confidence_quantile,
                cfg.min_confidence,
            )
        return labels, confidence, {**info, **counts}

    threshold = cfg.similarity_threshold
    if cfg.kept_fraction is not None:

        def kept_share(t: float) -> tuple[float, tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
            out = cluster_at(t)
            return float((out[0] >= 0).mean()), out

        # the search hands back its own pass at the threshold it found: no pass more
        threshold, passes, (labels, confidence, info) = threshold_for_kept_fraction(kept_share, cfg.kept_fraction)
        stages["threshold_search_passes"] = passes
    else:
        labels, confidence, info = cluster_at(threshold)
    if cfg.n_clusters is None:  # a target count ignores the threshold
        stages["similarity_threshold"] = threshold
    stages.update(info)

    timings["total"] = time.perf_counter() - total_start
    n_kept = int((labels >= 0).sum())
    return ClusteringResult(
        labels=labels,
        confidence=confidence,
        n_clusters=int(labels.max()) + 1 if n_kept else 0,
        kept_fraction=n_kept / n,
        stages=stages,
        timings=timings,
        backend="+".join(backends) if backends[0] != backends[1] else backends[0],
        config=asdict(cfg),
    )


# ---------------------------------------------------------------------------------------------- report


def clustering_report(
    result: ClusteringResult,
    true_labels: Sequence[Any] | np.ndarray | None = None,
    subsets: Optional[Mapping[str, np.ndarray]] = None,
) -> dict:
    """JSON-ready summary of a clustering, with agreement to true labels when they exist.

    Args:
        result: the output of :func:`cluster_embeddings`.
        true_labels: (N,) true speaker labels (any hashable type), or None.
        subsets: named (N,) boolean masks (e.g. the real recordings of a pool that also holds synthetic voices):
            the agreement is reported on each subset too, under ``subsets``.
    Returns:
        dict with n_points, n_clusters, n_kept, kept_fraction, cluster_size_{min,max,mean,median}, the
        stage counts and timings; with true labels also n_true_classes, n_true_classes_kept, and over the
        kept points: purity (each cluster's majority class), inverse_purity (each class's majority
        cluster), nmi and ari. Metrics are None when nothing is kept.
    """
    labels = np.asarray(result.labels)
    kept = labels >= 0
    sizes = np.bincount(labels[kept]) if kept.any() else np.zeros(0, dtype=np.int64)
    sizes = sizes[sizes > 0]
    report: dict[str, Any] = {
        "n_points": int(labels.size),
        "n_clusters": int(result.n_clusters),
        "n_kept": int(kept.sum()),
        "kept_fraction": float(result.kept_fraction),
        "cluster_size_min": int(sizes.min()) if sizes.size else None,
        "cluster_size_max": int(sizes.max()) if sizes.size else None,
        "cluster_size_mean": float(sizes.mean()) if sizes.size else None,
        "cluster_size_median": float(np.median(sizes)) if sizes.size else None,
        "backend": result.backend,
        "stages": {k: (v if isinstance(v, (str, int, float)) else str(v)) for k, v in result.stages.items()},
        "timings_s": {k: round(float(v), 4) for k, v in result.timings.items()},
    }
    if true_labels is None:
        return report
    truth = np.asarray(true_labels)
    if truth.ndim != 1 or truth.shape[0] != labels.shape[0]:
        raise ValueError(f"clustering_report: true_labels must have shape ({labels.shape[0]},), got {truth.shape}")
    report.update(_agreement(labels, truth))
    if subsets:
        report["subsets"] = {}
        for name, mask in subsets.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != labels.shape:
                raise ValueError(f"clustering_report: subset {name!r} must have shape {labels.shape}, got {mask.shape}")
            part = {"n_points": int(mask.sum()), "n_kept": int((kept & mask).sum())}
            part["kept_fraction"] = part["n_kept"] / part["n_points"] if part["n_points"] else None
            report["subsets"][name] = {**part, **_agreement(labels[mask], truth[mask])}
    return report


def _agreement(labels: np.ndarray, truth: np.ndarray) -> dict:
    """Class counts and purity / inverse purity / NMI / ARI of the kept points (labels >= 0) against `truth`."""
    kept = labels >= 0
    _, truth_ids = np.unique(truth, return_inverse=True)
    out: dict[str, Any] = {
        "n_true_classes": int(truth_ids.max()) + 1 if truth_ids.size else 0,
        "n_true_classes_kept": int(np.unique(truth_ids[kept]).size),
    }
    if not kept.any():
        return {**out, "purity": None, "inverse_purity": None, "nmi": None, "ari": None}
    t, c = truth_ids[kept], labels[kept]
    table = contingency_matrix(t, c, sparse=True)  # (classes, clusters)
    n_kept = float(kept.sum())
    out["purity"] = float(table.max(axis=0).toarray().sum() / n_kept)
    out["inverse_purity"] = float(table.max(axis=1).toarray().sum() / n_kept)
    out["nmi"] = float(normalized_mutual_info_score(t, c))
    out["ari"] = float(adjusted_rand_score(t, c))
    return out
