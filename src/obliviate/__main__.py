"""``python -m obliviate``: the same as the ``obliviate`` command."""

import sys

from .cli import main

sys.exit(main())
