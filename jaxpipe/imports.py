"""Libraries a run imports on first use, one import at a time.

A run imports orbax on its checkpoint writer thread (overlapping the compile) and flax on
the main thread where it traces the model (a cold cache). Both import jax.extend, from
different entry points (flax.core.axes_scan; jax.experimental.colocated_python for
orbax's multihost dispatchers), and two threads importing overlapping module graphs can
each hold a module lock the other needs: CPython then raises `_DeadlockError` in one of
them (CI saw it once: `deadlock detected by _ModuleLock('jax.extend.backend')` in the
resume check of diabetes.toml). Every such import goes through `import_heavy`, which
holds one lock for the whole import, so they run one after the other.
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

__all__ = ["import_heavy"]

_LOCK = threading.RLock()  # re-entrant: one such import may start another


def import_heavy(name: str) -> ModuleType:
    """`importlib.import_module(name)`, never beside another `import_heavy` on another
    thread. A module already imported, and not still being imported, is returned at once
    (it needs no lock, and waiting for another thread's import would cost a warm run)."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if module is not None and not getattr(spec, "_initializing", False):
        return module
    with _LOCK:
        return importlib.import_module(name)
