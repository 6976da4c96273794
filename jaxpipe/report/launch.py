"""Launch files for a plan's choice (`jaxpipe plan SPEC --emit skypilot|slurm`): a
SkyPilot task that rents the option's cards, or an sbatch script with `srun` for a
SLURM cluster. Both run `jaxpipe run` with the option's layout pinned (`--set
hardware.strategy=… --set hardware.devices=…`) and, over several nodes, the distributed
settings README documents: one process a node, SkyPilot's node list as the coordinator
(`--coordinator`, `--num-processes`, `--process-id`), or `JAXPIPE_DISTRIBUTED=auto` under
SLURM. Text only: no SkyPilot or SLURM is imported.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from jaxpipe.errors import JaxpipeError
from jaxpipe.planner.values import Option, Plan
from jaxpipe.report.verdict import dollars, duration
from jaxpipe.spec.strategy import Strategy

__all__ = ["launch_file", "skypilot_task", "slurm_script", "pick_option", "COORDINATOR_PORT"]

COORDINATOR_PORT = 8476
SETUP = 'pip install "jaxpipe[cuda12]"'


def pick_option(plan: Plan, index: int = 1) -> Option:
    """The `index`-th ranked option that fits (1-based)."""
    fitting = [o for o in plan.options if o.fits]
    if not fitting:
        raise JaxpipeError("nothing in the catalog fits: there is no option to launch")
    if not 1 <= index <= len(fitting):
        raise JaxpipeError(f"--option {index}: the plan ranks {len(fitting)} option(s) that fit")
    return fitting[index - 1]


def _run_args(o: Option, spec_path: str, out: str, extra: Sequence[str]) -> list[str]:
    args = ["jaxpipe", "run", spec_path, "--out", out, *extra]
    args += ["--set", f'hardware.strategy="{o.strategy}"']
    if o.strategy is not Strategy.SINGLE:
        args += ["--set", f"hardware.devices={o.devices}"]
    return args


def _describe(o: Option) -> str:
    where = f"{o.strategy} over {o.devices} × {o.device}" + (
        f" on {o.nodes} nodes" if o.nodes > 1 else ""
    )
    time = f"run {duration(o.run_seconds)}" if o.run_seconds is not None else "time unknown"
    cost = dollars(o.cost) if o.cost is not None else "price unknown"
    return f"{where}: {time}, {cost} ({o.time_source or 'no'} time)"


def _yaml_block(text: str, indent: str = "  ") -> str:
    return "|\n" + "\n".join(indent + line if line else "" for line in text.splitlines())


def skypilot_task(
    experiment: str, o: Option, spec_path: str, accelerator: str, extra: Sequence[str] = ()
) -> str:
    """A SkyPilot task YAML for option `o` (SkyPilot's accelerator name `accelerator`)."""
    name = _name(experiment)
    per_node = -(-o.devices // o.nodes)
    run = shlex.join(_run_args(o, spec_path, f"runs/{name}", extra))
    if o.nodes > 1:
        # One process a node; SkyPilot lists the nodes' addresses, the first leads.
        run = (
            'COORDINATOR="$(echo "$SKYPILOT_NODE_IPS" | head -n1)"\n'
            f'{run} \\\n  --coordinator "$COORDINATOR:{COORDINATOR_PORT}" '
            '--num-processes "$SKYPILOT_NUM_NODES" --process-id "$SKYPILOT_NODE_RANK"'
        )
    lines = [
        f"# jaxpipe plan {spec_path} --emit skypilot",
        f"# {_describe(o)}",
        "# Launch: sky launch -c jaxpipe this.yaml",
        f"name: {name}",
        "workdir: .",
        f"num_nodes: {o.nodes}",
        "resources:",
        f"  accelerators: {accelerator}:{per_node}",
        "  use_spot: false",
        f"setup: {_yaml_block(SETUP)}",
        f"run: {_yaml_block(run)}",
    ]
    return "\n".join(lines) + "\n"


def slurm_script(experiment: str, o: Option, spec_path: str, extra: Sequence[str] = ()) -> str:
    """An sbatch script for option `o`: one task a node, the node's cards to it."""
    name = _name(experiment)
    per_node = -(-o.devices // o.nodes)
    out = f"runs/{name}-$SLURM_JOB_ID"
    run = _run_args(o, spec_path, out, extra)
    # srun starts one jaxpipe a node; over several nodes JAX finds its peers from SLURM.
    env = ["env", "JAXPIPE_DISTRIBUTED=auto"] if o.nodes > 1 else []
    srun = ["srun", f"--ntasks={o.nodes}", "--ntasks-per-node=1", *env, *run]
    text = " ".join(f'"{a}"' if a == out else shlex.quote(a) for a in srun)
    lines = [
        "#!/bin/bash",
        f"# jaxpipe plan {spec_path} --emit slurm",
        f"# {_describe(o)}",
        f"#SBATCH --job-name={name}",
        f"#SBATCH --nodes={o.nodes}",
        "#SBATCH --ntasks-per-node=1",
        f"#SBATCH --gpus-per-node={per_node}  # your site may name the card: {o.device}",
        f"#SBATCH --time={_limit(o.run_seconds)}",
        f"#SBATCH --output={name}-%j.out",
        "set -euo pipefail",
        f"pip install --quiet {shlex.quote('jaxpipe[cuda12]')}  # or your site's module",
        text,
    ]
    return "\n".join(lines) + "\n"


def _limit(seconds: float | None) -> str:
    """An sbatch time limit: twice the model's run plus ten minutes (an hour if unknown)."""
    total = 3600 if seconds is None else math.ceil((2 * seconds + 600) / 60) * 60
    h, rest = divmod(int(total), 3600)
    return f"{h:02d}:{rest // 60:02d}:00"


def _name(experiment: str) -> str:
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in experiment)
    return name.strip("-").lower() or "jaxpipe"


def launch_file(
    experiment: str,
    plan: Plan,
    kind: str,
    spec_path: str,
    index: int = 1,
    extra: Sequence[str] = (),
    skypilot_names: dict[str, str] | None = None,
) -> str:
    """The launch file of kind "skypilot" or "slurm" for the plan's `index`-th option
    that fits; `extra`: arguments passed on to `jaxpipe run` (the plan's `--set`s).
    `experiment`: `[experiment] name`, which names the job and its run directory."""
    o = pick_option(plan, index)
    if kind == "slurm":
        return slurm_script(experiment, o, spec_path, extra)
    if kind != "skypilot":
        raise JaxpipeError(f"unknown launch file {kind!r}; expected skypilot or slurm")
    accelerator = (skypilot_names or {}).get(o.device)
    if accelerator is None:
        raise JaxpipeError(
            f"{o.device} has no SkyPilot accelerator name (catalog key `skypilot`); it is "
            "the local device or a card SkyPilot does not rent: pick another with --option N"
        )
    return skypilot_task(experiment, o, spec_path, accelerator, extra)
