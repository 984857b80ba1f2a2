"""``python -m hoshikage_core.cli``: the ``hoshikage`` command."""

import sys

from . import main

sys.exit(main())
