"""``python -m wise_perception.node``: run the lifecycle node (:func:`.lifecycle.main`)."""

import sys

from .lifecycle import main

sys.exit(main())
