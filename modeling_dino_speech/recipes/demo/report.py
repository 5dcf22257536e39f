"""The demo's last step: every system on every demo task, in one report a person wants to read.

    dino-speech demo-report --data data/demo --runs runs/demo

Systems: the DINO export, each pseudo-label round, the same network at random init, and fbank statistics.
Tasks: speaker verification on the held-out real voices (the headline: speakers and recordings no demo model
trained on), on those mixed with the held-out synthetic voices, on the held-out synthetic voices alone, on the
four Asterisk voices and across languages (Allison en vs es); the prosody-style emotion stand-in. Every EER comes
with a 95% interval of a bootstrap over the list's speakers. Writes `<runs>/eval/<system>/...` (results JSON and plots),
`<runs>/report.md` with the tables and figures, and fills the model cards of the exported checkpoints.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

TRIAL_LISTS = (
    "trials_real_new.txt",
    "trials_mixed.txt",
    "trials_synth.txt",
    "trials_real.txt",
    "trials_real_crosslang.txt",
)

#: Held-out manifests drawn as t-SNE maps of the DINO embeddings.
TSNE_SETS = (
    ("heldout_real_new.csv", "held-out real voices"),
    ("heldout_synth.csv", "held-out synthetic voices"),
    ("heldout_real.csv", "Asterisk voices"),
)


def speaker_of(path: str) -> str:
    """The demo corpus keeps each voice in its own folder (`wav/<kind>/<voice>/<utterance>.wav`)."""
    return Path(path).parent.name


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def discover_systems(runs: Path) -> Dict[str, str]:
    """Display name -> model spec (folder or baseline name), in report order."""
    systems: Dict[str, str] = {"fbank statistics": "fbank-stats"}
    dino = runs / "dino" / "final"
    if (dino / "config.json").exists():
        systems["same network, random init"] = f"random-init:{dino}"
        systems["DINO (no labels)"] = str(dino)
    for round_dir in sorted((runs / "pseudo_label").glob("round_*"), key=lambda p: int(p.name.split("_")[1])):
        if (round_dir / "final" / "config.json").exists():
            systems[f"DINO + pseudo-labels, round {round_dir.name.split('_')[1]}"] = str(round_dir / "final")
    return systems


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


#: Cluster-quality columns of the pseudo-label table: round report key -> header.
ROUND_COLUMNS = {
    "similarity_threshold": "threshold",
    "real_kept_fraction": "real: kept share",
    "purity": "purity",
    "nmi": "NMI",
    "ari": "ARI",
    "real_purity": "real: purity",
    "real_nmi": "real: NMI",
    "synthetic_purity": "synthetic: purity",
    "synthetic_nmi": "synthetic: NMI",
    "dino_weight": "DINO weight",
}


def _pseudo_label_table(runs: Path) -> List[str]:
    rows = []
    for report_file in sorted((runs / "pseudo_label").glob("round_*/report.json")):
        r = _read_json(report_file)
        if not r:
            continue
        cells = [str(r["round"]), str(r["clusters"]), f"{100 * r['kept_fraction']:.1f}"]
        cells += [f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "–" for k in ROUND_COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        "| round | clusters | kept (%) | " + " | ".join(ROUND_COLUMNS.values()) + " |",
        "|---:" * (3 + len(ROUND_COLUMNS)) + "|",
        *rows,
    ]


def corpus_table(counts: Dict[str, dict]) -> str:
    """The corpus's parts (`corpus.json` counts) as a table: files, speakers, minutes; trial lists: trials."""
    rows = ["| part | files | speakers | minutes | target / non-target trials |", "|---|---:|---:|---:|---:|"]
    for part, c in counts.items():
        if part == "trials" and isinstance(c, dict):
            rows += [f"| {name} | | | | {t['target']:,} / {t['nontarget']:,} |" for name, t in c.items()]
        elif isinstance(c, dict):
            minutes = f"{c['seconds'] / 60:.0f}" if "seconds" in c else ""
            files = f"{c['files']:,}" if "files" in c else ""
            rows.append(f"| {part} | {files} | {c.get('speakers', '')} | {minutes} | |")
    return "\n".join(rows)


