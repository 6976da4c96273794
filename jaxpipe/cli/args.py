"""The `jaxpipe` command line's arguments: one function a subcommand (its parser, help
and example), and the options every subcommand shares. No jax: `jaxpipe --help` and
`--version` stay fast. To add a subcommand, add an `_add_NAME` function and list it in
`SUBCOMMANDS`; its handler goes in cli.py."""

from __future__ import annotations

import argparse
import os
import re
from typing import Any

import jaxpipe  # light: the package's names load lazily

__all__ = ["build_parser", "UsageError"]

SPEC_HELP = "experiment TOML file"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exit is 2 with usage; keep one line
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


class UsageError(Exception):
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
        help="print more: every epoch in the final table, the traceback of an internal error",
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
    """The shipped catalog's card names (its table headers), read without importing jax,
    tomllib or importlib.resources: those two cost ~40 ms of every command's start-up."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "planner", "catalog.toml"
    )
    with open(path, encoding="utf-8") as f:
        return ", ".join(re.findall(r"(?m)^\[([^\[\].]+)\]", f.read()))


def _overrides(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a spec key (TOML value), e.g. training.epochs=3; repeatable",
    )


def _add_run(sub: Any, common: argparse.ArgumentParser) -> None:
    r = _sub(sub, "run", "train an experiment", "jaxpipe run experiments/seed.toml", common)
    r.add_argument("spec", help=SPEC_HELP)
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
        help="with --resume: allow a changed training length (training.epochs, early "
        "stopping); with [sweep]: allow more than 256 trials",
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


def _add_launch(sub: Any, common: argparse.ArgumentParser) -> None:
    la = _sub(
        sub,
        "launch",
        "rehearse a multi-process run: N local processes on 127.0.0.1 (gloo)",
        "jaxpipe launch experiments/sharded.toml --processes 2 --cpu-devices-per-process 4",
        common,
    )
    la.add_argument("spec", help=SPEC_HELP)
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


def _add_validate(sub: Any, common: argparse.ArgumentParser) -> None:
    v = _sub(
        sub,
        "validate",
        "check a spec and its data file without training",
        "jaxpipe validate experiments/digits.toml",
        common,
    )
    v.add_argument("spec", help=SPEC_HELP)
    _overrides(v)


def _add_schema(sub: Any, common: argparse.ArgumentParser) -> None:
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


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
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
    pr.add_argument(
        "--probabilities",
        action="store_true",
        help="one probability column per class, named by the class (classification)",
    )
    pr.add_argument(
        "--keep",
        type=_names,
        default=(),
        metavar="COL,...",
        help="copy these columns of DATA (an id, say) in front of the predictions",
    )


def _names(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected column names separated by commas, found {text!r}"
        )
    return names


def _add_evaluate(sub: Any, common: argparse.ArgumentParser) -> None:
    ev = _sub(
        sub,
        "evaluate",
        "metrics of a finished run's model on a labelled file",
        "jaxpipe evaluate runs/digits-20250101-120000 labelled.csv --json",
        common,
    )
    ev.add_argument("run_dir", help="run directory written by `jaxpipe run` (or Model.save)")
    ev.add_argument("data", help="labelled rows: csv (or .parquet / .npz) with the label column")
    ev.add_argument("--json", action="store_true", help="print one JSON object")


def _add_export(sub: Any, common: argparse.ArgumentParser) -> None:
    ex = _sub(
        sub,
        "export",
        "a finished run's whole predictor for serving, as StableHLO or ONNX",
        "jaxpipe export runs/peng --format onnx --out penguins.onnx",
        common,
    )
    ex.add_argument("run_dir", help="run directory written by `jaxpipe run` (or Model.save)")
    ex.add_argument(
        "--format",
        choices=("stablehlo", "onnx"),
        default="stablehlo",
        help="stablehlo: jax.export's serialized bytes (jax.export.deserialize(b).call(x)); "
        "onnx: an ONNX model, input x, output y (needs jaxpipe[onnx])",
    )
    ex.add_argument("--out", required=True, metavar="FILE", help="where to write it")


def _add_compare(sub: Any, common: argparse.ArgumentParser) -> None:
    c = _sub(
        sub,
        "compare",
        "finished runs and sweeps side by side, and compare.png",
        "jaxpipe compare runs/a runs/b runs/sweep --metric val_accuracy",
        common,
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run or sweep directories")
    c.add_argument("--metric", default="val_loss", help="metrics.jsonl column (default val_loss)")
    c.add_argument("--json", action="store_true", help="print the records as JSON")
    c.add_argument("--plot", default="compare.png", help="where to write the curves PNG")


def _add_plan(sub: Any, common: argparse.ArgumentParser) -> None:
    pl = _sub(
        sub,
        "plan",
        "will it fit? per-device memory per strategy, no training",
        "jaxpipe plan experiments/too_big_for_16gb.toml --gpu T4 --devices 4",
        common,
    )
    pl.add_argument("spec", help=SPEC_HELP)
    pl.add_argument(
        "--gpu",
        metavar="NAME",
        help=f"plan for this catalog card, one of: {_catalog_names()} "
        "(or a [hardware.catalog] entry of the spec)",
    )
    pl.add_argument("--devices", type=_count, metavar="N", help="number of devices to plan for")
    pl.add_argument(
        "--verify",
        action="store_true",
        help="compile the recommended layout and every option (simulated host devices as "
        "needed) and quote XLA's per-device figures beside the estimate",
    )
    pl.add_argument(
        "--check",
        action="store_true",
        help="exit 2 when the run does not fit the device(s) asked about (for CI)",
    )
    pl.add_argument("--json", action="store_true", help="print one JSON object")
    _money(pl)
    _overrides(pl)


def _money(pl: argparse.ArgumentParser) -> None:
    """`plan`'s time-and-money options: cards owned, prices, ranking, filters, launch files."""
    money = pl.add_argument_group("time and money")
    money.add_argument(
        "--have",
        action="append",
        default=[],
        metavar="KINDxN[@USD]",
        help="cards you own, e.g. T4x2 (cost 0) or A10x1@0.25 (USD an hour each); "
        "repeatable; adds to [hardware] owned",
    )
    money.add_argument(
        "--price",
        action="append",
        default=[],
        metavar="KIND=USD",
        help="hourly price of one card over the catalog's, e.g. A100-40GB=1.10; repeatable",
    )
    money.add_argument(
        "--rank",
        choices=("auto", "cost", "time", "devices"),
        default="auto",
        help="how options are ranked: cost a run (auto's choice when prices are known), "
        "time a run, or fewest devices",
    )
    money.add_argument(
        "--budget", type=_usd, metavar="USD", help="leave out options whose run costs more"
    )
    money.add_argument(
        "--deadline",
        type=_duration,
        metavar="TIME",
        help="leave out options whose run takes longer, e.g. 90s, 30min, 2h",
    )
    money.add_argument(
        "--emit",
        choices=("skypilot", "slurm"),
        help="print a launch file for the top-ranked option (or --option N) instead of the "
        "plan: a SkyPilot task YAML or an sbatch script with srun",
    )
    money.add_argument(
        "--option",
        type=_count,
        metavar="N",
        help="with --emit: the N-th ranked option that fits (default 1)",
    )


