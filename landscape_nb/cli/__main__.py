"""``python -m landscape_nb.cli``: the ``landscape-nb`` command."""
import sys

from . import main

if __name__ == "__main__":  # client="local" spawns workers that import this module again
    sys.exit(main())
