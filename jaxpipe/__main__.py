"""`python -m jaxpipe`: the same as the `jaxpipe` command."""

import sys

from jaxpipe.cli.main import main

sys.exit(main())