def _add_devices(sub: Any, common: argparse.ArgumentParser) -> None:
    d = _sub(sub, "devices", "the local devices, their kind and memory", "jaxpipe devices", common)
    d.add_argument("--json", action="store_true", help="print one JSON object")


def _add_trace(sub: Any, common: argparse.ArgumentParser) -> None:
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


def _add_init(sub: Any, common: argparse.ArgumentParser) -> None:
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


def _add_check(sub: Any, common: argparse.ArgumentParser) -> None:
    c = _sub(
        sub,
        "check",
        "CI check of specs: valid, data reads, fits the hardware, resume and sharding exact "
        "(exit 0 when every spec passes; 2 when a spec, its data or its plan fails; 1 when "
        "a resume or sharding invariant fails)",
        "jaxpipe check experiments/*.toml --gpu A10 --devices 4 --resume --sharding 4",
        common,
    )
    c.add_argument("specs", nargs="+", metavar="SPEC", help="experiment TOML files")
    c.add_argument("--gpu", metavar="NAME", help="plan for this catalog card (e.g. T4, A10)")
    c.add_argument("--devices", type=_count, metavar="N", help="number of devices to plan for")
    c.add_argument(
        "--resume",
        action="store_true",
        help="train a shrunk copy (2 epochs, a slice of the data), stop it after epoch 1, "
        "resume it: must equal the uninterrupted run bit for bit",
    )
    c.add_argument(
        "--sharding",
        type=_count,
        metavar="N",
        help="the shrunk copy under data and fsdp over N simulated CPU devices must match "
        "one device",
    )
    c.add_argument("--json", action="store_true", help="print one JSON object")


