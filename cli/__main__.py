"""``python -m hvae_compress.cli``: the same as the ``hvae-compress`` command."""

import sys

from .main import main

sys.exit(main())
