"""``python -m landscape_nb.cli``: the ``landscape-nb`` command."""
import sys

from . import main

sys.exit(main())
