"""``python -m handseg ...`` = the ``handseg`` command (for torchrun, srun and plain Python)."""

import sys

from handseg.app.cli import main

sys.exit(main())
