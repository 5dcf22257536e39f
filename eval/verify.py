"""`python -m eval.verify ...` is `dino-speech verify ...` (see `dino-speech verify --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["verify", *sys.argv[1:]]))
