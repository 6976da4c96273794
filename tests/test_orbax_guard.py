"""What jaxpipe drops from orbax's noise after a damaged checkpoint, and only that: the
one-line warning is the run's; asyncio's "Task exception was never retrieved" for orbax's
abandoned reads (logged whenever the collector frees them) must not reach the user, and
anything else asyncio logs must."""

import logging

from jaxpipe.runner.orbax_guard import drop_loop_closed_tracebacks


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_only_orbax_unretrieved_reads_are_dropped():
    drop_loop_closed_tracebacks()
    drop_loop_closed_tracebacks()  # installed once, however many stores open
    log = logging.getLogger("asyncio")
    keep = _Keep()
    log.addHandler(keep)
    try:
        orbax = (
            "future: <Task finished coro=<async_deserialize() done, defined at /v/orbax/s.py:9>>"
        )
        log.error("Task exception was never retrieved\n" + orbax)
        tensorstore = (
            "future: <Future finished exception=ValueError('OUT_OF_RANGE: Error opening "
            '"zarr" driver: Error reading "state.step/.zarray" in OCDBT database at ...\')>'
        )
        log.error("Future exception was never retrieved\n" + tensorstore)
        log.error("Task exception was never retrieved\nfuture: <Task finished coro=<mine()>>")
        log.error("something else about orbax")
        # A save that hit a full disk: asyncio.run() reports orbax's write tasks as it
        # shuts its loop down (test_defect_09 met it once in ~6 full runs); a task of
        # anyone else's at shutdown still reaches the user.
        full = (
            "task: <Task finished name='Task-42' coro=<async_serialize_from_host() done, "
            "defined at /v/orbax/checkpoint/serialization.py:187> exception=ValueError("
            '\'RESOURCE_EXHAUSTED: Error writing "x" in OCDBT database at local file: '
            "No space left on device [os_error_code=28]')>"
        )
        log.error("unhandled exception during asyncio.run() shutdown\n" + full)
        log.error("unhandled exception during asyncio.run() shutdown\ntask: <Task coro=<mine()>>")
    finally:
        log.removeHandler(keep)
    assert keep.messages == [
        "Task exception was never retrieved\nfuture: <Task finished coro=<mine()>>",
        "something else about orbax",
        "unhandled exception during asyncio.run() shutdown\ntask: <Task coro=<mine()>>",
    ]
    assert sum(type(f).__name__ == "UnretrievedReadFilter" for f in log.filters) == 1
