"""`python -m dype_rope`: the `dype-rope` command line; with no command it runs the demo."""

import sys

from .cli import main

sys.exit(main())
