"""`jaxpipe` on the command line: argument parsing and exit codes over the public API.

Exit status: 0 success; 1 internal error; 2 bad input (one `error: ...` line, no
traceback); 3 training diverged; 130 / 143 stopped by SIGINT / SIGTERM after a checkpoint
(continue with --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit is 2 with usage; keep one line
        raise _UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class _UsageError(Exception):
    pass


def _common() -> argparse.ArgumentParser:
    """-q/-v, shared by every subcommand (so they go after the subcommand's name)."""
    c = argparse.ArgumentParser(add_help=False)
    g = c.add_argument_group("output")
    g.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only errors and the result (a run prints its run directory)",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print more: every epoch, library log lines, the traceback of an internal error",
    )
    return c


def _sub(sub: Any, name: str, help: str, example: str, common: argparse.ArgumentParser) -> Any:
    return sub.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )


def _catalog_names() -> str:
    """The shipped catalog's card names, read from catalog.toml without importing jax."""
    from importlib import resources

    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib

    text = resources.files("jaxpipe").joinpath("catalog.toml").read_text()
    return ", ".join(tomllib.loads(text))


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key (TOML value), e.g. training.epochs=3; repeatable",
    )


def _parser() -> argparse.ArgumentParser:
    import jaxpipe  # light: the package's names load lazily

    p = _Parser(
        prog="jaxpipe",
        description="JAX training pipelines from TOML experiment specs.",
        epilog="example:\n  jaxpipe init demo && jaxpipe run demo/demo.toml\n\n"
        "`jaxpipe COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"jaxpipe {jaxpipe.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    common = _common()
    spec_help = "experiment TOML file"

    r = _sub(sub, "run", "train an experiment", "jaxpipe run experiments/seed.toml", common)
    r.add_argument("spec", help=spec_help)
    r.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    _overrides(r)
    r.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out DIR from its newest checkpoint",
    )
    r.add_argument(
        "--force",
        action="store_true",
        help="with --resume: allow a changed training length (training.epochs, early stopping)",
    )
    r.add_argument(
        "--plain", action="store_true", help="plain lines, no colour or live display (as piped)"
    )

    dist = r.add_argument_group(
        "multi-process (jax.distributed; also JAXPIPE_COORDINATOR, JAXPIPE_NUM_PROCESSES, "
        "JAXPIPE_PROCESS_ID, or JAXPIPE_DISTRIBUTED=auto for SLURM/Kubernetes detection)"
    )
    dist.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address")
    dist.add_argument("--num-processes", type=int, metavar="N", help="processes in the job")
    dist.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")

    la = _sub(
        sub,
        "launch",
        "rehearse a multi-process run: N local processes on 127.0.0.1 (gloo)",
        "jaxpipe launch experiments/sharded.toml --processes 2 --cpu-devices-per-process 4",
        common,
    )
    la.add_argument("spec", help=spec_help)
    la.add_argument("--processes", type=int, required=True, metavar="N", help="processes to start")
    la.add_argument(
        "--cpu-devices-per-process", type=int, metavar="M", help="simulated CPU devices each"
    )
    la.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    _overrides(la)
    la.add_argument("--resume", action="store_true", help="continue the run in --out DIR")
    la.add_argument(
        "--force", action="store_true", help="with --resume: allow a changed training length"
    )
    la.add_argument("--plain", action="store_true", help="plain lines, no colour or live display")

    v = _sub(
        sub,
        "validate",
        "check a spec and its data file without training",
        "jaxpipe validate experiments/digits.toml",
        common,
    )
    v.add_argument("spec", help=spec_help)
    _overrides(v)

    s = _sub(
        sub,
        "schema",
        "print the JSON Schema (or Markdown reference) of specs",
        "jaxpipe schema > jaxpipe.schema.json",
        common,
    )
    s.add_argument(
        "--format",
        choices=("json", "markdown"),
        default="json",
        help="json: JSON Schema for editors; markdown: the reference in docs/spec.md",
    )

    pr = _sub(
        sub,
        "predict",
        "predict new rows with a finished run's model",
        "jaxpipe predict runs/digits-20250101-120000 new_rows.csv --out predictions.csv",
        common,
    )
    pr.add_argument("run_dir", help="run directory written by `jaxpipe run`")
    pr.add_argument("data", help="rows to predict: csv (or .parquet / .npz)")
    pr.add_argument("--out", help="CSV file to write (default: standard output)")

    pl = _sub(
        sub,
        "plan",
        "will it fit? per-device memory per strategy, no training",
        "jaxpipe plan experiments/too_big_for_16gb.toml --gpu T4 --devices 4",
        common,
    )
    pl.add_argument("spec", help=spec_help)
    pl.add_argument(
        "--gpu",
        metavar="NAME",
        help=f"plan for this catalog card, one of: {_catalog_names()} "
        "(or a [hardware.catalog] entry of the spec)",
    )
    pl.add_argument("--devices", type=_count, metavar="N", help="number of devices to plan for")
    pl.add_argument(
        "--verify", action="store_true", help="compile the epoch and compare with XLA's figures"
    )
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    _overrides(pl)
    _trace_parser(sub, common)
    _init_parser(sub, common)

    d = _sub(sub, "devices", "the local devices, their kind and memory", "jaxpipe devices", common)
    d.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _trace_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    t = _sub(
        sub,
        "trace",
        "follow one row through the model: input, hidden layers, output, prediction",
        "jaxpipe trace runs/digits-20250101-120000 --row 3",
        common,
    )
    t.add_argument("run_dir", help="run directory written by `jaxpipe run`")
    t.add_argument(
        "data",
        nargs="?",
        help="rows to trace: csv (or .parquet / .npz); default: the run's validation rows",
    )
    t.add_argument(
        "--row", type=int, default=0, metavar="N", help="which row, counting from 0 (default 0)"
    )
    t.add_argument("--json", action="store_true", help="print the trace as one JSON object")
    t.add_argument("--png", metavar="PATH", help="also draw the trace into this PNG file")


def _init_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    i = _sub(
        sub,
        "init",
        "write a starter experiment: NAME/NAME.toml and its data",
        "jaxpipe init demo && jaxpipe run demo/demo.toml",
        common,
    )
    i.add_argument("name", help="the folder, spec file and experiment name")
    i.add_argument(
        "--example",
        choices=("penguins", "diabetes"),
        default="penguins",
        help="penguins: classification with text columns and missing values (default); "
        "diabetes: regression",
    )


def _cmd_init(args: argparse.Namespace) -> int:
    import jaxpipe

    spec, data = jaxpipe.init_project(args.name, args.example)
    if args.quiet:
        print(spec)
    else:
        print(f"wrote {spec} and {data}\nnext: jaxpipe run {spec}")
    return 0


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a device count ≥ 1, found {text!r}")
    return n


def _level(args: argparse.Namespace) -> int:
    """0 quiet, 1 normal, 2 verbose."""
    return 0 if args.quiet else 2 if args.verbose else 1


def _cmd_run(args: argparse.Namespace) -> int:
    import jaxpipe

    spec = jaxpipe.load_spec(args.spec, args.overrides)
    if args.force and not args.resume:
        raise jaxpipe.JaxpipeError("--force only applies with --resume")
    if args.plain:  # an environment variable, so that launch's processes inherit it
        os.environ["JAXPIPE_PLAIN"] = "1"
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
    run_args = ["--out", out]
    for item in args.overrides:
        run_args += ["--set", item]
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

    rows = jaxpipe.predict(args.run_dir, args.data, out=args.out)
    if args.out is not None and not args.quiet:
        print(f"wrote {rows} predictions to {args.out}", file=sys.stderr)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    import jaxpipe

    spec = jaxpipe.load_spec(args.spec, args.overrides)
    plan = jaxpipe.plan(spec, gpu=args.gpu, devices=args.devices, verify=args.verify)
    if args.json:
        print(json.dumps(plan.to_json(), indent=2))
    elif args.quiet:
        print(jaxpipe.format_plan(plan).splitlines()[-1])  # the verdict
    else:
        print(jaxpipe.format_plan(plan))
    return 0


def _cmd_trace(args: argparse.Namespace) -> int:
    import jaxpipe

    record = jaxpipe.trace(args.run_dir, args.data, row=args.row)
    if args.png:
        jaxpipe.write_trace_png(record, args.png)
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


_COMMANDS = {
    "run": _cmd_run,
    "validate": _cmd_validate,
    "schema": _cmd_schema,
    "predict": _cmd_predict,
    "plan": _cmd_plan,
    "devices": _cmd_devices,
    "launch": _cmd_launch,
    "trace": _cmd_trace,
    "init": _cmd_init,
}


def _one_line(text: str) -> str:
    """Escapes newlines and control characters (quoted from a bad file, say) so the
    message stays one printable line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = _parser()
        args = parser.parse_args(argv)
    except _UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.command is None:  # bare `jaxpipe`: the help, as git and docker do
        parser.print_help()
        return 0
    import jaxpipe
    from jaxpipe import DivergedError, EnvironmentProblem, JaxpipeError, RunInterrupted

    try:
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
        if os.environ.get("JAXPIPE_DEBUG") or args.verbose:
            raise
        print(
            f"error: internal error: {type(e).__name__}: {e} (run with -v or set "
            "JAXPIPE_DEBUG=1 for the traceback and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
