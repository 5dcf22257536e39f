#!/usr/bin/env python
"""Train dino-speech models.

    accelerate launch train.py dino --config configs/demo.yaml [--output_dir DIR] [--resume] [key=value ...]
    accelerate launch train.py pseudo-label --config configs/pseudo_label_demo.yaml [--init DIR] [key=value ...]

A plain `python train.py ...` runs one process; `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 train.py ...`
runs two real CPU processes. Overrides are `section.key=value` (or a bare key when unambiguous, e.g.
`max_steps=50`); values are YAML.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from modeling_dino_speech.training.config import load_config

    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"output_dir={args.output_dir}")
    try:
        if args.command == "dino":
            from modeling_dino_speech.training.config import DinoTrainConfig
            from modeling_dino_speech.training.dino import train_dino

            train_dino(load_config(DinoTrainConfig, args.config, overrides), resume=args.resume)
        else:
            from modeling_dino_speech.training.pseudo_label import PseudoLabelConfig, run_pseudo_labelling

            if args.init:
                overrides.append(f"init={args.init}")
            run_pseudo_labelling(load_config(PseudoLabelConfig, args.config, overrides), resume=args.resume)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what was saved is what a traceback would not add to
        what = "the last checkpoint" if args.command == "dino" else "the last finished round"
        print(f"\ninterrupted: run the same command with --resume to continue from {what}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
