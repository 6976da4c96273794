"""`jaxpipe` on the command line: argument parsing and exit codes over the public API.

Exit status: 0 success; 1 internal error; 2 bad input (one `error: ...` line, no
traceback) or a busy run directory; 3 training diverged; 4 the disk is full or a file
cannot be written; 130 / 143 stopped by SIGINT / SIGTERM after a checkpoint (continue
with --resume), or before training started (nothing saved).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
from collections.abc import Sequence

from jaxpipe import settings
from jaxpipe.cli.args import UsageError, build_parser

__all__ = ["main"]


def _cmd_init(args: argparse.Namespace) -> int:
    import jaxpipe

    spec, data = jaxpipe.init_project(args.name, args.example)
    if args.quiet:
        print(spec)
    else:
        print(f"wrote {spec} and {data}\nnext: jaxpipe run {spec}")
    return 0


def _level(args: argparse.Namespace) -> int:
    """0 quiet, 1 normal, 2 verbose."""
    return 0 if args.quiet else 2 if args.verbose else 1


def _cmd_run(args: argparse.Namespace) -> int:
    import jaxpipe

    spec = jaxpipe.load_spec(args.spec, args.overrides)
    if args.force and not args.resume and spec.sweep is None:
        raise jaxpipe.JaxpipeError("--force only applies with --resume (or to a [sweep])")
    if args.plain:  # an environment variable, so that launch's processes inherit it
        settings.set_plain_console()
    distributed = jaxpipe.distributed_config(args.coordinator, args.num_processes, args.process_id)
    if distributed is not None:
        if args.out is None:
            raise jaxpipe.JaxpipeError(
                "a multi-process run needs --out DIR, the same directory for every process"
            )
        jaxpipe.initialize_distributed(**distributed)
    try:
        result = jaxpipe.run(
            spec, out=args.out, verbose=_level(args), resume=args.resume, force=args.force
        )
    except jaxpipe.RunInterrupted as e:  # the resume hint names this spec, not "SPEC"
        again = shlex.join(["jaxpipe", "run", args.spec, *_set_args(args.overrides)])
        raise jaxpipe.RunInterrupted(
            str(e).replace("jaxpipe run SPEC", again), e.exit_code
        ) from None
    if args.quiet:
        print(result.run_dir)  # scripts read the run directory from the last line
    return 0


def _set_args(overrides: Sequence[str]) -> list[str]:
    return [a for item in overrides for a in ("--set", item)]


def _cmd_launch(args: argparse.Namespace) -> int:
    import jaxpipe

    if args.processes < 1:
        raise jaxpipe.JaxpipeError(f"--processes must be ≥ 1, found {args.processes}")
    if args.cpu_devices_per_process is not None and args.cpu_devices_per_process < 1:
        raise jaxpipe.JaxpipeError("--cpu-devices-per-process must be ≥ 1")
    spec = jaxpipe.load_spec(args.spec, args.overrides)  # check once, before spawning
    out = args.out or jaxpipe.default_out_dir(spec)
    run_args = ["--out", out, *_set_args(args.overrides)]
    run_args += [
        flag
        for flag, on in (
            ("--resume", args.resume),
            ("--force", args.force),
            ("--quiet", args.quiet),
            ("--verbose", args.verbose),
            ("--plain", args.plain),
        )
        if on
    ]
    return jaxpipe.launch(
        args.spec,
        args.processes,
        cpu_devices_per_process=args.cpu_devices_per_process,
        run_args=run_args,
    )


def _cmd_validate(args: argparse.Namespace) -> int:
    import jaxpipe

    spec = jaxpipe.load_spec(args.spec, args.overrides)
    notes = jaxpipe.validate(spec)
    if args.quiet:
        return 0
    print(f"{args.spec}: valid")
    for note in notes:
        print(f"  {note}")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import jaxpipe

    if args.format == "markdown":
        sys.stdout.write(jaxpipe.spec_markdown())
    else:
        print(json.dumps(jaxpipe.spec_schema(), indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import jaxpipe

    rows = jaxpipe.predict(
        args.run_dir, args.data, out=args.out, probabilities=args.probabilities, keep=args.keep
    )
    if args.out is not None and not args.quiet:
        print(f"wrote {rows} predictions to {args.out}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import jaxpipe

    metrics = jaxpipe.evaluate(args.run_dir, args.data)
    print(json.dumps(metrics, indent=2) if args.json else jaxpipe.format_metrics(metrics))
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    import jaxpipe

    model = jaxpipe.load_model(args.run_dir)
    path = model.export(args.out, format=args.format)
    if not args.quiet:
        print(f"Wrote {path}: x [rows, {len(model.columns)}] float32 ({', '.join(model.columns)})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    import jaxpipe

    records = jaxpipe.compare(args.run_dirs, args.metric, plot=args.plot)
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        print(jaxpipe.format_comparison(records, args.metric))
        if not args.quiet:
            print(f"curves: {args.plot}")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    import jaxpipe

    spec = jaxpipe.load_spec(args.spec, args.overrides)
    if args.option is not None and args.emit is None:
        raise jaxpipe.JaxpipeError("--option picks the option --emit writes; give --emit too")
    plan = jaxpipe.plan(
        spec,
        gpu=args.gpu,
        devices=args.devices,
        verify=args.verify,
        have=args.have,
        prices=args.price,
        rank=args.rank,
        budget=args.budget,
        deadline=args.deadline,
    )
    if args.emit:
        run_args = _set_args(args.overrides)
        print(jaxpipe.launch_file(spec, plan, args.emit, args.spec, args.option or 1, run_args))
        return 0
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    elif args.quiet:
        print(jaxpipe.format_plan(plan).splitlines()[0])  # the verdict
    else:
        print(jaxpipe.format_plan(plan))
    return 2 if args.check and not plan.fits else 0


def _cmd_calibration(args: argparse.Namespace) -> int:
    import dataclasses

    import jaxpipe

    rows = jaxpipe.read_calibration(args.run_dirs)
    if args.json:
        runs = [dataclasses.asdict(r) | {"error": r.error} for r in rows]
        print(json.dumps({"runs": runs}, indent=2))
    else:
        print(jaxpipe.format_calibration(rows))
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    import jaxpipe

    say = (lambda line: None) if args.quiet or args.json else (lambda line: print(f"  {line}"))
    profile, path = jaxpipe.calibrate(args.out, quick=args.quick, log=say)
    if args.json:
        print(json.dumps(profile.to_json() | {"path": path}, indent=2))
    elif args.quiet:
        print(path)
    else:
        print(f"wrote {path}: the {profile.kind} profile `jaxpipe plan` now uses")
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import jaxpipe

    record = jaxpipe.trace(args.run_dir, args.data, row=args.row)
    if args.png:
        jaxpipe.write_trace_png(record, args.png, what=f"--png {args.png}")
    if args.json:
        print(json.dumps(record, indent=2))
    elif args.quiet:
        p = record["prediction"]
        print(p["class"] if p["class"] is not None else f"{p['value']:.6g}")
    else:
        print(jaxpipe.format_trace(record))
    return 0


def _cmd_devices(args: argparse.Namespace) -> int:
    import jaxpipe

    info = jaxpipe.devices()
    if args.json:
        print(json.dumps(info.to_json(), indent=2))
        return 0
    gib = 2**30
    print(
        f"{len(info.devices)} {info.platform} device(s) in process {info.process_index} of "
        f"{info.process_count}; memory per device {info.nominal_bytes / gib:.2f} GiB "
        f"({info.memory_source}), usable {info.usable_bytes / gib:.2f} GiB"
    )
    if args.quiet:
        return 0
    for d in info.devices:
        limit = f"{d['bytes_limit'] / gib:.2f} GiB" if d["bytes_limit"] else "n/a"
        print(
            f"  {d['platform']}:{d['id']}  {d['kind']}  bytes_limit {limit}  "
            f"process {d['process_index']}"
        )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import jaxpipe

    results = jaxpipe.check_specs(
        args.specs, gpu=args.gpu, devices=args.devices, resume=args.resume, sharding=args.sharding
    )
    if args.json:
        ok = all(r.ok for r in results)
        print(json.dumps({"ok": ok, "specs": [r.to_json() for r in results]}, indent=2))
    else:
        print(jaxpipe.format_checks(results))
    failed = {s.name for r in results for s in r.steps if s.status == "fail"}
    if failed & {"spec", "data", "plan"}:
        return 2
    return 1 if failed else 0


_COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "schema": _cmd_schema,
    "predict": _cmd_predict,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "compare": _cmd_compare,
    "plan": _cmd_plan,
    "calibration": _cmd_calibration,
    "calibrate": _cmd_calibrate,
    "devices": _cmd_devices,
    "launch": _cmd_launch,
    "trace": _cmd_trace,
    "init": _cmd_init,
    "check": _cmd_check,
}


def _one_line(text: str) -> str:
    """Escapes newlines and control characters (quoted from a bad file, say) so the
    message stays one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _EarlySignals:
    """The signal contract from main's first line (run, predict, evaluate, trace, check,
    plan):
    SIGINT / SIGTERM are only recorded (`signum`), never raised inside an import, until
    the command's own catcher (jaxpipe.signals.catch_signals) replaces this handler and
    takes the signal over."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in self.old:
            signal.signal(s, self)

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    def close(self, exiting: bool) -> None:
        # When the program is exiting its outcome is decided. Python resets a handler it
        # runs to the default (kill) while finalising, but leaves SIG_IGN alone: a Ctrl-C
        # then would only turn a finished run's exit 0 into a death by signal.
        for s, handler in self.old.items():
            signal.signal(s, signal.SIG_IGN if exiting else handler)


class _BestEffortStdout:
    """stdout for a command's report: once the reader has gone (`jaxpipe run | head`),
    writes are dropped instead of raising BrokenPipeError, so the work still finishes,
    and the descriptor points at /dev/null so the exit's final flush cannot fail."""

    def __init__(self, stream: object) -> None:
        self._stream, self._gone = stream, False

    def write(self, text: str) -> int:
        if not self._gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._leave()
        return len(text)

    def flush(self) -> None:
        if not self._gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._leave()

    def _leave(self) -> None:
        self._gone = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)
        except (AttributeError, OSError, ValueError):
            pass  # a stream without a descriptor (a test's capture): nothing to flush later

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


