"""jaxpipe.settings: each environment knob's default, a set value and its parsing, read
at call time; the module docstring names every variable; nothing below the face reads
the environment but settings."""

import ast
import os
import re

import pytest
from conftest import ROOT

from jaxpipe import settings

PACKAGE = os.path.join(ROOT, "jaxpipe")
# Above the public face: these may read the environment directly (their own knobs).
ABOVE_FACE = ("check", "testing", "cli", "__main__.py", "pytest_plugin.py")

KNOBS = (
    "JAXPIPE_COMPILATION_CACHE",
    "JAXPIPE_CACHE_DIR",
    "XDG_CACHE_HOME",
    "JAXPIPE_CPU_THREADING",
    "JAXPIPE_PLAIN",
    "TERM",
    "NO_COLOR",
    "JAXPIPE_DEBUG",
    "JAXPIPE_VERBOSE_COLLECTIVES",
    "XLA_FLAGS",
    "XLA_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "XLA_PYTHON_CLIENT_ALLOCATOR",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "JAXPIPE_COORDINATOR",
    "JAXPIPE_NUM_PROCESSES",
    "JAXPIPE_PROCESS_ID",
    "JAXPIPE_DISTRIBUTED",
    "MLFLOW_ALLOW_FILE_STORE",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "JAXPIPE_PROFILE_DIR",
)


@pytest.fixture
def env(monkeypatch):
    """A monkeypatch over an environment without any of the knobs (restored after)."""
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_compilation_cache_dir_defaults_under_the_home_cache(env, tmp_path):
    env.setenv("HOME", str(tmp_path))
    assert settings.compilation_cache_dir() == os.path.join(tmp_path, ".cache", "jaxpipe", "xla")
    env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert settings.compilation_cache_dir() == os.path.join(tmp_path, "xdg", "jaxpipe", "xla")
    env.setenv("JAXPIPE_CACHE_DIR", str(tmp_path / "mine"))
    assert settings.compilation_cache_dir() == str(tmp_path / "mine")
    env.setenv("JAXPIPE_CACHE_DIR", "")  # empty: as unset
    assert settings.compilation_cache_dir() == os.path.join(tmp_path, "xdg", "jaxpipe", "xla")


@pytest.mark.parametrize("value", ["0", "false", "no", "off", " No ", "OFF", "False"])
def test_compilation_cache_off_values(env, value):
    env.setenv("JAXPIPE_CACHE_DIR", "/somewhere")
    env.setenv("JAXPIPE_COMPILATION_CACHE", value)
    assert settings.compilation_cache_dir() is None


@pytest.mark.parametrize("value", ["1", "true", "yes", "", "on", "2"])
def test_compilation_cache_on_values(env, value):
    env.setenv("JAXPIPE_CACHE_DIR", "/somewhere")
    env.setenv("JAXPIPE_COMPILATION_CACHE", value)
    assert settings.compilation_cache_dir() == "/somewhere"


@pytest.mark.parametrize(
    "value, expected",
    [("single", "single"), (" Single ", "single"), ("MULTI", "multi"), ("auto", None)]
    + [("", None), ("1", None)],
)
def test_cpu_threading(env, value, expected):
    assert settings.cpu_threading() is None
    env.setenv("JAXPIPE_CPU_THREADING", value)
    assert settings.cpu_threading() == expected


@pytest.mark.parametrize(
    "value, expected",
    [("", False), ("0", False), ("false", False), (" No ", False), ("FALSE", False)]
    + [("1", True), ("yes", True), ("true", True), ("off", True)],
)
def test_plain_console(env, value, expected):
    assert settings.plain_console() is False
    env.setenv("JAXPIPE_PLAIN", value)
    assert settings.plain_console() is expected


def test_set_plain_console_is_seen_by_plain_console(env):
    settings.set_plain_console()
    assert os.environ["JAXPIPE_PLAIN"] == "1"
    assert settings.plain_console() is True


