"""The catalog, usable memory, local devices, the [hardware] spec keys and the CLI."""

import json

import pytest
from conftest import SMALL_SPEC
from hypothesis import given
from hypothesis import strategies as st

import jaxpipe
from jaxpipe.cli.main import main
from jaxpipe.errors import SpecError
from jaxpipe.planner import hardware
from jaxpipe.planner.search import GPU_RUNTIME_BYTES
from jaxpipe.spec.experiment import parse_spec
from jaxpipe.spec.hardware import parse_size

REQUIRED = [
    "T4",
    "V100-16GB",
    "V100-32GB",
    "A10",
    "L4",
    "RTX4090",
    "A100-40GB",
    "A100-80GB",
    "H100",
    "H200",
    "B200",
]


def test_catalog_has_the_common_cards_with_rates():
    cat = hardware.load_catalog()
    for name in REQUIRED:
        k = cat[name]
        assert k.memory_bytes > 14 * 2**30 and k.fp32_flops > 1e12 and k.bf16_flops > 1e12
        assert k.bandwidth > 1e11
    assert hardware.match_kind("NVIDIA H100 80GB HBM3", cat).name == "H100"
    assert hardware.match_kind("NVIDIA A100-SXM4-40GB", cat).name == "A100-40GB"
    assert hardware.match_kind("NVIDIA A10", cat).name == "A10"
    assert hardware.match_kind("cpu", cat) is None
    assert hardware.find_device("a100_40gb", cat).name == "A100-40GB"
    with pytest.raises(SpecError, match="unknown device 'Q7'.*catalog has T4"):
        hardware.find_device("Q7", cat)


def test_spec_entries_override_and_add(tmp_path):
    spec = parse_spec(
        '[hardware.catalog.T4]\nmemory = "8GiB"\n'
        '[hardware.catalog.MyCard]\nmemory = "12GB"\nfp32_tflops = 10.0\nbf16_tflops = 20.0\n'
        "bandwidth_gbs = 500.0\n"
    )
    cat = hardware.load_catalog(spec.hardware)
    assert cat["T4"].memory_bytes == 8 * 2**30 and cat["T4"].fp32_flops == 8.1e12
    assert cat["MyCard"].memory_bytes == 12 * 10**9
    with pytest.raises(SpecError, match="new catalog entry 'New' needs fp32_tflops"):
        hardware.load_catalog(parse_spec('[hardware.catalog.New]\nmemory = "1GB"').hardware)
    (tmp_path / "gpus.toml").write_text(
        '[Big]\nmemory = "1TB"\nfp32_tflops = 1.0\nbf16_tflops = 1.0\nbandwidth_gbs = 1.0\n'
    )
    spec = parse_spec('[hardware]\ncatalog = "gpus.toml"', base_dir=str(tmp_path))
    assert hardware.load_catalog(spec.hardware, spec.base_dir)["Big"].memory_bytes == 10**12
    with pytest.raises(SpecError, match="catalog file not found"):
        hardware.load_catalog(parse_spec('[hardware]\ncatalog = "no.toml"').hardware)


@given(value=st.integers(1, 4096), unit=st.sampled_from(["B", "KB", "MiB", "GB", "GiB", "TiB"]))
def test_parse_size(value, unit):
    scale = {"B": 1, "KB": 1000, "MiB": 2**20, "GB": 10**9, "GiB": 2**30, "TiB": 2**40}[unit]
    assert parse_size(f"{value}{unit}") == value * scale
    assert parse_size(f"{value} {unit.lower()}") == value * scale


@pytest.mark.parametrize(
    "text, needle",
    [
        ('device_memory = "16 gigs"', "is not a size"),
        ("devices = 0", "must be ≥ 1"),
        ('devices = "many"', 'expected "auto" or a device count'),
        ('strategy = "fdsp"', "did you mean 'fsdp'"),
        ("catalog.X.speed = 3", "unknown key 'speed'"),
    ],
)
def test_bad_hardware_keys(text, needle):
    with pytest.raises(SpecError, match=needle):
        parse_spec("[hardware]\n" + text)


def test_usable_memory_takes_fraction_and_reserve(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert hardware.usable_bytes(16 * 2**30) == 12 * 2**30 - 256 * 2**20
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    assert hardware.usable_bytes(16 * 2**30) == 8 * 2**30 - 256 * 2**20
    assert hardware.usable_bytes(100 * 2**20) == 45 * 2**20  # reserve capped at a tenth
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "lots")
    with pytest.raises(SpecError, match="XLA_PYTHON_CLIENT_MEM_FRACTION"):
        hardware.memory_fraction()


