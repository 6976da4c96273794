"""Compiled programs kept on disk beside JAX's compilation cache, so that a run of a spec
seen before skips tracing and lowering too.

JAX's persistent cache saves the XLA compile on a hit, but its key is the lowered
program: every run still traces the model, optimizer and scanned epoch into a jaxpr and
lowers it to StableHLO (about a second of CPU for the seed experiment's programs on a
2-core machine, more than its training). Here the executable itself is serialized
(`jax.experimental.serialize_executable`) under a key made of everything the program is
a function of: jaxpipe's own source, the jax/jaxlib versions and the flags that change
what XLA builds, the devices, the caller's description of the program (the resolved spec
and plan) and the exact shapes, dtypes and shardings of the arguments. A miss, or a
file that does not load, compiles as before; nothing here can change a result.

The folder is `<jax_compilation_cache_dir>/jaxpipe-aot`, used only while the compilation
cache is on (`runtime.compilation_cache`, JAXPIPE_COMPILATION_CACHE).
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import os
import pickle
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax

from jaxpipe import settings
from jaxpipe.files import atomic_write

if TYPE_CHECKING:
    from jaxpipe.spec.sections import RuntimeSpec

__all__ = [
    "aot_folder",
    "cached_compile",
    "cached_number",
    "compiler_options",
    "enable_compilation_cache",
    "single_threaded",
    "source_digest",
    "store_number",
    "store_record",
    "stored_number",
    "stored_record",
]

# Below this many FLOPs per training step (6 × parameters × batch) an XLA:CPU program runs
# faster with Eigen's matmuls on one thread: the seed workload's 128-wide matmuls finish
# before the thread pool's hand-off pays for itself; at 447 MFLOP/step (512-wide, batch
# 256) the pool wins (benchmarks/profile_epoch.py measures both).
_CPU_SINGLE_THREAD_FLOPS = 2e8


def compiler_options(platform: str, params: int, batch: int) -> dict[str, Any]:
    """XLA options for the training programs: single-threaded Eigen for small steps on
    CPU (see _CPU_SINGLE_THREAD_FLOPS); nothing elsewhere. JAXPIPE_CPU_THREADING=multi
    or =single overrides the choice (for benchmarking)."""
    return {"xla_cpu_multi_thread_eigen": False} if single_threaded(platform, params, batch) else {}


def single_threaded(platform: str, params: int, batch: int) -> bool:
    """Whether the training programs of `params` parameters at `batch` rows a step run
    Eigen on one thread (`compiler_options`); the time model follows the same rule."""
    if platform != "cpu":
        return False
    force = settings.cpu_threading()
    small = 6 * params * batch < _CPU_SINGLE_THREAD_FLOPS
    return force == "single" or (force != "multi" and small)


_SUFFIX = ".jaxexe"
_MEMO_SIZE = 16  # executables kept in memory, most recently used last
_MEMO: collections.OrderedDict[str, Any] = collections.OrderedDict()


@functools.cache
def source_digest() -> str:
    """sha256 over jaxpipe's .py files and the versions and flags that change what is
    compiled: a changed line anywhere in the package misses every stored program."""
    h = hashlib.sha256()
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for folder, dirs, files in sorted(os.walk(package)):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    h.update(os.path.relpath(path, package).encode() + b"\0" + f.read())
    import jaxlib

    h.update(f"{jax.__version__} {jaxlib.__version__}".encode())
    for flag in ("jax_enable_x64", "jax_default_matmul_precision", "jax_default_prng_impl"):
        h.update(f"{flag}={getattr(jax.config, flag, None)}".encode())
    h.update(settings.xla_flags().encode())
    return h.hexdigest()


def enable_compilation_cache(runtime: RuntimeSpec) -> str | None:
    """JAX's persistent compilation cache on (unless `[runtime] compilation_cache` or
    JAXPIPE_COMPILATION_CACHE=0 says not); returns its folder. Here, not in the run's
    shell, so that `plan` turns it on without importing the run (flax, the stages)."""
    if not runtime.compilation_cache:
        return None
    cache = settings.compilation_cache_dir()
    if cache is None:
        return None
    jax.config.update("jax_compilation_cache_dir", cache)
    # Our programs compile in well under JAX's default 1 s threshold; cache them anyway.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return cache


def aot_folder() -> str | None:
    """Where stored programs live, or None while the compilation cache is off."""
    cache = jax.config.jax_compilation_cache_dir
    return os.path.join(cache, "jaxpipe-aot") if cache else None


def _leaf(x: Any) -> str:
    sharding = getattr(x, "sharding", None)
    return f"{getattr(x, 'shape', None)}/{getattr(x, 'dtype', type(x).__name__)}/{sharding}"


def _key(name: str, describe: str, args: tuple, options: dict[str, Any]) -> str | None:
    leaves, tree = jax.tree_util.tree_flatten(args)
    devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in jax.devices()]
    text = "\n".join(
        [source_digest(), name, describe, str(tree), *map(_leaf, leaves)]
        + [repr(sorted(options.items())), repr(devices)]
    )
    if " at 0x" in text:  # an object without a stable description: never share it
        return None
    return hashlib.sha256(text.encode()).hexdigest()


def _load(path: str) -> Any | None:
    from jax.experimental import serialize_executable

    try:
        with open(path, "rb") as f:
            payload, in_tree, out_tree, device_ids = pickle.load(f)
        by_id = {d.id: d for d in jax.devices()}
        devices = [by_id[i] for i in device_ids]  # the program's own, not every device
        return serialize_executable.deserialize_and_load(
            payload, in_tree, out_tree, execution_devices=devices
        )
    except FileNotFoundError:
        return None
    except Exception:  # a truncated or foreign file: compile instead (and overwrite it)
        return None


def _store(path: str, compiled: Any) -> None:
    from jax.experimental import serialize_executable

    try:
        devices = [d.id for d in compiled.runtime_executable().local_devices()]
        blob = pickle.dumps((*serialize_executable.serialize(compiled), devices))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, blob)
    except Exception:  # a program that cannot be serialized, a full disk: not stored
        pass


def _fresh_compile(lowered: Any, options: dict[str, Any]) -> tuple[Any, bool]:
    """(lowered.compile(options), whether the executable may be stored). An executable
    that JAX's persistent cache handed back does not survive a second serialization on
    XLA:CPU (running the reloaded copy fails with "Function ... not found"), so this
    compile is made to miss that cache (a one-off addition to its key, and no entry
    written there: the copy kept here is the one that is used), and one that was a hit
    anyway (another thread, a changed JAX) is not stored."""
    try:  # JAX internals: a JAX without them compiles plainly and stores nothing
        from jax._src import cache_key, config, monitoring

        hook, no_put = cache_key.custom_hook, config.persistent_cache_min_compile_time_secs
        register, unregister = (
            monitoring.register_event_listener,
            monitoring.unregister_event_listener,
        )
    except (ImportError, AttributeError):
        return lowered.compile(options), False
    hits: list[str] = []

    def listen(event: str, **_: Any) -> None:
        if event == "/jax/compilation_cache/cache_hits":
            hits.append(event)

    nonce = os.urandom(16).hex()
    register(listen)
    cache_key.custom_hook = lambda: f"{hook()}jaxpipe-aot-{nonce}"
    try:
        with no_put(float("inf")):
            compiled = lowered.compile(options)
    finally:
        cache_key.custom_hook = hook
        unregister(listen)
    return compiled, not hits


def cached_compile(
    name: str,
    lower: Callable[..., Any],
    args: tuple,
    options: dict[str, Any],
    describe: str,
) -> Any:
    """`lower(*args).compile(options)`, or the same executable from this process's
    memory or loaded from disk.

    `describe` must name everything the program depends on besides jaxpipe's source and
    the arguments' shapes, dtypes and shardings (the resolved spec, the plan); `args`
    may hold arrays or jax.ShapeDtypeStruct. Programs with host callbacks must not come
    here (their callbacks do not survive serialization)."""
    key = _key(name, describe, args, options) if jax.process_count() == 1 else None
    if key is None:
        return lower(*args).compile(options)
    if key in _MEMO:  # compiled already in this process (the API, tests, repeated traces)
        _MEMO.move_to_end(key)
        return _MEMO[key]
    folder = aot_folder()
    path = os.path.join(folder, f"{name}-{key}{_SUFFIX}") if folder else None
    compiled = _load(path) if path else None
    if compiled is None and path is None:
        compiled = lower(*args).compile(options)
    elif compiled is None:
        compiled, storable = _fresh_compile(lower(*args), options)
        if storable:
            _store(path, compiled)
    _MEMO[key] = compiled
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return compiled


_NUMBERS: dict[tuple[str, str], int] = {}


def cached_number(name: str, describe: str, compute: Callable[[], int]) -> int:
    """compute(), kept on disk under `describe` (everything the number depends on besides
    jaxpipe's source, the versions and the devices): for figures read from a compile,
    such as the planner's optimizer-update temporaries, that every run would otherwise
    compile again. Also kept in this process's memory (many small fits in one process,
    scikit-learn's estimator checks, compile it once), with or without the cache."""
    memo = (name, describe) if jax.process_count() == 1 else None
    if memo in _NUMBERS:
        return _NUMBERS[memo]
    value = stored_number(name, describe)
    if value is None:
        value = int(compute())
        store_number(name, describe, value)
    if memo is not None:
        _NUMBERS[memo] = value
    return value


def _number_path(name: str, describe: str, suffix: str = ".txt") -> str | None:
    """Where a number or record is kept; None while the compilation cache is off, by
    JAX's setting or by JAXPIPE_COMPILATION_CACHE=0 now (a process that turned the cache
    on for a run and then off for a plan reads and writes nothing)."""
    folder = aot_folder()
    if folder is None or settings.compilation_cache_dir() is None or jax.process_count() != 1:
        return None
    key = _key(name, describe, (), {})
    return None if key is None else os.path.join(folder, f"{name}-{key}{suffix}")


def stored_number(name: str, describe: str) -> int | None:
    """The number `cached_number` kept under (name, describe), or None (not kept, the
    compilation cache is off, or the file is not a count: a damaged file is recomputed)."""
    path = _number_path(name, describe)
    if path is None:
        return None
    try:
        with open(path) as f:
            value = int(f.read())
    except (OSError, ValueError):
        return None
    return value if value >= 0 else None


def store_number(name: str, describe: str, value: int) -> None:
    """Keeps `value` for `stored_number` (nothing without the compilation cache)."""
    _write(_number_path(name, describe), str(int(value)))


def stored_record(name: str, describe: str) -> dict[str, Any] | None:
    """The JSON object `store_record` kept under (name, describe), or None (not kept, the
    compilation cache is off, or the file is not a JSON object). The caller checks its
    fields: a record that does not hold what it should is computed again."""
    path = _number_path(name, describe, ".json")
    if path is None:
        return None
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return value if isinstance(value, dict) else None


def store_record(name: str, describe: str, value: dict[str, Any]) -> None:
    """Keeps the JSON object `value` for `stored_record` (nothing without the
    compilation cache): figures read from one compile, kept together so that they are
    read back together or not at all."""
    _write(_number_path(name, describe, ".json"), json.dumps(value))


def _write(path: str | None, text: str) -> None:
    if path is None:
        return
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, text)
    except Exception:  # a full disk or a read-only cache: the figure is still right
        pass
