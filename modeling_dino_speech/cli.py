"""The ``dino-speech`` command: training, embedding, evaluation and the demo, one subcommand each.

    dino-speech train dino --config configs/demo.yaml [--resume] [key=value ...]
    dino-speech train pseudo-label --config configs/pseudo_label_demo.yaml --init DIR [key=value ...]
    dino-speech similarity MODEL a.wav b.wav [--threshold T]          (score and same-speaker decision)
    dino-speech score    --model DIR --pairs LIST --out scores.txt     (one score per pair; metrics if labelled)
    dino-speech enroll   --model DIR --gallery SPEAKER_FOLDERS_OR_CSV --out gallery.npz
    dino-speech identify --gallery gallery.npz QUERY [QUERY ...] [--top-k 5]
    dino-speech embed   --model DIR --input FILE_FOLDER_OR_MANIFEST --out embeddings.parquet [--window 10 --hop 5]
    dino-speech verify  --model DIR --trials FILE [FILE ...] --audio-root DIR [--out results.json]
    dino-speech export-onnx MODEL out.onnx                              (waveform in, embedding out)
    dino-speech emotion --model DIR --corpus {iemocap,crema_d,msp_podcast,demo} --root DIR
    dino-speech report  --model DIR --results results.json [...]     (model card)
    dino-speech plots   {tsne,training} ...
    dino-speech demo-corpus --out data/demo
    dino-speech demo-report --data data/demo --runs runs/demo

This module sits on top of the package: it is the one place that joins training to evaluation (the recipe's
``eval`` section becomes the evaluator hook that training calls). ``accelerate launch train.py ...`` and
``python -m eval.<name> ...`` in the repository are thin aliases of these subcommands.

A user error (a missing or unreadable file, a malformed list, a model that cannot be loaded) is one line,
``dino-speech: error: <file>: <problem>``, with exit status 2; ``--debug`` (anywhere on the line, or
``DINO_SPEECH_DEBUG=1``) shows the traceback instead. A checkpoint's own Python code runs only with
``--trust-remote-code``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

#: subcommand -> (module whose `main(argv)` runs it, or "module:function", one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "similarity": ("modeling_dino_speech.speaker_cli:similarity_main", "score two files: same speaker or not"),
    "score": ("modeling_dino_speech.speaker_cli:score_main", "one score per pair of a list (metrics if labelled)"),
    "enroll": ("modeling_dino_speech.speaker_cli:enroll_main", "a gallery of speakers from labelled files"),
    "identify": ("modeling_dino_speech.speaker_cli:identify_main", "the closest gallery speakers of a query"),
    "embed": ("modeling_dino_speech.inference", "utterance embeddings of a file, a folder or a manifest"),
    "verify": ("modeling_dino_speech.evaluation.verification", "EER / minDCF on trial lists"),
    "emotion": ("modeling_dino_speech.evaluation.emotion", "emotion recognition from frozen embeddings"),
    "report": ("modeling_dino_speech.model_card", "fill a checkpoint's model card, or compare systems"),
    "plots": ("modeling_dino_speech.evaluation.plots", "t-SNE maps and training curves"),
    "demo-corpus": ("modeling_dino_speech.recipes.demo.corpus", "build the offline demo corpus"),
    "demo-report": ("modeling_dino_speech.recipes.demo.report", "evaluate every demo system and write report.md"),
    "export-onnx": ("modeling_dino_speech.onnx_export", "ONNX model with the fbank inside: waveform -> embedding"),
}


def _train_parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="DINO pre-training and iterative pseudo-labelling. Overrides are `section.key=value` "
        "(or a bare key when unambiguous, e.g. `max_steps=50`); values are YAML. A plain run is one process; "
        "`accelerate launch` runs several.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dino = sub.add_parser("dino", help="DINO self-supervised pre-training")
    dino.add_argument("--config", required=True, help="YAML recipe (configs/*.yaml)")
    dino.add_argument("--output_dir", help="overrides output_dir of the recipe")
    dino.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    dino.add_argument("overrides", nargs="*", help="key=value settings that override the recipe")
    pseudo = sub.add_parser("pseudo-label", help="iterative pseudo-labelling from a DINO checkpoint")
    pseudo.add_argument("--config", required=True)
    pseudo.add_argument("--init", help="DINO export to start from (<dino output_dir>/final)")
    pseudo.add_argument("--output_dir")
    pseudo.add_argument("--resume", action="store_true", help="skip rounds whose final/ checkpoint exists")
    pseudo.add_argument("overrides", nargs="*")
    return parser


def _evaluator(eval_cfg) -> Optional[Callable]:
    """The recipe's `eval` section as the hook training calls (None when it names no trial list)."""
    if not eval_cfg.trials:
        return None
    from .evaluation.verification import trial_list_evaluator

    return trial_list_evaluator(eval_cfg.trials, eval_cfg.audio_root)


def train(argv: Sequence[str], prog: str = "dino-speech train") -> int:
    """`dino-speech train dino|pseudo-label ...` (also what `train.py` runs)."""
    args = _train_parser(prog).parse_args(list(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from .training.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        if args.command == "dino":
            from .training.config import DinoTrainConfig
            from .training.dino import train_dino

            cfg = load_config(DinoTrainConfig, args.config, overrides)
            train_dino(cfg, resume=args.resume, evaluator=_evaluator(cfg.eval))
        else:
            from .training.pseudo_label import PseudoLabelConfig, run_pseudo_labelling

            if args.init:
                overrides.append(f"init={args.init}")
            cfg = load_config(PseudoLabelConfig, args.config, overrides)
            run_pseudo_labelling(cfg, resume=args.resume, evaluator=_evaluator(cfg.eval))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was saved is what a traceback would not add to
        what = "the last checkpoint" if args.command == "dino" else "the last finished round"
        print(f"\ninterrupted: run the same command with --resume to continue from {what}", file=sys.stderr)
        return 130
    return 0


def _usage() -> str:
    rows = [("train", "DINO pre-training (train dino) and pseudo-labelling (train pseudo-label)")]
    rows += [(name, text) for name, (_, text) in COMMANDS.items()]
    width = max(len(name) for name, _ in rows)
    lines = [
        "usage: dino-speech [--debug] <command> [options]   (dino-speech <command> --help for its options)",
        "",
        "commands:",
    ] + [f"  {name:<{width}}  {text}" for name, text in rows]
    return "\n".join(lines)


def _runner(command: str) -> Callable[[List[str]], Optional[int]]:
    target = COMMANDS[command][0]
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function or "main")


def error_line(err: BaseException) -> str:
    """A user error as the one line the command prints: ``<file>: <problem>`` where the error names a file."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{os.fspath(err.filename)}: {err.strerror[0].lower() + err.strerror[1:]}"
    text = str(err).strip() or type(err).__name__
    if isinstance(err, KeyError):  # str(KeyError) quotes its argument
        text = str(err.args[0]) if err.args else text
    return text


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DINO_SPEECH_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command != "train" and command not in COMMANDS:
        print(f"dino-speech: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    try:
        if command == "train":
            return train(rest)
        return int(_runner(command)(rest) or 0)
    except (OSError, ValueError, ImportError) as err:  # what a user can fix; anything else keeps its traceback
        if debug:
            raise
        print(f"dino-speech: error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
