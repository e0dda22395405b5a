"""``python -m tunelab``: the CLI, also what ``accelerate launch -m tunelab train ...`` and
``torchrun -m tunelab train ...`` start in every process (tunelab/train/distributed.py)."""

import sys

from tunelab.cli.entry import main

if __name__ == "__main__":
    sys.exit(main())
