"""pytest plugin (entry point `pytest11`): `pytest --jaxpipe-specs "experiments/*.toml"`
adds one test per spec file that runs `jaxpipe check` on it.

Imported by pytest at start-up in every project that has jaxpipe installed, so it imports
nothing heavy (no jax, no hypothesis) until a spec test actually runs.
"""

from __future__ import annotations

import glob
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


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    patterns = config.getoption("jaxpipe_specs")
    if not patterns:
        return
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    if not paths:
        raise pytest.UsageError(f"--jaxpipe-specs {' '.join(patterns)}: no file matches")
    for path in paths:
        items.append(SpecItem.from_parent(session, name=f"jaxpipe-check[{path}]", spec_path=path))
