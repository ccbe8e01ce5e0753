"""``python -m wise_perception.replay``: :func:`.cli.main`."""

import sys

from .cli import main

sys.exit(main())
