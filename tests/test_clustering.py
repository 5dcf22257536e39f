"""Tests of the pseudo-label clustering on data whose right answer is known."""

from __future__ import annotations

import contextlib
import json
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from modeling_dino_speech.training import clustering
from modeling_dino_speech.training.clustering import (
    ClusteringConfig,
    ClusteringResult,
    agglomerate,
    cluster_embeddings,
    clustering_report,
    filter_clusters,
    precluster_kmeans,
    resolve_backend,
    threshold_for_kept_fraction,
)

try:
    import faiss

    HAS_FAISS = True
except ImportError:  # the sklearn path is still tested
    HAS_FAISS = False

BACKENDS = [
    pytest.param("faiss", marks=pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")),
    "sklearn",
]


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    # The CI machine has 2 shared cores: OpenMP spinning on both makes small calls slower, not faster.
    if HAS_FAISS:
        old = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        yield
        faiss.omp_set_num_threads(old)
    else:
        yield


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def sphere_blobs(sizes: list[int], dim: int = 64, spread: float = 0.3, seed: int = 0):
    """Speakers as random directions; each utterance is the direction plus isotropic noise of norm ~spread.

    Returns (N, dim) float32 unit vectors and (N,) int speaker ids. With spread 0.3 an utterance has cosine
    ~0.96 to its speaker and ~0 to other speakers: the right clustering is the speaker partition.
    """
    rng = np.random.default_rng(seed)
    means = unit(rng.standard_normal((len(sizes), dim)))
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = means[truth] + spread * rng.standard_normal((truth.size, dim)) / np.sqrt(dim)
    return unit(x).astype(np.float32), truth


# ------------------------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("backend", BACKENDS)
def test_recovers_well_separated_speakers(backend):
    x, truth = sphere_blobs([20] * 40)
    result = cluster_embeddings(x, ClusteringConfig(backend=backend))
    report = clustering_report(result, truth)
    assert result.backend == backend
    assert result.stages["agglomerative_path"] == "dense" and result.stages["kmeans_levels"] == 1
    assert result.stages["n_preclusters"] == pytest.approx(200, abs=10)  # ~4 points per pre-cluster
    assert result.stages["n_clusters_agglomerative"] == 40
    assert result.n_clusters == 40
    assert report["purity"] > 0.95 and report["inverse_purity"] > 0.95
    assert report["ari"] > 0.95 and report["nmi"] > 0.95
    # Default confidence_quantile=0.05 drops ~5% of the members, nothing else is dropped.
    assert 0.93 <= result.kept_fraction <= 0.96
    assert result.labels.shape == (800,) and result.labels.dtype == np.int64
    assert set(np.unique(result.labels)) <= set(range(-1, 40))


@pytest.mark.parametrize("backend", BACKENDS)
def test_scalable_path_recovers_speakers(backend):
    # Force the two-level k-means and the k-NN component decomposition on a small problem.
    x, truth = sphere_blobs([20] * 40, seed=1)
    cfg = ClusteringConfig(backend=backend, kmeans_flat_max_clusters=50, agglomerative_dense_max=30)
    result = cluster_embeddings(x, cfg)
    assert result.stages["kmeans_levels"] == 2 and result.stages["n_coarse_groups"] == 15
    assert result.stages["agglomerative_path"] == "knn_components"
    assert result.stages["n_components"] >= 40
    report = clustering_report(result, truth)
    assert result.n_clusters == 40
    assert report["purity"] > 0.95 and report["ari"] > 0.95


def precluster_purity(truth: np.ndarray, pre: np.ndarray) -> float:
    """Share of points whose pre-cluster's majority speaker is their own."""
    from sklearn.metrics.cluster import contingency_matrix

    return float(contingency_matrix(truth, pre, sparse=True).max(axis=0).toarray().sum() / truth.size)


def test_border_reassignment_repairs_two_level_kmeans():
    # Crowded speakers: the coarse partition cuts some, and their stray points land in a neighbour's
    # pre-cluster. Reassigning across the 5 nearest coarse groups must win back most of that purity.
    x, truth = sphere_blobs([20] * 300, dim=32, spread=0.8, seed=0)
    plain, info_plain = precluster_kmeans(x, 1500, "sklearn", flat_max_clusters=100, border_probes=0)
    fixed, info = precluster_kmeans(x, 1500, "sklearn", flat_max_clusters=100, border_probes=5)
    assert info_plain["kmeans_levels"] == info["kmeans_levels"] == 2
    assert info_plain["n_reassigned"] == 0 and info["n_reassigned"] > 100
    assert precluster_purity(truth, fixed) > precluster_purity(truth, plain) + 0.03


def nested_centroids(seed: int = 0) -> np.ndarray:
    """Centroids with structure at several scales, so average linkage makes non-trivial merges."""
    rng = np.random.default_rng(seed)
    top = unit(rng.standard_normal((12, 32)))
    mid = unit(np.repeat(top, 4, axis=0) + 0.8 * rng.standard_normal((48, 32)) / np.sqrt(32))
    return unit(np.repeat(mid, 6, axis=0) + 0.5 * rng.standard_normal((288, 32)) / np.sqrt(32))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85])