def _count(text: str) -> int:
    """A device count: a whole number ≥ 1. "1e12" is refused with its integer spelled out,
    so the fix is one copy away."""
    try:
        return _positive(int(text.strip().replace("_", "")), text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None and value.is_integer() and value >= 1:
        raise argparse.ArgumentTypeError(
            f"expected a whole number of devices, found {text!r}; write {int(value)}"
        )
    raise argparse.ArgumentTypeError(f"expected a whole number of devices ≥ 1, found {text!r}")


def _usd(text: str) -> float:
    try:
        value = float(text.strip().lstrip("$"))
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected an amount in USD > 0, found {text!r}")
    return value


_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hour": 3600, "d": 86400}


def _duration(text: str) -> float:
    """Seconds from "90", "90s", "30min", "1.5h" or "2d"."""
    m = re.match(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", text.lower())
    if not m or m.group(2) not in ("", *_UNITS) or not float(m.group(1)) > 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90s, 30min or 2h, found {text!r}"
        )
    return float(m.group(1)) * _UNITS.get(m.group(2), 1)


def _positive(n: int, text: str) -> int:
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a device count ≥ 1, found {text!r}")
    return n


def _add_calibration(sub: Any, common: argparse.ArgumentParser) -> None:
    c = _sub(
        sub,
        "calibration",
        "how far to trust the planner: each run's estimate beside its measured peak",
        "jaxpipe calibration runs/*",
        common,
    )
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories")
    c.add_argument("--json", action="store_true", help="print one JSON object")


def _add_calibrate(sub: Any, common: argparse.ArgumentParser) -> None:
    c = _sub(
        sub,
        "calibrate",
        "measure this machine's device for the planner's time model (under a minute)",
        "jaxpipe calibrate && jaxpipe plan experiments/seed.toml",
        common,
    )
    c.add_argument(
        "--out",
        metavar="PATH",
        help="where to write the profile (default: the profile folder, JAXPIPE_PROFILE_DIR "
        "or ~/.cache/jaxpipe/profiles, under the device kind; `plan` reads it there)",
    )
    c.add_argument("--quick", action="store_true", help="one repetition of each timing (rough)")
    c.add_argument("--json", action="store_true", help="print the profile as JSON")


SUBCOMMANDS = (
    _add_run,
    _add_launch,
    _add_validate,
    _add_schema,
    _add_predict,
    _add_evaluate,
    _add_export,
    _add_compare,
    _add_plan,
    _add_calibration,
    _add_calibrate,
    _add_trace,
    _add_init,
    _add_devices,
    _add_check,
)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: `jaxpipe [--version] COMMAND [options]`."""
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
    for add in SUBCOMMANDS:
        add(sub, common)
    return p