@pytest.mark.parametrize("value, expected", [("dumb", True), ("Dumb", False), ("xterm", False)])
def test_dumb_terminal(env, value, expected):
    assert settings.dumb_terminal() is False
    env.setenv("TERM", value)
    assert settings.dumb_terminal() is expected


@pytest.mark.parametrize("name, read", [("NO_COLOR", "no_color"), ("JAXPIPE_DEBUG", "debug")])
@pytest.mark.parametrize("value, expected", [("", False), ("1", True), ("0", True), ("x", True)])
def test_set_means_on_flags(env, name, read, value, expected):
    """NO_COLOR (no-color.org) and JAXPIPE_DEBUG: any non-empty value, even "0", is on."""
    assert getattr(settings, read)() is False
    env.setenv(name, value)
    assert getattr(settings, read)() is expected


@pytest.mark.parametrize(
    "value, expected", [("", False), ("0", False), ("1", True), ("false", True), (" 0", True)]
)
def test_verbose_collectives_is_off_only_for_empty_or_zero(env, value, expected):
    assert settings.verbose_collectives() is False
    env.setenv("JAXPIPE_VERBOSE_COLLECTIVES", value)
    assert settings.verbose_collectives() is expected


def test_xla_flags_as_written(env):
    assert settings.xla_flags() == ""
    flags = " --xla_force_host_platform_device_count=4  --xla_dump_to=/tmp/x "
    env.setenv("XLA_FLAGS", flags)
    assert settings.xla_flags() == flags


def test_gpu_mem_fractions_in_jaxlibs_order_stripped_unparsed(env):
    assert settings.gpu_mem_fractions() == {
        "XLA_CLIENT_MEM_FRACTION": "",
        "XLA_PYTHON_CLIENT_MEM_FRACTION": "",
    }
    env.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", " 0.5 ")
    env.setenv("XLA_CLIENT_MEM_FRACTION", "lots")
    got = settings.gpu_mem_fractions()
    assert list(got) == ["XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION"]
    assert got == {"XLA_CLIENT_MEM_FRACTION": "lots", "XLA_PYTHON_CLIENT_MEM_FRACTION": "0.5"}


def test_gpu_allocator_lower_cased_unchecked(env):
    assert settings.gpu_allocator() == "default"
    env.setenv("XLA_PYTHON_CLIENT_ALLOCATOR", " Platform ")
    assert settings.gpu_allocator() == "platform"
    env.setenv("XLA_PYTHON_CLIENT_ALLOCATOR", "Magic")
    assert settings.gpu_allocator() == "magic"


@pytest.mark.parametrize(
    "value, expected",
    [("false", False), ("False", False), ("0", False), (" false ", False)]
    + [("FALSE", True), ("no", True), ("true", True), ("", True), ("1", True)],
)
def test_gpu_preallocate_as_jaxlib_parses_it(env, value, expected):
    assert settings.gpu_preallocate() is True
    env.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", value)
    assert settings.gpu_preallocate() is expected


def test_distributed_variables(env):
    assert settings.coordinator() is None
    assert settings.num_processes() is None and settings.process_id() is None
    assert settings.distributed_auto() is False
    env.setenv("JAXPIPE_COORDINATOR", "10.0.0.1:1234")
    env.setenv("JAXPIPE_NUM_PROCESSES", "4")
    env.setenv("JAXPIPE_PROCESS_ID", "3")
    assert settings.coordinator() == "10.0.0.1:1234"
    assert settings.num_processes() == 4 and settings.process_id() == 3
    env.setenv("JAXPIPE_NUM_PROCESSES", "")
    assert settings.num_processes() is None


def test_a_count_that_is_not_an_integer_is_a_value_error(env):
    env.setenv("JAXPIPE_NUM_PROCESSES", "four")
    with pytest.raises(ValueError, match="four"):
        settings.num_processes()
    env.setenv("JAXPIPE_PROCESS_ID", "1.5")
    with pytest.raises(ValueError, match="1.5"):
        settings.process_id()


@pytest.mark.parametrize(
    "value, expected", [("auto", True), ("AUTO", True), (" auto", False), ("1", False)]
)
def test_distributed_auto(env, value, expected):
    env.setenv("JAXPIPE_DISTRIBUTED", value)
    assert settings.distributed_auto() is expected


