"""`python -m eval.emotion ...` is `dino-speech emotion ...` (see `dino-speech emotion --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["emotion", *sys.argv[1:]]))