def test_component_decomposition_equals_dense_linkage(backend, threshold):
    # The decomposition is exact when the k-NN graph holds every above-threshold pair (k = all points).
    c = nested_centroids()
    dense, dense_info = agglomerate(c, threshold, dense_max=10_000)
    split, split_info = agglomerate(c, threshold, dense_max=287, knn_neighbors=287, backend=backend)
    assert dense_info["agglomerative_path"] == "dense"
    assert split_info["agglomerative_path"] == "knn_components"
    assert split_info["n_sparse_components"] == 0
    assert 1 < dense_info["n_clusters_agglomerative"] < 288  # the threshold really merges and splits
    assert adjusted_rand_score(dense, split) == 1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_giant_component_uses_connectivity_linkage(backend):
    # Every speaker's ~5 centroids form one component larger than dense_max=3: the sparse linkage runs.
    x, truth = sphere_blobs([20] * 20, seed=2)
    pre, _ = precluster_kmeans(x, 100, backend, seed=0)
    centroids = unit(np.stack([x[pre == p].mean(axis=0) for p in range(pre.max() + 1)]))
    pre_truth = np.array([np.bincount(truth[pre == p]).argmax() for p in range(pre.max() + 1)])
    labels, info = agglomerate(centroids, 0.8, dense_max=3, knn_neighbors=16, backend=backend)
    assert info["n_sparse_components"] >= 1 and info["largest_component"] > 3
    assert adjusted_rand_score(pre_truth, labels) == 1.0


# ------------------------------------------------------------------------------------------ target count


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_count_mode(backend):
    x, truth = sphere_blobs([20] * 40, seed=3)
    result = cluster_embeddings(x, ClusteringConfig(backend=backend, n_clusters=40, confidence_quantile=0))
    assert result.stages["n_clusters_agglomerative"] == 40 and "similarity_threshold" not in result.stages
    assert clustering_report(result, truth)["ari"] > 0.95
    # Fewer clusters than speakers: the count is met exactly, speakers get merged.
    merged = cluster_embeddings(x, ClusteringConfig(backend=backend, n_clusters=25, max_cluster_size=None))
    assert merged.stages["n_clusters_agglomerative"] == 25


@pytest.mark.parametrize("backend", BACKENDS)
def test_target_count_by_threshold_bisection(backend):
    c = nested_centroids(seed=4)
    for target in (12, 48, 100):
        dense, _ = agglomerate(c, 0.8, n_clusters=target)
        split, info = agglomerate(c, 0.8, n_clusters=target, dense_max=100, knn_neighbors=287, backend=backend)
        assert dense.max() + 1 == target
        assert info["n_clusters_agglomerative"] == target and "bisected_threshold" in info
        assert adjusted_rand_score(dense, split) == 1.0


