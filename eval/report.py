"""`python -m eval.report ...` is `dino-speech report ...` (see `dino-speech report --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["report", *sys.argv[1:]]))
