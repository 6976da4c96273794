"""`jaxpipe launch`: a multi-host rehearsal on one machine. Spawns N local processes of
`jaxpipe run` that join one `jax.distributed` job on 127.0.0.1 (gloo collectives between
CPU processes), so a sharded, multi-process configuration runs end to end before anyone
pays for a cluster."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO

from jaxpipe import settings

__all__ = ["launch"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Lines the collective library prints as processes connect ("[Gloo] Rank 0 is connected
# to 1 peer ranks..."): noise in the report; kept with JAXPIPE_VERBOSE_COLLECTIVES=1.
_CHATTER = (b"[Gloo]",)


def _forward(src: IO[bytes], dest: IO[str], keep_chatter: bool) -> None:
    """Copies a child's output line by line, without the collective library's chatter."""
    for line in iter(src.readline, b""):
        if keep_chatter or not line.lstrip().startswith(_CHATTER):
            dest.write(line.decode(errors="replace"))
            dest.flush()
    src.close()


def _env(cpu_devices_per_process: int | None) -> dict[str, str]:
    env = settings.environment()
    if cpu_devices_per_process:
        flags = " ".join(
            f
            for f in env.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
        )
        env["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={cpu_devices_per_process}"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


def _wait(procs: list[subprocess.Popen], timeout: float | None) -> int:
    """The job's status: the first failing process's, else 0."""
    deadline = None if timeout is None else time.monotonic() + timeout
    status = 0
    while procs:
        for p in list(procs):
            code = p.poll()
            if code is None:
                continue
            procs.remove(p)
            if code != 0 and status == 0:
                status = code
                # One failed: the others would wait in a collective forever.
                for other in procs:
                    other.kill()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"launch: processes still running after {timeout} s")
        time.sleep(0.05)
    return status


def launch(
    spec_path: str,
    processes: int,
    *,
    cpu_devices_per_process: int | None = None,
    run_args: Sequence[str] = (),
    timeout: float | None = None,
) -> int:
    """Runs `jaxpipe run SPEC *run_args` as `processes` local processes of one job and
    returns the job's exit status (the first failing process's, else 0).

    Process 0 prints the report and writes the run directory; the others print only
    errors. With `cpu_devices_per_process`, each process runs on that many simulated CPU
    devices (XLA's host-platform device count); otherwise on its default backend. The
    collective library's connection lines are dropped from what they print.
    """
    if processes < 1:
        raise ValueError("processes must be ≥ 1")
    coordinator = f"127.0.0.1:{_free_port()}"
    keep = settings.verbose_collectives()
    env = _env(cpu_devices_per_process)
    procs, pumps = [], []
    for pid in range(processes):
        cmd = [sys.executable, "-m", "jaxpipe", "run", spec_path, *run_args]
        cmd += ["--coordinator", coordinator, "--num-processes", str(processes)]
        cmd += ["--process-id", str(pid)] + (["--quiet"] if pid > 0 else [])
        p = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE if pid == 0 else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        streams = [(p.stderr, sys.stderr)] + ([(p.stdout, sys.stdout)] if pid == 0 else [])
        for src, dest in streams:
            t = threading.Thread(target=_forward, args=(src, dest, keep), daemon=True)
            t.start()
            pumps.append(t)
        procs.append(p)
    try:
        return _wait(procs, timeout)
    finally:
        for p in procs:
            p.kill()
        for t in pumps:  # the last lines reach the terminal before the status returns
            t.join(timeout=5)