# The commands that run a compiled program: the signal contract from their first line.
_SIGNAL_COMMANDS = {"run", "predict", "evaluate", "trace", "check", "plan"}


def _runs_programs(argv: Sequence[str] | None) -> bool:
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    return bool(words) and words[0] in _SIGNAL_COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    early = _EarlySignals() if _runs_programs(argv) else None
    stdout = sys.stdout
    # No stdout at all (started with descriptor 1 closed, `jaxpipe run >&-`): Python's is
    # None; the report then goes nowhere, as to a reader that has gone.
    sys.stdout = best = _BestEffortStdout(stdout if stdout is not None else open(os.devnull, "w"))
    try:
        return _main(argv, early)
    finally:
        # What is still buffered goes out now, while a reader gone is still dropped (a
        # short output, block-buffered, would otherwise fail at the interpreter's final
        # flush: "Exception ignored … BrokenPipeError", exit 120).
        best.flush()
        sys.stdout = stdout
        if early is not None:
            early.close(exiting=argv is None)


def _main(argv: Sequence[str] | None, early: _EarlySignals | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command is None:  # bare `jaxpipe`: the help, as git and docker do
        parser.print_help()
        return 0
    import jaxpipe
    from jaxpipe import DivergedError, EnvironmentProblem, JaxpipeError, RunInterrupted

    try:
        if early is not None and early.signum is not None:  # before the run took over
            name = signal.Signals(early.signum).name
            what = "the run" if args.command == "run" else args.command
            print(f"error: interrupted by {name} before {what} started", file=sys.stderr)
            return 128 + early.signum
        return _COMMANDS[args.command](args)
    except (JaxpipeError, DivergedError, EnvironmentProblem, RunInterrupted) as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        if getattr(e, "plan", None) is not None:  # a plan that does not fit: its table below
            print(jaxpipe.format_plan(e.plan), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: say so, keep the traceback for a report
        if settings.debug() or args.verbose:
            raise
        print(
            f"error: internal error: {type(e).__name__}: {e} (run with -v or set "
            "JAXPIPE_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
