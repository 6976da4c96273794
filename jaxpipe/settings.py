"""The environment variables jaxpipe reads, each through one small typed function: the
one place below the public face that touches `os.environ`. Every function reads at call
time (nothing is cached at import), so a variable set after `import jaxpipe`, or by a
test's monkeypatch, counts.

jaxpipe's own knobs:

- JAXPIPE_COMPILATION_CACHE (default on): "0", "false", "no" or "off" turns JAX's
  persistent compilation cache and jaxpipe's stored executables off.
- JAXPIPE_CACHE_DIR: the compilation cache's folder (default
  `$XDG_CACHE_HOME/jaxpipe/xla`, XDG_CACHE_HOME defaulting to `~/.cache`).
- JAXPIPE_PROFILE_DIR: where `jaxpipe calibrate` keeps device profiles and `plan` reads
  them (default `$XDG_CACHE_HOME/jaxpipe/profiles`).
- JAXPIPE_CPU_THREADING: "single" or "multi" forces Eigen's threading for the training
  programs on CPU (benchmarking); unset, jaxpipe chooses by the step's size.
- JAXPIPE_PLAIN: set to anything but "", "0", "false" or "no": plain console lines, no
  colour or live display (`--plain` sets it, so launched processes inherit it).
- JAXPIPE_DEBUG: set (non-empty): the CLI re-raises an internal error with its traceback.
- JAXPIPE_VERBOSE_COLLECTIVES: set to anything but "" or "0": `jaxpipe launch` keeps the
  collective library's connection lines.
- JAXPIPE_COORDINATOR, JAXPIPE_NUM_PROCESSES, JAXPIPE_PROCESS_ID: a multi-process run's
  coordinator HOST:PORT, process count and this process's index (as `--coordinator`,
  `--num-processes`, `--process-id`).
- JAXPIPE_DISTRIBUTED: "auto" (any case): join a multi-process run JAX detects (SLURM,
  Open MPI, Kubernetes).

Other tools' variables jaxpipe reads or sets:

- XLA_FLAGS: part of the stored executables' key; launched and verifying child
  processes get it with their own simulated device count.
- XLA_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_MEM_FRACTION, XLA_PYTHON_CLIENT_ALLOCATOR,
  XLA_PYTHON_CLIENT_PREALLOCATE: how jaxlib sizes a GPU's memory pool, which the planner
  follows (`planner.hardware.pool_rule`).
- NO_COLOR: set (non-empty): no colour in the console. TERM=dumb: plain console lines.
- MLFLOW_ALLOW_FILE_STORE: set to "true" (unless already set) when `[logging] mlflow`
  names a file store, MLflow 3's opt-in for it.
- MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_HTTP_REQUEST_MAX_RETRIES: set (unless already set)
  before an MLflow server is reached, so an unreachable tracking URI fails in seconds.

Above the face, `jaxpipe.testing` also reads CI and HYPOTHESIS_PROFILE, and `jaxpipe
check` sets variables for the child processes it starts.
"""

from __future__ import annotations

import os
from typing import Literal

__all__ = [
    "allow_mlflow_file_store",
    "compilation_cache_dir",
    "coordinator",
    "cpu_threading",
    "debug",
    "distributed_auto",
    "dumb_terminal",
    "environment",
    "gpu_allocator",
    "gpu_mem_fractions",
    "gpu_preallocate",
    "no_color",
    "num_processes",
    "plain_console",
    "process_id",
    "profile_dir",
    "set_plain_console",
    "verbose_collectives",
    "xla_flags",
]

_OFF = ("0", "false", "no", "off")


def compilation_cache_dir() -> str | None:
    """JAXPIPE_COMPILATION_CACHE (default "1"; "0"/"false"/"no"/"off", any case: None)
    and JAXPIPE_CACHE_DIR (default `$XDG_CACHE_HOME/jaxpipe/xla`, XDG_CACHE_HOME
    defaulting to `~/.cache`): the persistent compilation cache's folder, None if off."""
    if os.environ.get("JAXPIPE_COMPILATION_CACHE", "1").strip().lower() in _OFF:
        return None
    return os.environ.get("JAXPIPE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxpipe", "xla"
    )


def profile_dir() -> str:
    """JAXPIPE_PROFILE_DIR (default `$XDG_CACHE_HOME/jaxpipe/profiles`, XDG_CACHE_HOME
    defaulting to `~/.cache`): the folder of the device profiles `jaxpipe calibrate`
    writes and `jaxpipe plan` reads."""
    return os.environ.get("JAXPIPE_PROFILE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "jaxpipe", "profiles"
    )