def test_kept_fraction_sets_the_strictest_threshold_that_keeps_it(monkeypatch):
    # 20 tight voices (cosine ~0.96 to their direction) and 20 loose ones (~0.55): at the default threshold
    # 0.80 the loose voices fall apart into clusters under min_cluster_size
    tight, tight_truth = sphere_blobs([20] * 20, spread=0.3, seed=0)
    loose, loose_truth = sphere_blobs([20] * 20, spread=1.5, seed=1)
    x, truth = np.concatenate([tight, loose]), np.concatenate([tight_truth, loose_truth + 20])
    fixed = cluster_embeddings(x, ClusteringConfig(backend="sklearn"))
    assert fixed.kept_fraction < 0.6 and fixed.stages["similarity_threshold"] == 0.80
    result = cluster_embeddings(x, ClusteringConfig(backend="sklearn", kept_fraction=0.85))
    threshold = result.stages["similarity_threshold"]
    assert result.kept_fraction >= 0.85 and threshold < 0.80
    assert 2 < result.stages["threshold_search_passes"] < 50
    stricter = cluster_embeddings(x, ClusteringConfig(backend="sklearn", similarity_threshold=threshold + 0.002))
    assert stricter.kept_fraction < 0.85
    # the labels are the search's own pass at that threshold, the same as a clustering at it, and no pass more
    at_threshold = cluster_embeddings(x, ClusteringConfig(backend="sklearn", similarity_threshold=threshold))
    assert np.array_equal(result.labels, at_threshold.labels)
    passes = []
    original_agglomerate = clustering.agglomerate
    monkeypatch.setattr(clustering, "agglomerate", lambda *a: passes.append(1) or original_agglomerate(*a))
    again = cluster_embeddings(x, ClusteringConfig(backend="sklearn", kept_fraction=0.85))
    monkeypatch.undo()
    assert len(passes) == again.stages["threshold_search_passes"] and np.array_equal(again.labels, result.labels)
    # a share no threshold keeps (the confidence filter drops 5% of every cluster): the pass that kept the most
    with pytest.warns(UserWarning, match="kept_fraction=1.0"):
        most = cluster_embeddings(x, ClusteringConfig(backend="sklearn", kept_fraction=1.0))
    at_most = ClusteringConfig(backend="sklearn", similarity_threshold=most.stages["similarity_threshold"])
    assert most.kept_fraction < 1.0 and np.array_equal(most.labels, cluster_embeddings(x, at_most).labels)
    # the loose voices come back as clusters of their own, no less pure
    assert fixed.n_clusters == 20 and result.n_clusters >= 38
    assert clustering_report(result, truth)["purity"] > 0.95
    assert ClusteringConfig(**result.config).kept_fraction == 0.85
    # the scalable path's search builds the neighbour graph once and finds the same threshold
    calls = []
    original = clustering._knn_graph
    monkeypatch.setattr(clustering, "_knn_graph", lambda *a: calls.append(1) or original(*a))
    scalable = cluster_embeddings(
        x, ClusteringConfig(backend="sklearn", kept_fraction=0.85, agglomerative_dense_max=60, knn_neighbors=64)
    )
    assert scalable.stages["agglomerative_path"] == "knn_components" and len(calls) == 1
    assert scalable.stages["similarity_threshold"] == pytest.approx(threshold, abs=0.01)


def test_threshold_search_walks_down_then_bisects():
    calls = []

    def kept_at(t):
        calls.append(t)
        return float(np.clip(1.0 - t, 0.0, 1.0)), f"pass at {t}"

    threshold, passes, out = threshold_for_kept_fraction(kept_at, 0.3)
    assert 0.699 - 1e-3 <= threshold <= 0.7 and kept_at(threshold)[0] >= 0.3 and passes == len(calls) - 1
    assert out == f"pass at {threshold}", "the search hands back the pass at the threshold it returns"
    # a share no threshold reaches: the threshold that keeps the most, with a warning
    with pytest.warns(UserWarning, match="kept_fraction=0.9"):
        threshold, _, out = threshold_for_kept_fraction(lambda t: (0.5 - abs(t - 0.2), t), 0.9)
    assert abs(threshold - 0.2) <= 0.05 and out == threshold


