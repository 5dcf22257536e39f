"""evaluation.plots: every figure is written as a real, non-empty PNG; training logs are read from each format."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from modeling_dino_speech.evaluation.plots import (
    _probit,
    _thin,
    main,
    plot_confusion_matrix,
    plot_det,
    plot_score_histogram,
    plot_training_curves,
    plot_tsne,
    read_scalars,
)
from modeling_dino_speech.metrics.detection_error_tradeoff import detection_curve


def _is_png(path: Path, min_bytes: int = 5000) -> bool:
    path = Path(path)
    return path.is_file() and path.stat().st_size > min_bytes and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trials():
    rng = np.random.default_rng(0)
    labels = rng.random(5000) < 0.2
    return rng.standard_normal(5000) + 2.0 * labels, labels


def test_det_and_histogram(trials, tmp_path):
    scores, labels = trials
    curves = {"system A": detection_curve(scores, labels), "system B": detection_curve(np.round(scores, 1), labels)}
    assert _is_png(plot_det(curves, tmp_path / "det.png"))
    assert _is_png(plot_score_histogram(scores, labels, tmp_path / "sub" / "hist.png", threshold=0.5))


def test_det_thinning_keeps_ends_and_visible_corners():
    rng = np.random.default_rng(1)
    labels = rng.random(200_000) < 0.5
    curve = detection_curve(rng.standard_normal(200_000) + labels, labels)
    x, y = _probit(curve.p_fa), _probit(curve.p_miss)
    keep = _thin(x, y)
    assert keep[0] == 0 and keep[-1] == x.size - 1
    assert keep.size < x.size / 10
    # Every dropped point shares a drawing cell (0.005 probit units) with the kept point before it.
    previous = keep[np.searchsorted(keep, np.arange(x.size), side="right") - 1]
    assert np.abs(x - x[previous]).max() < 0.005 and np.abs(y - y[previous]).max() < 0.005


def test_tsne_and_confusion_matrix(tmp_path):
    rng = np.random.default_rng(2)
    centres = rng.standard_normal((3, 16)) * 4
    labels = np.repeat(["spk0", "spk1", "spk2"], 15)
    embeddings = centres[np.repeat(np.arange(3), 15)] + rng.standard_normal((45, 16))
    assert _is_png(plot_tsne(embeddings, labels, tmp_path / "tsne.png"))
    with pytest.raises(ValueError, match="labels"):
        plot_tsne(embeddings, labels[:-1], tmp_path / "bad.png")
    matrix = np.array([[5, 1, 0], [2, 6, 1], [0, 0, 7]])
    assert _is_png(plot_confusion_matrix(matrix, ["ang", "hap", "sad"], tmp_path / "confusion.png"))


def test_training_curves_from_jsonl_json_csv(tmp_path):
    records = [{"step": s, "loss": 10.0 / s, "teacher_entropy": 0.5, "note": "text ignored"} for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    (tmp_path / "metrics.json").write_text(json.dumps(records))
    (tmp_path / "metrics.csv").write_text(
        "step,loss,teacher_entropy\n"
        + "\n".join(f"{r['step']},{r['loss']},{r['teacher_entropy']}" for r in records)
        + "\n"
    )
    for name in ("metrics.jsonl", "metrics.json", "metrics.csv"):
        scalars = read_scalars(tmp_path / name)
        assert set(scalars) == {"loss", "teacher_entropy"}
        steps, values = scalars["loss"]
        np.testing.assert_array_equal(steps, [1, 2, 3, 4, 5])
        np.testing.assert_allclose(values, [10.0 / s for s in range(1, 6)])
    # A run folder without event files falls back to its metrics.jsonl.
    assert set(read_scalars(tmp_path)) == {"loss", "teacher_entropy"}
    assert _is_png(plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png", tags=["loss"]))
    with pytest.raises(KeyError, match="momentum"):
        plot_training_curves(tmp_path / "metrics.jsonl", tmp_path / "x.png", tags=["momentum"])
    (tmp_path / "broken.jsonl").write_text('{"step": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        read_scalars(tmp_path / "broken.jsonl")


def test_training_curves_from_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "run" / "dino"))
    for step in range(1, 4):
        writer.add_scalar("loss", 5.0 - step, step)
        writer.add_scalar("teacher_momentum", 0.99 + 0.001 * step, step)
    writer.close()
    scalars = read_scalars(tmp_path / "run")
    np.testing.assert_allclose(scalars["loss"][1], [4.0, 3.0, 2.0])
    assert main(["training", "--log", str(tmp_path / "run"), "--out", str(tmp_path / "tb.png")]) == 0
    assert _is_png(tmp_path / "tb.png")


def test_many_classes_get_distinct_styles_and_the_title_names_the_model(tmp_path, monkeypatch):
    from modeling_dino_speech.evaluation import plots

    styles = plots.class_styles(100)
    assert len({(tuple(c), m) for c, m in styles}) == 100  # no two of 100 speakers look alike
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in itertools.pairwise(styles))  # neighbours differ in both
    seen = {}
    save = plots._save

    def keep(fig, path):
        ax = fig.axes[0]
        seen["title"] = ax.get_title()
        seen["styles"] = {
            (tuple(c.get_facecolor()[0][:3]), c.get_paths()[0].vertices.round(3).tobytes()) for c in ax.collections
        }
        return save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    rng = np.random.default_rng(3)
    labels = np.repeat([f"voice{i}" for i in range(25)], 4)
    path = plots.plot_tsne(rng.standard_normal((100, 8)), labels, tmp_path / "t.png", model_name="DINO, 300 steps")
    assert _is_png(path)
    assert seen["title"].startswith("t-SNE of embeddings: DINO, 300 steps\n(100 utterances, 25 classes")
    assert len(seen["styles"]) == 25


def test_evaluation_curve_from_metrics_and_from_a_summary(tmp_path):
    from modeling_dino_speech.evaluation.plots import plot_evaluation_curve

    log = tmp_path / "metrics.jsonl"
    log.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"step": 10, "loss": 2.0},
                {"step": 100, "eval/eer": 26.2, "eval/min_dcf_0.01": 0.97},
                {"step": 200, "eval/eer": 12.7, "eval/min_dcf_0.01": 0.82},
            ]
        )
    )
    assert _is_png(plot_evaluation_curve(log, tmp_path / "eer.png", model_name="demo DINO"))
    summary = [{"step": 100, "eer": 26.2}, {"step": 300, "eer": 11.8}]
    assert _is_png(plot_evaluation_curve(summary, tmp_path / "eer2.png"))
    (tmp_path / "no_eval.jsonl").write_text(json.dumps({"step": 1, "loss": 1.0}))
    with pytest.raises(ValueError, match="no eval/eer"):
        plot_evaluation_curve(tmp_path / "no_eval.jsonl", tmp_path / "x.png")
    assert main(["eer", "--log", str(log), "--out", str(tmp_path / "cli.png")]) == 0


def test_plots_never_write_over_their_inputs(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(json.dumps({"step": 1, "loss": 1.0}))
    with pytest.raises(ValueError, match="would overwrite the input"):
        main(["training", "--log", str(log), "--out", str(log)])
