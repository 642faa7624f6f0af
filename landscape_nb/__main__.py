"""``python -m landscape_nb``: the ``landscape-nb`` command (as ``python -m landscape_nb.cli``)."""
import sys

from .cli import main

if __name__ == "__main__":  # client="local" spawns workers that import this module again
    sys.exit(main())
