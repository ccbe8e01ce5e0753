"""``python -m wise_dev.reproduce``: see :mod:`wise_dev.reproduce.run`."""

from .run import main

raise SystemExit(main())