def test_distributed_config_reads_the_settings(env):
    from jaxpipe.errors import JaxpipeError
    from jaxpipe.parallel.sharding import distributed_config

    assert distributed_config() is None
    env.setenv("JAXPIPE_DISTRIBUTED", "auto")
    assert distributed_config() == {}
    env.setenv("JAXPIPE_COORDINATOR", "h:1")
    env.setenv("JAXPIPE_NUM_PROCESSES", "2")
    env.setenv("JAXPIPE_PROCESS_ID", "1")
    assert distributed_config() == {"coordinator": "h:1", "num_processes": 2, "process_id": 1}
    assert distributed_config(process_id=0)["process_id"] == 0  # an argument wins
    env.setenv("JAXPIPE_PROCESS_ID", "one")
    with pytest.raises(JaxpipeError, match="JAXPIPE_NUM_PROCESSES / JAXPIPE_PROCESS_ID"):
        distributed_config()
    assert distributed_config(process_id=1)["process_id"] == 1  # the bad variable unread


def test_environment_is_a_copy(env):
    env.setenv("JAXPIPE_PLAIN", "1")
    copy = settings.environment()
    assert type(copy) is dict and copy == dict(os.environ)
    copy["JAXPIPE_PLAIN"] = "changed"
    copy["JAXPIPE_NEW_NAME"] = "x"
    assert os.environ["JAXPIPE_PLAIN"] == "1"
    assert "JAXPIPE_NEW_NAME" not in os.environ


def test_allow_mlflow_file_store_keeps_a_users_value(env):
    settings.allow_mlflow_file_store()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
    env.setenv("MLFLOW_ALLOW_FILE_STORE", "false")
    settings.allow_mlflow_file_store()
    assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "false"


def _settings_source() -> str:
    with open(os.path.join(PACKAGE, "settings.py")) as f:
        return f.read()


def test_the_docstring_names_every_variable_read_or_set():
    source = _settings_source()
    names = set(re.findall(r'"([A-Z][A-Z0-9_]{2,})"', source))
    assert {"JAXPIPE_PLAIN", "XLA_FLAGS", "MLFLOW_ALLOW_FILE_STORE"} <= names
    assert names <= set(KNOBS)
    missing = sorted(n for n in names if n not in (settings.__doc__ or ""))
    assert missing == []


def test_every_function_has_a_docstring_naming_its_variable():
    for name in settings.__all__:
        doc = getattr(settings, name).__doc__ or ""
        assert re.search(r"\b[A-Z][A-Z0-9_]{2,}\b", doc) or name == "environment", name


def _reads_environment(tree: ast.AST) -> list[int]:
    """Lines that touch `os.environ`, `os.getenv`/`putenv`/`unsetenv` or import them."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in (
            "environ",
            "environb",
            "getenv",
            "getenvb",
            "putenv",
            "unsetenv",
        ):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "environb", "getenv", "putenv") for a in node.names):
                lines.append(node.lineno)
    return lines


def test_only_settings_reads_the_environment_below_the_face():
    bad = []
    for folder, dirs, files in os.walk(PACKAGE):
        rel = os.path.relpath(folder, PACKAGE)
        if rel.split(os.sep)[0] in ABOVE_FACE:
            dirs.clear()
            continue
        for name in files:
            path = os.path.join(rel, name) if rel != "." else name
            if not name.endswith(".py") or path in ABOVE_FACE or path == "settings.py":
                continue
            with open(os.path.join(folder, name)) as f:
                tree = ast.parse(f.read())
            bad += [f"jaxpipe/{path}:{line}" for line in _reads_environment(tree)]
    assert bad == [], f"read the environment through jaxpipe.settings: {bad}"


def test_settings_is_a_foundation_module():
    """Standard library only (and jaxpipe.errors at most): no jax, nothing above it."""
    tree = ast.parse(_settings_source())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    assert imported <= {"__future__", "os", "typing", "jaxpipe.errors"}, imported