def test_target_count_above_preclusters_is_rejected():
    x, _ = sphere_blobs([20] * 10)
    with pytest.raises(ValueError, match="exceeds the .* pre-clusters"):
        cluster_embeddings(x, ClusteringConfig(n_clusters=100))


# ------------------------------------------------------------------------------------------ filters


@pytest.mark.parametrize("backend", BACKENDS)
def test_size_filter_drops_small_and_trims_large(backend):
    sizes = [20] * 10 + [4] * 5 + [80] * 2  # speakers 10-14 too small, 15-16 too large
    x, truth = sphere_blobs(sizes, seed=5)
    cfg = ClusteringConfig(backend=backend, confidence_quantile=0.0, min_cluster_size=8, max_cluster_size=50)
    result = cluster_embeddings(x, cfg)
    small = np.isin(truth, range(10, 15))
    assert (result.labels[small] == -1).all()
    assert result.stages["dropped_small"] == 20
    for spk in (15, 16):
        kept = result.labels[truth == spk]
        assert (kept >= 0).sum() == 50  # trimmed to max_cluster_size ...
        members = truth == spk
        # ... keeping the most confident members.
        assert (
            result.confidence[members & (result.labels >= 0)].min()
            >= result.confidence[members & (result.labels < 0)].max()
        )
    assert result.stages["trimmed_large"] == 60
    assert result.n_clusters == 12
    # Largest cluster first.
    assert np.bincount(result.labels[result.labels >= 0])[:2].tolist() == [50, 50]

    dropped = cluster_embeddings(x, ClusteringConfig(**{**cfg.__dict__, "large_cluster_policy": "drop"}))
    assert (dropped.labels[np.isin(truth, [15, 16])] == -1).all()
    assert dropped.n_clusters == 10 and dropped.stages["dropped_large"] == 160


def test_filter_clusters_confidence_threshold_and_quantile():
    rng = np.random.default_rng(6)
    dim = 16
    e0 = np.eye(dim)[0]
    orth = rng.standard_normal((30, dim))
    orth[:, 0] = 0
    orth = unit(orth)
    tight = unit(e0 + 0.05 * orth[:24])  # cosine ~0.999 to the axis
    loose = unit(e0 + 1.5 * orth[24:])  # cosine ~0.55: low-confidence members of the same cluster
    x = np.concatenate([tight, loose]).astype(np.float32)
    labels = np.zeros(30, dtype=np.int64)

    out, conf, stats = filter_clusters(x, labels, min_cluster_size=8, max_cluster_size=None, min_confidence=0.8)
    assert (out[:24] == 0).all() and (out[24:] == -1).all()
    assert stats["dropped_low_confidence"] == 6
    assert conf[:24].min() > 0.95 and conf[24:].max() < 0.7

    out, _, stats = filter_clusters(x, labels, max_cluster_size=None, confidence_quantile=0.1)
    assert stats["dropped_low_confidence"] == 3  # 10% of 30, the three least confident
    assert set(np.flatnonzero(out == -1)) == set(np.argsort(conf)[:3])

    # A cluster that the confidence filter shrinks below min_cluster_size disappears entirely.
    out, _, stats = filter_clusters(x, labels, min_cluster_size=25, max_cluster_size=None, min_confidence=0.8)
    assert (out == -1).all() and stats["dropped_small_after_confidence"] == 24


@pytest.mark.parametrize("backend", BACKENDS)
def test_confidence_filter_in_pipeline(backend):
    x, _ = sphere_blobs([20] * 30, spread=0.6, seed=7)
    base = cluster_embeddings(x, ClusteringConfig(backend=backend, confidence_quantile=0.0))
    result = cluster_embeddings(x, ClusteringConfig(backend=backend, confidence_quantile=0.2))
    assert np.array_equal(base.confidence, result.confidence)
    candidates = 600 - result.stages["dropped_small"]  # members of clusters big enough to keep
    assert result.stages["dropped_low_confidence"] == pytest.approx(0.2 * candidates, abs=2)
    low = (base.labels >= 0) & (result.labels < 0)
    assert result.confidence[result.labels >= 0].min() >= result.confidence[low].max()
    strict = cluster_embeddings(x, ClusteringConfig(backend=backend, confidence_quantile=0.0, min_confidence=0.9))
    assert strict.stages["dropped_low_confidence"] > 0
    assert (strict.confidence[strict.labels >= 0] >= 0.9).all()


