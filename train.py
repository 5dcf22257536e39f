#!/usr/bin/env python
"""Train dino-speech models: the repository's entry point for `accelerate launch`.

    accelerate launch train.py dino --config configs/demo.yaml [--output_dir DIR] [--resume] [key=value ...]
    accelerate launch train.py pseudo-label --config configs/pseudo_label_demo.yaml [--init DIR] [key=value ...]

The same as `dino-speech train ...` (the package's console script). A plain `python train.py ...` runs one
process; `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 train.py ...` runs two real CPU processes.
"""

import sys

from modeling_dino_speech.cli import train

if __name__ == "__main__":
    sys.exit(train(sys.argv[1:], prog="train.py"))
