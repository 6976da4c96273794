"""`jaxpipe plan --emit skypilot|slurm` (report/launch.py): a SkyPilot task that SkyPilot's
own loader reads (where `jaxpipe[cloud]` is installed) and that holds to its published task
schema either way, and an sbatch script that bash parses, whose srun line runs the
option's layout."""

import shlex
import subprocess

import pytest
import yaml

import jaxpipe
from jaxpipe.cli.main import main

# The 16 GB question (experiments/too_big_for_16gb.toml) at a size that plans fast: one
# T4 does not hold it, two do with tensor parallelism.
SPEC = """
[experiment]
name = "launch-me"
[data]
source = "synthetic"
validation = 64
[data.synthetic]
rows = 576
features = 16
classes = 4
[model]
hidden = [512, 512]
[training]
batch_size = 64
[hardware.catalog.T4]
memory = "7MiB"
"""

# SkyPilot's task schema (sky.utils.schemas.get_task_schema / get_resources_schema,
# skypilot 0.14.1): the keys a task and its resources may have; both refuse others.
TASK_KEYS = {
    "name", "workdir", "num_nodes", "resources", "envs", "secrets", "file_mounts", "setup",
    "run", "service", "config", "volumes", "volume_mounts", "inputs", "outputs", "pool",
    "event_callback", "managed_secrets", "file_mounts_mapping", "api_server_access",
}  # fmt: skip
RESOURCE_KEYS = {
    "accelerators", "use_spot", "cloud", "region", "zone", "cpus", "memory", "disk_size",
    "image_id", "instance_type", "infra", "ports", "labels", "any_of", "ordered",
    "accelerator_args", "disk_tier", "network_tier", "job_recovery", "max_hourly_cost",
    "autostop", "volumes", "priority", "priority_class", "local_disk", "ephemeral_storage",
}  # fmt: skip


def _emit(capsys, path, kind, *extra):
    assert main(["plan", path, "--gpu", "T4", *extra, "--emit", kind]) == 0
    return capsys.readouterr().out


def test_skypilot_task_holds_to_the_schema_and_pins_the_layout(write_spec, capsys, tmp_path):
    path = write_spec(SPEC)
    text = _emit(capsys, path, "skypilot", "--have", "T4x2", "--rank", "devices")
    task = yaml.safe_load(text)
    assert set(task) <= TASK_KEYS and set(task["resources"]) <= RESOURCE_KEYS
    assert isinstance(task["num_nodes"], int) and task["num_nodes"] == 1
    assert task["resources"]["accelerators"] == "T4:2"
    assert 'pip install "jaxpipe[cuda12]"' in task["setup"]
    run = shlex.split(task["run"])
    assert run[:3] == ["jaxpipe", "run", path] and "--out" in run
    assert 'hardware.strategy="tensor"' in run and "hardware.devices=2" in run
    out = tmp_path / "task.yaml"
    out.write_text(text)
    sky = pytest.importorskip("sky")  # jaxpipe[cloud]: SkyPilot's own loader, offline
    loaded = sky.Task.from_yaml(str(out))
    assert loaded.num_nodes == 1
    assert {r.accelerators["T4"] for r in loaded.resources} == {2}


def test_skypilot_over_nodes_names_the_coordinator(write_spec, capsys):
    # 8 cards of a 4-card node: two nodes, one process each, SkyPilot's first node leads.
    text = SPEC.replace("hidden = [512, 512]", "hidden = [512, 512, 512, 512]")
    text = text.replace('memory = "7MiB"', 'memory = "4MiB"\ngpus_per_node = 4')
    path = write_spec(text)
    plan = jaxpipe.plan(path, gpu="T4", rank="devices", fit=False)
    index = next(i for i, o in enumerate(plan.options, 1) if o.fits and o.nodes > 1)
    task = yaml.safe_load(
        _emit(capsys, path, "skypilot", "--rank", "devices", "--option", str(index))
    )
    assert task["num_nodes"] == 2 and task["resources"]["accelerators"].startswith("T4:")
    assert "$SKYPILOT_NODE_IPS" in task["run"] and "--process-id" in task["run"]
    assert '--num-processes "$SKYPILOT_NUM_NODES"' in task["run"]


def test_slurm_script_parses_and_its_srun_runs_the_layout(write_spec, capsys, tmp_path):
    path = write_spec(SPEC)
    text = _emit(capsys, path, "slurm", "--have", "T4x2", "--set", "training.epochs=2")
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    sbatch = dict(
        line[len("#SBATCH ") :].split("  #")[0].split("=", 1)
        for line in lines
        if line.startswith("#SBATCH ")
    )
    assert sbatch["--nodes"] == "1" and sbatch["--gpus-per-node"] == "2"
    h, m, s = map(int, sbatch["--time"].split(":"))
    assert 0 < 3600 * h + 60 * m + s
    srun = shlex.split(next(line for line in lines if line.startswith("srun ")))
    assert srun[:3] == ["srun", "--ntasks=1", "--ntasks-per-node=1"]
    run = srun[srun.index("jaxpipe") :]
    assert run[:3] == ["jaxpipe", "run", path]
    assert "training.epochs=2" in run and 'hardware.strategy="tensor"' in run
    assert run[run.index("--out") + 1].endswith("-$SLURM_JOB_ID")


def test_emit_refuses_what_it_cannot_launch(write_spec, capsys):
    path = write_spec(SPEC)
    assert main(["plan", path, "--gpu", "T4", "--emit", "slurm", "--option", "99"]) == 2
    assert "option(s) that fit" in capsys.readouterr().err
    assert main(["plan", path, "--option", "2"]) == 2
    assert "--emit" in capsys.readouterr().err
