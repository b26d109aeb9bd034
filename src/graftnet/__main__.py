"""``python -m graftnet`` (and ``torchrun -m graftnet``) run the graftnet command."""

import sys

from graftnet.cli import main

sys.exit(main())
