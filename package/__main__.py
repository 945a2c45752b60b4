"""``python -m hvae_compress``: the same as the ``hvae-compress`` command."""

import sys

from .cli.main import main

sys.exit(main())
