"""``python -m cnnprov.cli``: the ``cnnprov`` command."""

import sys

from cnnprov.cli import main

sys.exit(main())
