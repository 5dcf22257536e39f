"""`python -m eval.demo_report ...` is `dino-speech demo-report ...` (see `dino-speech demo-report --help`)."""

import sys

from modeling_dino_speech.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo-report", *sys.argv[1:]]))
