"""EER + minDCF(0.01, 0.05) on a large trial list: dino-speech metrics vs. the usual scikit-learn roc_curve route.

    python benchmarks/bench_metrics.py                 # 10M trials
    python benchmarks/bench_metrics.py --trials 1000000 --repeats 5

Both routes compute the same three numbers from the same scores (and must agree to 1e-9); the table gives
the best-of-``repeats`` wall time of each, run alternately so that machine load hits both alike. Cases:
float32 cosine-like scores (what verification produces), float64 scores, and tie-heavy scores rounded to two
decimals.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_curve

from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve

P_TARGETS = (0.01, 0.05)


def ours(scores: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    curve = detection_curve(scores, labels)
    return (curve.equal_error_rate().value, *(curve.minimum_detection_cost(p).value for p in P_TARGETS))


def sklearn_route(scores: np.ndarray, labels: np.ndarray) -> tuple[float, ...]:
    """What evaluation scripts commonly do: roc_curve, then EER and minDCF from its points."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    k = int(np.flatnonzero(fnr <= fpr)[0])  # thresholds descend: the crossing, interpolated linearly
    if fnr[k] == fpr[k]:
        eer = fnr[k]
    else:
        a = (fnr[k - 1] - fpr[k - 1]) / ((fnr[k - 1] - fnr[k]) + (fpr[k] - fpr[k - 1]))
        eer = fpr[k - 1] + a * (fpr[k] - fpr[k - 1])
    dcfs = [(p * fnr + (1 - p) * fpr).min() / min(p, 1 - p) for p in P_TARGETS]
    return (float(eer), *map(float, dcfs))


def best_time(fn, *args, repeats: int) -> tuple[float, tuple[float, ...]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    labels = rng.random(args.trials) < args.target_fraction
    # Cosine-like scores: non-targets around 0.05, targets around 0.55.
    scores = (0.05 + 0.5 * labels + 0.15 * rng.standard_normal(args.trials)).clip(-1, 1)
    cases = {
        "float32 scores": scores.astype(np.float32),
        "float64 scores": scores,
        "tie-heavy (2 decimals)": np.round(scores, 2),
    }
    print(
        f"{args.trials:,} trials ({labels.sum():,} targets), best of {args.repeats}; EER + minDCF@0.01 + minDCF@0.05\n"
    )
    header = f"{'case':<24} {'eval.metrics s':>15} {'sklearn roc_curve s':>20} {'speed-up':>9} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for name, case_scores in cases.items():
        ours_times, sk_times = [], []
        for _ in range(args.repeats):  # alternate, so load spikes hit both routes
            t, ours_result = best_time(ours, case_scores, labels, repeats=1)
            ours_times.append(t)
            t, sk_result = best_time(sklearn_route, case_scores, labels, repeats=1)
            sk_times.append(t)
        diff = max(abs(a - b) for a, b in zip(ours_result, sk_result))
        if diff > 1e-9:
            raise SystemExit(f"{name}: results disagree: ours {ours_result}, sklearn {sk_result}")
        t_ours, t_sk = min(ours_times), min(sk_times)
        print(f"{name:<24} {t_ours:>15.3f} {t_sk:>20.3f} {t_sk / t_ours:>8.1f}x {diff:>11.1e}")
    print(f"\nEER {ours_result[0]:.4%}, minDCF@0.01 {ours_result[1]:.4f}, minDCF@0.05 {ours_result[2]:.4f} (last case)")


if __name__ == "__main__":
    main()
