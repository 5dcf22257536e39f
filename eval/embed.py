"""`python -m eval.embed ...` is `dino-speech embed ...` (see `dino-speech embed --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
