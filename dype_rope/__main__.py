"""`python -m dype_rope`: the `dype-rope` command line (dype_rope.app); with no command it runs the demo."""

import sys

from .app.cli import main

sys.exit(main())
