"""`python -m runtime_signals.cli`: the `signals` command, for child processes of the tests and the demo."""

import sys

from runtime_signals.cli import main

sys.exit(main())
