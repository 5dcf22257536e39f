"""`python -m eval.plots ...` is `dino-speech plots ...` (see `dino-speech plots --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["plots", *sys.argv[1:]]))
