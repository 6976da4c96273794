"""`python -m jaxpipe`: the same as the `jaxpipe` command."""

import sys

from jaxpipe.cli import main

sys.exit(main())
