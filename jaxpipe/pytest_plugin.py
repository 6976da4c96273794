"""pytest plugin (entry point `pytest11`): `pytest --jaxpipe-specs "experiments/*.toml"`
adds one test per spec file (node `experiments/seed.toml::jaxpipe-check`) that runs
`jaxpipe check` on it.

The spec files are collected as test files. Given no test path, they are the whole
session: `python -m pytest --jaxpipe-specs "experiments/*.toml"` from a repository root
collects neither `testpaths` nor the directory, and loads only the conftest.py files
beside the specs (a project's tests/conftest.py may set up simulated devices or caches),
so the checks run as `jaxpipe check` runs them. Named test paths are collected as usual,
the spec checks added: `pytest tests/ --jaxpipe-specs "experiments/*.toml"`.

Imported by pytest at start-up in every project that has jaxpipe installed, so it imports
nothing heavy (no jax, no hypothesis) until a spec test actually runs.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("jaxpipe", "jaxpipe experiment specs (as `jaxpipe check`)")
    g.addoption(
        "--jaxpipe-specs",
        action="append",
        default=[],
        metavar="GLOB",
        help="spec files to check, one test each (quote the glob); repeatable",
    )
    g.addoption("--jaxpipe-gpu", metavar="NAME", help="plan for this catalog card")
    g.addoption("--jaxpipe-devices", type=int, metavar="N", help="number of devices to plan for")
    g.addoption("--jaxpipe-resume", action="store_true", help="also check that a resume is exact")
    g.addoption(
        "--jaxpipe-sharding",
        type=int,
        metavar="N",
        help="also check that data and fsdp over N simulated devices match one device",
    )


_SPECS = pytest.StashKey[dict[str, str]]()  # absolute path -> the path as matched


def _spec_paths(patterns: list[str]) -> list[str]:
    return sorted({p for pattern in patterns for p in glob.glob(pattern)})


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # Specs only: anchor the initial conftests at the spec files, not at `testpaths` or
    # the invocation directory's test* folders.
    ns = early_config.known_args_namespace
    if getattr(ns, "jaxpipe_specs", None) and not ns.file_or_dir:
        ns.file_or_dir = _spec_paths(ns.jaxpipe_specs)


def pytest_configure(config: pytest.Config) -> None:
    patterns = config.getoption("jaxpipe_specs")
    if not patterns:
        return
    paths = _spec_paths(patterns)
    if not paths:
        raise pytest.UsageError(f"--jaxpipe-specs {' '.join(patterns)}: no file matches")
    config.stash[_SPECS] = {os.path.abspath(p): p for p in paths}
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        config.args[:] = []  # no test path named: the spec checks alone
    given = {os.path.abspath(a) for a in config.args}
    config.args.extend(p for p in paths if os.path.abspath(p) not in given)


def pytest_collect_file(file_path: Any, parent: pytest.Collector) -> pytest.Collector | None:
    path = parent.config.stash.get(_SPECS, {}).get(os.path.abspath(file_path))
    if path is None:
        return None
    return SpecFile.from_parent(parent, path=file_path, spec_path=path)


class SpecFile(pytest.File):
    """A spec file named by --jaxpipe-specs: one SpecItem."""

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def collect(self) -> list[pytest.Item]:
        return [SpecItem.from_parent(self, name="jaxpipe-check", spec_path=self.spec_path)]


class SpecCheckFailed(Exception):
    """A spec failed one of its checks; the message lists which and why."""


class SpecItem(pytest.Item):
    """One spec file's `jaxpipe check`."""

    def __init__(self, *, spec_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec_path = spec_path

    def runtest(self) -> None:
        from jaxpipe.check.specs import check_specs, format_checks

        opt = self.config.getoption
        (result,) = check_specs(
            [self.spec_path],
            gpu=opt("jaxpipe_gpu"),
            devices=opt("jaxpipe_devices"),
            resume=opt("jaxpipe_resume"),
            sharding=opt("jaxpipe_sharding"),
        )
        if not result.ok:
            raise SpecCheckFailed(format_checks([result]))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style=None) -> str:
        if isinstance(excinfo.value, SpecCheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return self.spec_path, None, f"jaxpipe check {self.spec_path}"
