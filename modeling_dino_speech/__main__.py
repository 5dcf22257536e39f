"""`python -m modeling_dino_speech ...` is the `dino-speech` command."""

import sys

from .cli import main

sys.exit(main())