# ------------------------------------------------------------------------------------------ misc behaviour


@pytest.mark.parametrize("backend", BACKENDS)
def test_deterministic_with_seed(backend):
    x, _ = sphere_blobs([20] * 30, spread=0.6, seed=8)
    cfg = ClusteringConfig(backend=backend, seed=3, kmeans_flat_max_clusters=60)
    a, b = cluster_embeddings(x, cfg), cluster_embeddings(x, cfg)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.confidence, b.confidence)


def test_pca_keeps_the_informative_subspace():
    # Speakers live in a 10-d subspace of a 64-d space: 99% of the variance needs at most 10 components.
    rng = np.random.default_rng(9)
    basis = np.linalg.qr(rng.standard_normal((64, 10)))[0].T
    z, truth = sphere_blobs([20] * 20, dim=10, seed=9)
    x = z @ basis * 7.0  # scale must not matter
    result = cluster_embeddings(x, ClusteringConfig())
    assert result.stages["pca_dim"] <= 10 and result.stages["input_dim"] == 64
    assert result.stages["pca_explained_variance"] >= 0.99
    assert clustering_report(result, truth)["ari"] > 0.95


def test_backend_resolution_without_faiss(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    assert resolve_backend("auto") == ("sklearn", "sklearn")
    assert resolve_backend("sklearn") == ("sklearn", "sklearn")
    with pytest.raises(ValueError, match="faiss is not importable"):
        resolve_backend("faiss")
    x, _ = sphere_blobs([10] * 5)
    assert cluster_embeddings(x, ClusteringConfig(backend="auto")).backend == "sklearn"


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_auto_backend_pairs_sklearn_kmeans_with_faiss_neighbours():
    assert resolve_backend("auto") == ("sklearn", "faiss")
    assert resolve_backend("faiss") == ("faiss", "faiss")
    x, truth = sphere_blobs([20] * 40, seed=11)
    result = cluster_embeddings(x, ClusteringConfig(agglomerative_dense_max=50))
    assert result.backend == "sklearn+faiss" and result.stages["knn_search"] == "faiss_exact"
    assert clustering_report(result, truth)["ari"] > 0.95


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda x: np.where(np.arange(x.shape[0])[:, None] == 5, np.nan, x), r"NaN or Inf \(first at index 5\)"),
        (lambda x: np.where(np.arange(x.shape[0])[:, None] == 7, np.inf, x), r"NaN or Inf \(first at index 7\)"),
        (lambda x: x[0], r"2-D array \(N, D\), got shape \(64,\)"),
        (lambda x: x[None], r"2-D array \(N, D\), got shape \(1, 200, 64\)"),
        (lambda x: x[:5], r"too few points \(5\)"),
        (lambda x: x[:, :1], r"at least 2 dimensions"),
        (lambda x: np.where(np.arange(x.shape[0])[:, None] == 3, 0.0, x), r"zero norm \(first at index 3\)"),
        (lambda x: x.astype(str), r"must be numeric"),
    ],
)
def test_bad_input_is_rejected(make, message):
    x, _ = sphere_blobs([20] * 10)
    with pytest.raises(ValueError, match=message):
        cluster_embeddings(make(x), ClusteringConfig(backend="sklearn"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pca_variance": 0.0}, "pca_variance"),
        ({"pca_variance": 1.5}, "pca_variance"),
        ({"kmeans_samples_per_cluster": 0.5}, "kmeans_samples_per_cluster"),
        ({"similarity_threshold": 1.0}, "similarity_threshold"),
        ({"n_clusters": 0}, "n_clusters"),
        ({"kept_fraction": 0.0}, "kept_fraction"),
        ({"kept_fraction": 0.5, "n_clusters": 10}, "kept_fraction"),
        ({"min_cluster_size": 10, "max_cluster_size": 5}, "max_cluster_size"),
        ({"large_cluster_policy": "split"}, "large_cluster_policy"),
        ({"confidence_quantile": 1.0}, "confidence_quantile"),
        ({"backend": "cuml"}, "backend"),
    ],
)
def test_bad_config_is_rejected(kwargs, field):
    with pytest.raises(ValueError, match=f"ClusteringConfig.{field}="):
        ClusteringConfig(**kwargs)