def cpu_threading() -> Literal["single", "multi"] | None:
    """JAXPIPE_CPU_THREADING (default unset: None, jaxpipe chooses): "single" or "multi"
    (any case) forces Eigen's threading on CPU; any other value is None too."""
    force = os.environ.get("JAXPIPE_CPU_THREADING", "").strip().lower()
    return "single" if force == "single" else "multi" if force == "multi" else None


def plain_console() -> bool:
    """JAXPIPE_PLAIN (default unset: False): plain console lines unless it is "", "0",
    "false" or "no" (any case)."""
    value = os.environ.get("JAXPIPE_PLAIN", "").strip().lower()
    return value not in ("", "0", "false", "no")


def set_plain_console() -> None:
    """Sets JAXPIPE_PLAIN=1 (`--plain`), so that the processes `launch` starts inherit it."""
    os.environ["JAXPIPE_PLAIN"] = "1"


def dumb_terminal() -> bool:
    """TERM (default unset: False): True for exactly "dumb", a terminal without control
    sequences."""
    return os.environ.get("TERM") == "dumb"


def no_color() -> bool:
    """NO_COLOR (default unset: False): any non-empty value turns colour off."""
    return bool(os.environ.get("NO_COLOR"))


def debug() -> bool:
    """JAXPIPE_DEBUG (default unset: False): any non-empty value shows an internal error's
    traceback."""
    return bool(os.environ.get("JAXPIPE_DEBUG"))


def verbose_collectives() -> bool:
    """JAXPIPE_VERBOSE_COLLECTIVES (default unset: False): True unless "" or "0" (as
    written): `launch` keeps the collective library's connection lines."""
    return os.environ.get("JAXPIPE_VERBOSE_COLLECTIVES", "") not in ("", "0")


def xla_flags() -> str:
    """XLA_FLAGS (default ""): the flags XLA reads, as written."""
    return os.environ.get("XLA_FLAGS", "")


def gpu_mem_fractions() -> dict[str, str]:
    """XLA_CLIENT_MEM_FRACTION then XLA_PYTHON_CLIENT_MEM_FRACTION (jaxlib's order; default
    ""): {variable: its value stripped}, unparsed (the planner checks them)."""
    names = ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION")
    return {v: os.environ.get(v, "").strip() for v in names}


def gpu_allocator() -> str:
    """XLA_PYTHON_CLIENT_ALLOCATOR (default "default"): the GPU client's allocator,
    stripped and lower-cased, unchecked (the planner checks it)."""
    return os.environ.get("XLA_PYTHON_CLIENT_ALLOCATOR", "default").strip().lower()


def gpu_preallocate() -> bool:
    """XLA_PYTHON_CLIENT_PREALLOCATE (default unset: True): False for exactly "false",
    "False" or "0" (stripped), as jaxlib parses it."""
    raw = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").strip()
    return raw not in ("false", "False", "0")


def coordinator() -> str | None:
    """JAXPIPE_COORDINATOR (default unset: None): process 0's HOST:PORT, as written."""
    return os.environ.get("JAXPIPE_COORDINATOR")


def _int_or_none(name: str) -> int | None:
    raw = os.environ.get(name)
    return int(raw) if raw else None


def num_processes() -> int | None:
    """JAXPIPE_NUM_PROCESSES (default unset or empty: None): the processes in the job;
    ValueError if it is not an integer."""
    return _int_or_none("JAXPIPE_NUM_PROCESSES")


def process_id() -> int | None:
    """JAXPIPE_PROCESS_ID (default unset or empty: None): this process's index; ValueError
    if it is not an integer."""
    return _int_or_none("JAXPIPE_PROCESS_ID")


def distributed_auto() -> bool:
    """JAXPIPE_DISTRIBUTED (default unset: False): True for "auto" (any case), a
    multi-process run that JAX detects."""
    return os.environ.get("JAXPIPE_DISTRIBUTED", "").lower() == "auto"


def environment() -> dict[str, str]:
    """The whole environment (a copy), for a child process's `env`."""
    return dict(os.environ)


def allow_mlflow_file_store() -> None:
    """Sets MLFLOW_ALLOW_FILE_STORE=true unless it is set already: MLflow 3's opt-in to its
    file store."""
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def bound_mlflow_requests(timeout_s: int = 10, retries: int = 1) -> None:
    """Sets MLFLOW_HTTP_REQUEST_TIMEOUT and MLFLOW_HTTP_REQUEST_MAX_RETRIES unless set:
    MLflow's defaults (120 s, 7 retries with backoff) kept a dead tracking server
    retrying for minutes; a tracker's failure is bounded in time."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
