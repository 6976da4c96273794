"""On a child process's PYTHONPATH (tests/faults.py `fault_env`): installs the fault
named by $JAXPIPE_TEST_HOOK before the program runs. Nothing happens without it."""

import os
import sys

if os.environ.get("JAXPIPE_TEST_HOOK"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import faults

    faults.install(os.environ["JAXPIPE_TEST_HOOK"])
