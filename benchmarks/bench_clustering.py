"""Benchmark: pseudo-label clustering on 100k+ synthetic embeddings, extrapolated to VoxCeleb2 (1.09M).

Synthetic data: ``--speakers`` speakers x U[``--min-utts``, ``--max-utts``] utterances, 256-d, a mixture on
the unit sphere with an anisotropic (power-law) variance spectrum so that PCA has something to remove, and
a within-speaker spread that gives an utterance ~0.85 cosine to its speaker (pairs ~0.7), roughly what a
good speaker embedding shows.

Each configuration runs in its own subprocess (``--worker``) that loads the embeddings from a .npy file and
calls ``cluster_embeddings(..., stage_hook=StageMemory())``, which records each stage's own peak RSS (Linux
VmHWM, reset at each stage start): every allocation counts, faiss's C++ buffers included.
Printed tables:

1. per stage, seconds and peak RSS, faiss and sklearn side by side, at each size (scaling sweep);
2. the same stages extrapolated to N = 1,092,009 with the exponent fitted between the two largest sizes
   and with the exponent the algorithm predicts (module docstring of ``clustering.py``);
3. numpy-level peak memory per stage (tracemalloc) at the largest size;
4. the two scalable paths against their quadratic counterparts at a size where both fit:
   flat vs two-level k-means, dense vs k-NN-component agglomerative (same labels expected).

Usage (about 10-15 minutes on 2 shared cores):
    .venv/bin/python benchmarks/bench_clustering.py
    .venv/bin/python benchmarks/bench_clustering.py --speakers 1000 --fractions 0.5 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _harness import cpu_model, table  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

from modeling_dino_speech.training.clustering import (  # noqa: E402
    ClusteringConfig,
    _group_means,
    agglomerate,
    cluster_embeddings,
    clustering_report,
    precluster_kmeans,
    reduce_dimension,
)

VOXCELEB2_N = 1_092_009
STAGES = ["normalise", "pca", "kmeans", "agglomerative", "filter", "total"]
# For the extrapolation the agglomerative stage is split into the k-NN search and the linkage of the
# components. Exponent of N each part follows by construction (clustering.py docstring): exact k-NN over
# the N/4 centroids is quadratic, the faiss inverted-file search and the two-level k-means are N^1.5.
PARTS = ["normalise", "pca", "kmeans", "knn", "linkage", "filter"]
THEORY_EXPONENT = {"normalise": 1.0, "pca": 1.0, "kmeans": 1.5, "knn": 2.0, "linkage": 1.0, "filter": 1.0}
# Variants: name -> (backend, config overrides). "auto" is the default (sklearn k-means, faiss neighbours);
# "auto-ivf" forces the inverted-file neighbour search that the default switches to at VoxCeleb2 scale
# (P > knn_exact_max = 50k centroids), so it is the variant to extrapolate.
VARIANTS = {
    "auto": ("auto", {}),
    "auto-ivf": ("auto", {"knn_exact_max": 1}),
    "faiss": ("faiss", {}),
    "sklearn": ("sklearn", {}),
}


def parts_of(run: dict) -> dict[str, float]:
    """Seconds per extrapolation part of one worker run."""
    t = run["timings"]
    knn = float(run["stages"].get("knn_seconds", 0.0))
    return {
        "normalise": t["normalise"],
        "pca": t["pca"],
        "kmeans": t["kmeans"],
        "knn": knn,
        "linkage": t["agglomerative"] - knn,
        "filter": t["filter"],
    }


def extra_rss(run: dict, stage: str | None = None) -> float:
    """Peak RSS (MB) of one stage, or of the whole call, above the RSS with the embeddings loaded."""
    stages = [stage] if stage else STAGES[:-1]
    return max(run["memory"][s].get("peak_rss_mb", run["memory"][s]["maxrss_mb"]) for s in stages) - run["rss_start_mb"]


def _proc_status_mb(field_name: str) -> float | None:
    """A memory field of /proc/self/status in MB (Linux), or None where it does not exist."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the process's peak-RSS mark (Linux ``clear_refs`` 5), so a stage's own peak can be read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class StageMemory:
    """The memory of each stage of a ``cluster_embeddings`` call, as its ``stage_hook``.

    ``memory[stage]`` holds "maxrss_mb" (the process's high-water mark since it started), "rss_start_mb" and
    "peak_rss_mb" (the stage's own peak RSS, every allocation counted; Linux, where resetting the VmHWM mark at
    each stage start is a side effect on the process), and, while ``tracemalloc`` is tracing, "traced_peak_mb"
    (Python/numpy allocations during the stage).
    """

    def __init__(self) -> None:
        self.memory: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        tracing = tracemalloc.is_tracing()
        if tracing:
            tracemalloc.reset_peak()
        mem: dict[str, float] = {}
        rss = _proc_status_mb("VmRSS")
        own_peak = rss is not None and _reset_peak_rss()
        if own_peak:
            mem["rss_start_mb"] = rss
        yield
        peak = _proc_status_mb("VmHWM") if own_peak else None
        if peak is not None:
            mem["peak_rss_mb"] = peak
        mem["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        if tracing:
            mem["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
        self.memory[name] = mem


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def synthetic_embeddings(n_speakers: int, min_utts: int, max_utts: int, dim: int, seed: int):
    """(N, dim) float32 embeddings and (N,) int32 speaker ids: a mixture on the sphere, anisotropic."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(min_utts, max_utts + 1, size=n_speakers)
    truth = np.repeat(np.arange(n_speakers, dtype=np.int32), counts)
    spectrum = (1.0 + np.arange(dim)) ** -0.35  # power-law axis scales, then a random rotation
    rotation = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    means = rng.standard_normal((n_speakers, dim)) * spectrum
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    x = np.empty((truth.size, dim), dtype=np.float32)
    step = 65536
    for start in range(0, truth.size, step):  # chunked: no float64 (N, D) temporaries
        t = truth[start : start + step]
        noise = rng.standard_normal((t.size, dim)) * spectrum
        noise *= 0.62 / np.linalg.norm(noise, axis=1, keepdims=True)  # cosine to the speaker ~0.85
        x[start : start + step] = ((means[t] + noise) @ rotation).astype(np.float32)
    return x, truth


# ------------------------------------------------------------------------------------------ worker


def run_worker(args: argparse.Namespace) -> None:
    x = np.load(args.embeddings, mmap_mode=None)
    truth = np.load(args.truth)
    rss_start = current_rss_mb()
    backend, overrides = VARIANTS[args.backend]
    cfg = ClusteringConfig(backend=backend, seed=0, num_threads=args.threads, **overrides)
    if args.trace:
        tracemalloc.start()
    memory = StageMemory()
    result = cluster_embeddings(x, cfg, stage_hook=memory)
    if args.trace:
        tracemalloc.stop()
    report = clustering_report(result, truth)
    print(
        json.dumps(
            {
                "n": int(x.shape[0]),
                "rss_start_mb": rss_start,
                "timings": result.timings,
                "memory": memory.memory,
                "stages": {k: v for k, v in result.stages.items()},
                "report": {k: v for k, v in report.items() if k not in ("stages", "timings_s")},
            }
        )
    )


def spawn(emb: Path, truth: Path, backend: str, threads: int, trace: bool = False) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--embeddings",
        str(emb),
        "--truth",
        str(truth),
        "--backend",
        backend,
        "--threads",
        str(threads),
    ]
    if trace:
        cmd.append("--trace")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {backend} on {emb.name} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ tables


def fmt_s(s: float) -> str:
    return f"{s:.2f}" if s < 100 else f"{s:.0f}"


def scalable_vs_quadratic(n_speakers: int, args: argparse.Namespace, backends: list[str]) -> str:
    """Flat vs two-level k-means and dense vs k-NN-component agglomerative, where both fit."""
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics.cluster import contingency_matrix

    x, truth = synthetic_embeddings(n_speakers, args.min_utts, args.max_utts, args.dim, seed=1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y, _ = reduce_dimension(x, 0.99)
    p = round(y.shape[0] / 4)
    rows = []
    for backend in backends:
        for label, flat_max, probes in (("flat", p, 0), ("two-level", 256, 0), ("two-level + border", 256, 5)):
            t0 = time.perf_counter()
            pre, info = precluster_kmeans(
                y, p, backend, iters=20, flat_max_clusters=flat_max, seed=0, border_probes=probes
            )
            dt = time.perf_counter() - t0
            # Pre-cluster purity: share of points whose pre-cluster majority speaker is their own.
            purity = contingency_matrix(truth, pre, sparse=True).max(axis=0).toarray().sum() / y.shape[0]
            rows.append(
                [f"k-means {label}", backend, y.shape[0], info["n_preclusters"], fmt_s(dt), f"{purity:.4f}", ""]
            )
    # Agglomerative: same centroids, dense (one scipy linkage) vs the k-NN component decomposition.
    pre, info = precluster_kmeans(y, p, backends[0], iters=20, seed=0)
    c = _group_means(y, pre, info["n_preclusters"])
    results = {}
    for label, dense_max in (("dense", c.shape[0]), ("knn-components", 2000)):
        tracemalloc.start()
        t0 = time.perf_counter()
        lab, st = agglomerate(c, 0.8, dense_max=dense_max, knn_neighbors=32, backend=backends[0])
        dt = time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        results[label] = lab
        rows.append(
            [
                f"agglomerative {label}",
                backends[0],
                c.shape[0],
                st["n_clusters_agglomerative"],
                fmt_s(dt),
                "",
                f"{peak:.0f}",
            ]
        )
    ari = adjusted_rand_score(results["dense"], results["knn-components"])
    out = table(["step", "backend", "points", "clusters", "seconds", "pre-cluster purity", "traced peak MB"], rows)
    return out + f"\nARI(dense labels, k-NN-component labels) = {ari:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speakers", type=int, default=5000)
    parser.add_argument("--min-utts", type=int, default=20)
    parser.add_argument("--max-utts", type=int, default=30)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0],
        help="speaker-count fractions for the scaling sweep (the largest sets the table)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="BLAS/OpenMP/faiss threads (1: on a shared 2-core machine 2 threads oversubscribe)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=None,
        choices=list(VARIANTS),
        help="variants to run; default: auto, auto-ivf, faiss (if faiss is importable), sklearn",
    )
    parser.add_argument(
        "--compare-speakers",
        type=int,
        default=1000,
        help="speakers for the flat-vs-two-level / dense-vs-kNN table (0 skips it)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--embeddings", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--truth", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="sklearn", choices=list(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return

    if args.backends is None:
        try:
            import faiss

            args.backends = ["auto", "auto-ivf", "faiss", "sklearn"]
        except ImportError:
            args.backends = ["sklearn"]
    import scipy
    import sklearn

    try:
        import faiss

        faiss_version = f"faiss {faiss.__version__}"
    except ImportError:
        faiss_version = "no faiss"
    load = os.getloadavg()[0]
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs (load average {load:.1f} at start); "
        f"{args.threads} BLAS/OpenMP/faiss thread(s); numpy {np.__version__}, scipy {scipy.__version__}, "
        f"scikit-learn {sklearn.__version__}, {faiss_version}; python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )

    runs: dict[tuple[int, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = []
        for frac in sorted(args.fractions):
            n_spk = max(2, round(args.speakers * frac))
            x, truth = synthetic_embeddings(n_spk, args.min_utts, args.max_utts, args.dim, seed=0)
            emb, tru = Path(tmp) / f"x_{n_spk}.npy", Path(tmp) / f"t_{n_spk}.npy"
            np.save(emb, x)
            np.save(tru, truth)
            del x
            n = truth.size
            sizes.append(n)
            for backend in args.backends:
                runs[(n, backend)] = spawn(emb, tru, backend, args.threads)
                r = runs[(n, backend)]
                print(f"  ran N={n} {backend}: {r['timings']['total']:.1f} s", flush=True)
        largest = sizes[-1]
        traced = spawn(emb, tru, args.backends[0], args.threads, trace=True)

    # 1. per-stage time and RSS at each size
    rows = []
    for n in sizes:
        for backend in args.backends:
            r = runs[(n, backend)]
            path = r["stages"]["agglomerative_path"]
            if path == "knn_components":
                path = f"{r['stages']['knn_search']} k-NN"
            rows.append(
                [n, backend, r["stages"]["n_preclusters"], r["stages"]["kmeans_levels"], path]
                + [fmt_s(r["timings"][s]) for s in STAGES]
                + [f"{extra_rss(r):.0f}"]
            )
    print("\n1. seconds per stage; extra peak RSS (MB) of the clustering over the loaded embeddings")
    headers = ["N", "backend", "pre-clusters", "k-means levels", "agglomerative path"] + STAGES + ["peak RSS +MB"]
    print(table(headers, rows))

    rows = []
    for n in sizes:
        for backend in args.backends:
            rep = runs[(n, backend)]["report"]
            rows.append(
                [
                    n,
                    backend,
                    rep["n_clusters"],
                    rep["n_true_classes"],
                    f"{rep['kept_fraction']:.3f}",
                    f"{rep['purity']:.4f}",
                    f"{rep['inverse_purity']:.4f}",
                    f"{rep['nmi']:.4f}",
                    f"{rep['ari']:.4f}",
                    rep["cluster_size_median"],
                ]
            )
    print("\nquality against the synthetic speaker labels (default recipe: threshold 0.80, sizes 8-50)")
    print(
        table(
            ["N", "backend", "clusters", "speakers", "kept", "purity", "inv. purity", "NMI", "ARI", "median size"], rows
        )
    )

    # 2. extrapolation to VoxCeleb2
    print(
        f"\n2. extrapolation to VoxCeleb2 (N = {VOXCELEB2_N:,}, P = N/4 = {VOXCELEB2_N // 4:,} centroids) "
        f"from N = {largest:,}"
    )
    rows = []
    ratio = VOXCELEB2_N / largest
    for variant in args.backends:
        now = parts_of(runs[(largest, variant)])
        prev = parts_of(runs[(sizes[-2], variant)]) if len(sizes) > 1 else None
        tot_fit = tot_theory = 0.0
        for part in PARTS:
            t = now[part]
            theory = THEORY_EXPONENT[part]
            if part == "knn" and variant.endswith("-ivf"):
                theory = 1.5
            if prev is not None and min(t, prev[part]) > 0.05:
                fitted = math.log(t / prev[part]) / math.log(sizes[-1] / sizes[-2])
            else:  # too small to fit an exponent through timer noise
                fitted = theory
            est_fit, est_theory = t * ratio ** max(fitted, 0.0), t * ratio**theory
            tot_fit += est_fit
            tot_theory += est_theory
            rows.append([variant, part, fmt_s(t), f"{fitted:.2f}", fmt_s(est_fit), f"{theory:.1f}", fmt_s(est_theory)])
        rows.append([variant, "total", fmt_s(sum(now.values())), "", fmt_s(tot_fit), "", fmt_s(tot_theory)])
    print(
        table(
            [
                "variant",
                "part",
                f"s at {largest:,}",
                "fitted exp.",
                "s at 1.09M (fitted)",
                "theory exp.",
                "s at 1.09M (theory)",
            ],
            rows,
        )
    )
    print("(at 1.09M the default configuration runs as auto-ivf: P = 273k > knn_exact_max = 50k)")
    input_mb = VOXCELEB2_N * args.dim * 4 / 2**20
    print(f"memory: the caller's float32 embeddings at 1.09M take {input_mb:.0f} MB; on top of them:")
    for variant in args.backends:
        extra = [extra_rss(runs[(n, variant)]) for n in sizes]
        if len(sizes) > 1:  # linear fit through the two largest sizes: fixed library overhead + per-point cost
            slope = (extra[-1] - extra[-2]) / (sizes[-1] - sizes[-2])
            estimate = extra[-1] + slope * (VOXCELEB2_N - sizes[-1])
        else:
            slope, estimate = extra[-1] / sizes[-1], extra[-1] * ratio
        print(
            f"  {variant}: clustering peak RSS +{extra[-1]:.0f} MB at N={largest:,} "
            f"({slope * 2**20:.0f} B per point) -> ~{estimate:.0f} MB at 1.09M"
        )

    # 3. numpy-level peak per stage (tracemalloc run; slower, so its times are not used above)
    print(f"\n3. peak memory per stage above the loaded embeddings (MB), N={largest:,}")
    rows = [[f"RSS, {v}"] + [f"{extra_rss(runs[(largest, v)], s):.0f}" for s in STAGES[:-1]] for v in args.backends]
    rows.append(
        [f"traced numpy/Python, {args.backends[0]}"]
        + [f"{traced['memory'][s]['traced_peak_mb']:.0f}" for s in STAGES[:-1]]
    )
    print(table(["measure"] + STAGES[:-1], rows))

    # 4. scalable paths against their quadratic counterparts
    if args.compare_speakers:
        print(f"\n4. scalable paths vs quadratic ones ({args.compare_speakers} speakers)")
        with threadpool_limits(limits=args.threads):
            if "faiss" in args.backends:
                import faiss

                faiss.omp_set_num_threads(args.threads)
            real = ["faiss", "sklearn"] if "faiss" in args.backends else ["sklearn"]
            print(scalable_vs_quadratic(args.compare_speakers, args, real))


if __name__ == "__main__":
    main()