def build_report(data: Path, runs: Path, device: str = "auto", progress: bool = True) -> Path:
    from modeling_dino_speech.evaluation.emotion import evaluate_emotion
    from modeling_dino_speech.evaluation.plots import plot_det, plot_training_curves, plot_tsne
    from modeling_dino_speech.evaluation.verification import verify_lists
    from modeling_dino_speech.model_card import merge_results, results_table, training_markdown, write_model_card

    started = time.perf_counter()
    out = runs / "eval"
    out.mkdir(parents=True, exist_ok=True)
    trials = [data / name for name in TRIAL_LISTS if (data / name).exists()]
    if not trials:
        raise FileNotFoundError(f"{data}: no trial lists ({', '.join(TRIAL_LISTS)}); build the demo corpus first")
    systems = discover_systems(runs)
    results: Dict[str, dict] = {}
    curves: Dict[str, Dict[str, object]] = {}
    for name, spec in systems.items():
        folder = out / _slug(name)
        print(f"== {name}: {spec}")
        verification = verify_lists(
            spec,
            trials,
            data,
            device=device,
            progress=progress,
            out=folder / "verification.json",
            return_curves=True,
            speaker_of=speaker_of,
        )
        for list_name, curve in verification.pop("curves").items():
            curves.setdefault(list_name, {})[name] = curve
        emotion = evaluate_emotion(spec, "demo", data, device=device, progress=progress, out=folder / "emotion.json")
        results[name] = merge_results([verification, emotion])

    figures: List[str] = []
    for list_name, by_system in curves.items():
        path = plot_det(by_system, out / f"det_{_slug(list_name)}.png", title=f"DET: {list_name}")
        figures.append(f"![DET {list_name}]({path.relative_to(runs)})")
    dino = runs / "dino"
    if (dino / "metrics.jsonl").exists():
        path = plot_training_curves(
            dino / "metrics.jsonl",
            out / "dino_training_curves.png",
            tags=[
                "loss",
                "teacher_entropy",
                "teacher_batch_entropy",
                "student_entropy",
                "kl_teacher_student",
                "teacher_momentum",
                "lr",
                "effective_rank",
                "crops_per_second",
            ],
            title="DINO training",
        )
        figures.append(f"![DINO training curves]({path.relative_to(runs)})")
    if "DINO (no labels)" in systems:
        from modeling_dino_speech.data.corpora import load_manifest
        from modeling_dino_speech.inference import embed_files, load_model

        model, fe = load_model(systems["DINO (no labels)"], device=device)
        for csv_name, title in TSNE_SETS:
            if not (data / csv_name).exists():
                continue
            table = load_manifest(data / csv_name)
            embeddings = embed_files(model, fe, list(table["path"]), progress=progress)
            path = plot_tsne(
                embeddings,
                list(table["speaker"]),
                out / f"tsne_{Path(csv_name).stem}.png",
                title=f"t-SNE of DINO embeddings: {title}",
            )
            figures.append(f"![t-SNE {title}]({path.relative_to(runs)})")

    for name, spec in systems.items():
        folder = Path(spec)
        if folder.is_dir():
            training = _read_json(folder / "training_summary.json") or _read_json(folder.parent / "report.json") or {}
            write_model_card(folder, title=f"dino-speech demo: {name}", training=training, results=results[name])

    corpus = _read_json(data / "corpus.json") or {}
    dino_summary = _read_json(dino / "final" / "training_summary.json") or {}
    lines = [
        "# dino-speech demo report",
        "",
        f"Corpus: `{data}`.",
        "",
        corpus_table(corpus.get("counts", {})),
        "",
        "Speaker verification (cosine scoring; EER in %, in brackets its 95% interval from a bootstrap over the",
        "list's speakers; minDCF at p_target 0.01) and the prosody-style emotion stand-in (micro-F1 in %, logistic",
        "regression on frozen embeddings, split by voice). Lists: *held-out real voices* = recorded speakers of",
        "Debian packages that no demo model trained on (all pairs); *real + synthetic* = those and the held-out",
        "synthetic voices in one list; *synthetic* = held-out espeak-ng/flite voices; *Asterisk voices* = the four",
        "Asterisk voices (speaker confounded with language and studio); *cross-language* = Allison Smith en vs es",
        "against the other Asterisk voices. The corpus's README.md says where every voice comes from.",
        "",
        results_table(results, measures=("eer", "micro_f1")),
        "",
        "minDCF (p_target 0.01):",
        "",
        results_table(results, measures=("min_dcf_0.01",)),
        "",
    ]
    pl = _pseudo_label_table(runs)
    if pl:
        lines += [
            "## Pseudo-label rounds",
            "",
            "Clusters of the unlabeled pool scored against the true voices (used only for this table).",
            "*threshold*: the clustering's cosine threshold (`clustering.similarity_threshold`, or the one that",
            "`clustering.kept_fraction` found); *real: kept share*: the share of the pool's recorded voices in a",
            "cluster. *DINO weight*: the share of the DINO export's weights in the round's exported network",
            "(`dino_weight`, WiSE-FT).",
            "",
            *pl,
            "",
        ]
    if dino_summary:
        lines += ["## DINO training", "", training_markdown(dino_summary), ""]
    lines += [
        "## Figures",
        "",
        *figures,
        "",
        "Checkpoints (each with a filled model card, `README.md`): "
        + ", ".join(
            f"`{Path(s).relative_to(runs) if Path(s).is_dir() else s}`" for s in systems.values() if Path(s).is_dir()
        ),
        "",
        f"Evaluation took {time.perf_counter() - started:.0f} s.",
        "",
    ]
    report = runs / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    print(results_table(results, measures=("eer", "micro_f1")))
    print(f"report: {report}")
    return report


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dino-speech demo-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="data/demo", help="the demo corpus folder")
    parser.add_argument("--runs", default="runs/demo", help="the demo's run folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    build_report(Path(args.data), Path(args.runs), args.device, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
