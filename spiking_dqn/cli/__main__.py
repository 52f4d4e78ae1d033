"""``python -m spiking_dqn.cli``: the ``spiking-dqn`` command."""

import sys

from spiking_dqn.cli import main

sys.exit(main())