# ------------------------------------------------------------------------------------------ report


def test_report_metrics_on_hand_made_partition():
    labels = np.array([0, 0, 0, 1, 1, -1])
    truth = np.array(["a", "a", "b", "b", "b", "c"])
    result = ClusteringResult(labels=labels, confidence=np.ones(6, np.float32), n_clusters=2, kept_fraction=5 / 6)
    report = clustering_report(result, truth)
    assert report["n_kept"] == 5 and report["n_clusters"] == 2
    assert report["cluster_size_min"] == 2 and report["cluster_size_max"] == 3
    assert report["purity"] == pytest.approx(4 / 5)  # cluster 0: 2 of a; cluster 1: 2 of b
    assert report["inverse_purity"] == pytest.approx(4 / 5)  # class a: 2 in cluster 0; class b: 2 in cluster 1
    assert report["n_true_classes"] == 3 and report["n_true_classes_kept"] == 2
    t, c = truth[:5], labels[:5]
    assert report["ari"] == pytest.approx(adjusted_rand_score(t, c))
    assert report["nmi"] == pytest.approx(normalized_mutual_info_score(t, c))
    assert "purity" not in clustering_report(result)

    json.dumps(report)  # JSON-ready

    with pytest.raises(ValueError, match=r"true_labels must have shape \(6,\)"):
        clustering_report(result, truth[:4])

    nothing = ClusteringResult(
        labels=np.full(6, -1), confidence=np.ones(6, np.float32), n_clusters=0, kept_fraction=0.0
    )
    empty = clustering_report(nothing, truth)
    assert empty["purity"] is None and empty["cluster_size_min"] is None


def test_stage_timings_are_recorded_and_each_stage_is_hooked():
    x, _ = sphere_blobs([20] * 10)
    entered = []

    @contextlib.contextmanager
    def hook(stage):
        entered.append(stage)
        yield

    result = cluster_embeddings(x, ClusteringConfig(backend="sklearn"), stage_hook=hook)
    assert entered == ["normalise", "pca", "kmeans", "agglomerative", "filter"]
    for stage in entered:
        assert result.timings[stage] >= 0
    assert result.timings["total"] >= result.timings["kmeans"]
    assert ClusteringConfig(**result.config) == ClusteringConfig(backend="sklearn")


@pytest.mark.skipif(not HAS_FAISS, reason="faiss not installed")
def test_approximate_neighbour_search_finds_the_same_clusters():
    # Above knn_exact_max the faiss backend uses an inverted-file index; on separated speakers it must
    # find the same above-threshold neighbours, hence the same clusters, as the exact search.
    x, _truth = sphere_blobs([20] * 40, seed=10)
    pre, _ = precluster_kmeans(x, 200, "faiss", seed=0)
    c = unit(np.stack([x[pre == p].mean(axis=0) for p in range(pre.max() + 1)]))
    exact, info_exact = agglomerate(c, 0.8, dense_max=50, backend="faiss")
    approx, info = agglomerate(c, 0.8, dense_max=50, backend="faiss", knn_exact_max=100, knn_nprobe=8)
    assert info_exact["knn_search"] == "faiss_exact" and info["knn_search"] == "faiss_ivf"
    assert adjusted_rand_score(exact, approx) == 1.0
    assert info["n_clusters_agglomerative"] == 40