def test_devices_cli(capsys):
    assert main(["devices", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == 8 and info["platform"] == "cpu" and info["process_count"] == 1
    assert info["usable_bytes_per_device"] < info["nominal_bytes_per_device"]
    assert len(info["devices"]) == 8 and {"id", "kind", "bytes_limit"} <= set(info["devices"][0])
    assert main(["devices"]) == 0
    assert "8 cpu device(s)" in capsys.readouterr().out


def test_plan_cli_json_and_verify(write_spec, capsys):
    path = write_spec(SMALL_SPEC)
    assert main(["plan", path, "--gpu", "T4", "--json", "--verify"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in (
        "fits",
        "strategy",
        "devices",
        "mesh",
        "per_device_bytes",
        "usable_bytes_per_device",
        "breakdown",
        "min_devices",
        "xla",
        "candidates",
    ):
        assert key in out, key
    assert set(out["breakdown"]) == {
        "params",
        "gradients",
        "optimizer",
        "activations",
        "data",
        "workspace",
        "runtime",  # a GPU plan: the autotuner's cold-cache scratch (issue 12)
        # A small state the run keeps undonated (runner.plan.undonated): its output state
        # and snapshots beside the program, which the plan quotes as the run does.
        "output state",
        "snapshots",
    }
    assert out["breakdown"]["runtime"] == GPU_RUNTIME_BYTES
    assert out["per_device_bytes"] == sum(out["breakdown"].values())
    assert set(out["min_devices"]) == {
        "single",
        "data",
        "fsdp",
        "tensor",
        "data+tensor",
        "fsdp+tensor",
    }
    assert (out["fits"], out["strategy"], out["devices"]) == (True, "single", 1)
    x = out["xla"]
    assert x["total"] == x["argument"] + x["output"] + x["temp"] - x["alias"] > 0
    assert abs(x["relative_difference"]) < 0.25
    assert main(["plan", path, "--devices", "4"]) == 0
    text = capsys.readouterr().out
    # Issue 12: a CPU plan speaks of host memory, never of the GPU client's variables.
    assert "host memory" in text and "runtime reserve" in text
    assert "XLA_PYTHON_CLIENT" not in text and "XLA_CLIENT" not in text
    assert text.startswith("FITS data over 4 × cpu") and "Candidates" in text
    assert max(len(line) for line in text.splitlines()) <= 100


def test_plan_cli_bad_input(write_spec, capsys):
    path = write_spec(SMALL_SPEC)
    assert main(["plan", path, "--gpu", "T5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpu: unknown device 'T5'") and err.count("\n") == 1
    assert main(["plan", path, "--devices", "0"]) == 2


def test_run_records_the_plan(write_spec, tmp_path):
    result = jaxpipe.run(jaxpipe.load_spec(write_spec(SMALL_SPEC)), out=str(tmp_path / "r"))
    plan = result.summary["plan"]
    assert plan["strategy"] == "data" and plan["devices"] == 8 and plan["mesh"] == {"data": 8}
    assert plan["fits"]
    # The placed state and data, read back from their shards: part of the estimate (which
    # adds activations and workspace), never more than it.
    b = plan["breakdown"]
    placed = b["params"] + b["optimizer"] + b["data"]
    assert 0.9 * placed <= plan["measured_per_device_bytes"] <= plan["per_device_bytes"]
    assert plan["per_device_bytes"] == sum(plan["breakdown"].values())
    assert plan["measured_peak_bytes"] is None  # CPU reports no memory_stats
    saved = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert saved["plan"] == plan


def test_run_cli_forced_strategy_that_does_not_fit_exits_2_with_the_table(
    write_spec, tmp_path, capsys
):
    out = tmp_path / "never"
    sets = [
        "model.hidden=[1024, 1024]",
        'hardware.device_memory="4MiB"',
        'hardware.strategy="fsdp"',
        "hardware.devices=2",
    ]
    argv = ["run", write_spec(SMALL_SPEC), "--out", str(out)]
    code = main(argv + [a for s in sets for a in ("--set", s)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: [hardware] strategy = 'fsdp' does not fit")
    assert "Candidates" in err and "does not fit" in err and "Traceback" not in err
    assert not out.exists()
