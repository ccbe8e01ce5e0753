"""``python -m wise_training`` is ``python -m wise_training.train``."""

import sys

from .train import main

sys.exit(main())
