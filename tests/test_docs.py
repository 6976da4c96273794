"""The spec reference, README and the documentation site cannot drift from the code: the
schema the loader enforces, the commands and flags the CLI accepts, the files the
examples name, the public names the API page documents."""

import glob
import inspect
import json
import os
import re
import shlex
import sys

import pytest
from conftest import ROOT

import jaxpipe
from jaxpipe.cli.args import UsageError, build_parser
from jaxpipe.cli.main import main as jaxpipe_main
from jaxpipe.spec.experiment import Spec, spec_markdown, spec_schema
from jaxpipe.spec.schema import _fields, is_section

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_docs_spec_md_is_generated_from_the_schema():
    with open(os.path.join(ROOT, "docs", "spec.md")) as f:
        on_disk = f.read()
    assert on_disk == spec_markdown(), (
        "docs/spec.md is stale: regenerate it with "
        "`python -m jaxpipe schema --format markdown > docs/spec.md`"
    )
    # Markdown would take a bare <run> for an HTML tag and hide it.
    assert not re.search(r"<[A-Za-z_]+>", re.sub(r"`[^`]*`", "", on_disk))


def test_every_key_is_documented():
    text = spec_markdown()
    schema = spec_schema()

    def walk(cls, path, node):
        for f, tp in _fields(cls):
            inner = [a for a in getattr(tp, "__args__", (tp,)) if a is not type(None)]
            if f.name == getattr(cls, "_extra", None):
                continue
            if len(inner) == 1 and is_section(inner[0]):
                assert f"## `[{path + '.' if path else ''}{f.name}]`" in text
                walk(inner[0], f"{path + '.' if path else ''}{f.name}", None)
                continue
            assert f.metadata.get("doc"), f"{path}.{f.name} has no doc"
            assert f"| `{f.name}` |" in text, f.name

    walk(Spec, "", schema)


def test_readme_documents_commands_and_exit_codes():
    text = "".join(_read(path) for path in _PAGES)
    for needle in (
        "jaxpipe validate",
        "jaxpipe schema",
        "jaxpipe predict",
        "docs/spec.md",
        "Exit status",
        "evenBetterToml",
        "pip install -e '.[cuda12]'",
    ):
        assert needle in text, needle


# README and every page of the site (docs/spec.md is generated, checked above).
_PAGES = ["README.md"] + sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
)


def _read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def _blocks(lang: str) -> list[tuple[str, str]]:
    """(page, code) of every fenced block of `lang` in README and the site."""
    fence = re.compile(r"^```" + re.escape(lang) + r"\n(.*?)^```", re.M | re.S)
    return [(page, m.group(1)) for page in _PAGES for m in fence.finditer(_read(page))]


def _commands(code: str) -> list[list[str]]:
    """The simple commands of a shell block: continuations joined, comments dropped,
    split at `&&`, `|`, `;`, redirections and their targets removed, `env`, `srun` and
    VAR=value prefixes stripped."""
    out = []
    for line in code.replace("\\\n", " ").splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split, lex.commenters = True, "#"
        cmd: list[str] = []
        tokens = iter(list(lex))
        for tok in tokens:
            if tok in ("&&", "||", "|", ";"):
                out.append(cmd)
                cmd = []
            elif tok in (">", ">>", "<", "2>"):
                next(tokens, None)
            else:
                cmd.append(tok)
        out.append(cmd)
    cleaned = []
    for cmd in out:
        while cmd and (cmd[0] in ("env", "srun", "$") or re.fullmatch(r"[A-Z_]+=\S*", cmd[0])):
            cmd = cmd[1:]
        if cmd:
            cleaned.append(cmd)
    return cleaned


_REPO_DIRS = ("experiments/", "benchmarks/", "tests/", "jaxpipe/", "docs/", ".ci/")


def _jaxpipe_argv(cmd: list[str]) -> list[str] | None:
    if cmd[0] == "jaxpipe":
        return cmd[1:]
    if cmd[:3] in (["python", "-m", "jaxpipe"], ["python3", "-m", "jaxpipe"]):
        return cmd[3:]
    return None


def _script_text(path: str) -> str:
    """A script's source and its sibling modules' it imports (harness.py hands its
    flags to targets.py)."""
    text = _read(path)
    here = os.path.dirname(path)
    for mod in re.findall(r"^\s*import (\w+)$", text, re.M):
        if os.path.exists(os.path.join(ROOT, here, f"{mod}.py")):
            text += _read(os.path.join(here, f"{mod}.py"))
    return text


def _shell_commands() -> list[tuple[str, list[str]]]:
    return [(page, cmd) for page, code in _blocks("bash") for cmd in _commands(code)]


def test_shell_examples_parse_and_name_files_that_exist():
    """Every command in README's and the site's bash blocks: a `jaxpipe` command line
    parses with the CLI's own parser (its flags and arguments exist), a repository path
    it names exists (a glob matches), a pip extra is in pyproject.toml, a script's flags
    are in the script, the pytest plugin's flags are the plugin's."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = set(tomllib.load(f)["project"]["optional-dependencies"])
    plugin = _read("jaxpipe/pytest_plugin.py")
    parser = build_parser()
    seen = 0
    for page, cmd in _shell_commands():
        where = f"{page}: {shlex.join(cmd)}"
        for tok in cmd:
            path = tok.split("=", 1)[-1]
            if path.startswith(_REPO_DIRS) and not path.endswith("/"):
                assert glob.glob(os.path.join(ROOT, path)), f"{where}: no file {path}"
        argv = _jaxpipe_argv(cmd)
        if argv is not None:
            seen += 1
            try:
                parser.parse_args(argv)
            except UsageError as e:
                pytest.fail(f"{where}: {e}")
        elif cmd[:2] == ["pip", "install"]:
            for extra in re.findall(r"\[([a-z0-9,_-]+)\]", " ".join(cmd)):
                assert set(extra.split(",")) <= extras, f"{where}: extra {extra}"
        elif (
            cmd[0] in ("python", "python3", "bash") and cmd[1:2] and cmd[1].endswith((".py", ".sh"))
        ):
            script = _script_text(cmd[1])
            for flag in (t for t in cmd[2:] if t.startswith("--")):
                assert f'"{flag.split("=")[0]}"' in script, f"{where}: {flag} not in {cmd[1]}"
        for flag in (t for t in cmd if t.startswith("--jaxpipe-")):
            assert f'"{flag}"' in plugin, f"{where}: the plugin has no {flag}"
    assert seen > 40  # the parser above saw the documented commands


@pytest.mark.parametrize("argv", [["validate", "experiments/penguins.toml"], ["schema"]])
def test_documented_cheap_commands_run(argv, capsys, monkeypatch):
    """The cheap documented commands run as shown (in-process: no interpreter start)."""
    documented = {tuple(_jaxpipe_argv(cmd) or ()) for _, cmd in _shell_commands()}
    assert tuple(argv) in documented
    monkeypatch.chdir(ROOT)
    assert jaxpipe_main(argv) == 0
    out = capsys.readouterr().out
    if argv[0] == "schema":
        assert json.loads(out)["title"]
    else:
        assert "valid" in out and "3 classes (Adelie, Chinstrap, Gentoo)" in out


def test_toml_examples_are_valid_specs_and_json_examples_parse():
    """Every TOML block parses; one that is a spec or a part of one (its tables are spec
    sections) builds a Spec, checked as a file is. Every JSON block parses."""
    sections = {f.name for f, _ in _fields(Spec)}
    specs = 0
    for page, code in _blocks("toml"):
        table = tomllib.loads(code)
        if set(table) <= sections:
            Spec.from_dict(table)
            specs += 1
        else:  # pragma: no cover - a TOML example of something else would go here
            pytest.fail(f"{page}: a TOML block that is not a spec: {sorted(table)}")
    assert specs >= 6
    for _, code in _blocks("json"):
        json.loads(code)


def test_python_examples_compile_and_use_public_names():
    """Python blocks (and `>>>` sessions) compile; every `jaxpipe.NAME` they use is
    public, and so is every name they import from jaxpipe.testing."""
    import jaxpipe.testing

    blocks = _blocks("python")
    assert len(blocks) >= 5
    for page, code in blocks:
        if code.lstrip().startswith(">>>"):
            code = "\n".join(line[4:] for line in code.splitlines() if line.startswith(">>> "))
        compile(code, page, "exec")
        for name in re.findall(r"\bjaxpipe\.([A-Za-z_]\w*)", code):
            # the public names, and the two public modules (jaxpipe.testing, jaxpipe.sklearn)
            assert name in jaxpipe.__all__ or name in ("testing", "sklearn"), f"{page}: {name}"
        for names in re.findall(r"from jaxpipe\.testing import ([\w, ]+)", code):
            for name in names.replace(" ", "").split(","):
                assert name in jaxpipe.testing.__all__, f"{page}: jaxpipe.testing.{name}"


def test_readme_links_resolve():
    """README's relative links work on GitHub too (the site's are checked by its strict
    build)."""
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", _read("README.md")):
        if "://" not in target:
            assert os.path.exists(os.path.join(ROOT, target)), target


def test_site_navigation_lists_every_page():
    nav = set(re.findall(r"^\s+- (?:[^:]+: )?(\S+\.md)$", _read("mkdocs.yml"), re.M))
    pages = {os.path.relpath(p, os.path.join(ROOT, "docs")) for p in _PAGES if p != "README.md"}
    assert nav == pages


def test_api_page_documents_every_public_name():
    """docs/api.md renders every public name of `jaxpipe` from the module that defines
    it (the lazy names resolved, as mkdocstrings reads the source and imports nothing)."""
    text = _read("docs/api.md")
    blocks = dict(re.findall(r"^::: (\S+)\n((?:    .*\n|\s*\n)*)", text, re.M))
    for name in jaxpipe.__all__:
        if name == "__version__":
            continue
        obj = getattr(jaxpipe, name)
        module, attr = obj.__module__, obj.__name__
        assert module in blocks, f"jaxpipe.{name}: no `::: {module}` in docs/api.md"
        members = blocks[module]
        assert "members:" not in members or re.search(rf"\b{attr}\b", members), name
        # Markdown passes a bare <word> through as an HTML tag, which the page then hides.
        text = re.sub(r"`[^`]*`", "", inspect.getdoc(obj) or "")
        assert not re.search(r"<[A-Za-z_]+>", text), (
            f"jaxpipe.{name}: a bare <...> in its docstring"
        )


def _shape(line):
    """A console line with what varies between runs and machines made alike: every
    number (timings, memory, metrics to the last digit) and the run directory's name."""
    line = re.sub(r"runs/seed-tabular-[\d-]+", "RUN", line)
    line = re.sub(r"\d+(\.\d+)? (ms|s)\b", "TIME", line)  # 94 ms here, 0.14 s there
    line = re.sub(r"\d+(\.\d+)?", "#", line).rstrip()
    # Right-aligned figures: the padding before one follows its width (" 21 ms", "  1 ms").
    return re.sub(r" +(?=TIME|#)", " ", line)


def test_shown_seed_output_is_what_the_seed_run_prints(tmp_path):
    """README's tour and getting-started show `jaxpipe run experiments/seed.toml --plain`:
    every line shown is, in order, a line the run prints now (numbers aside), so the
    pages follow the console when its wording changes (issue 27)."""
    import subprocess

    from conftest import cached_env

    env = cached_env(os.environ | {"PYTHONPATH": ROOT, "XLA_FLAGS": ""})  # a user's 1 CPU
    p = subprocess.run(
        [sys.executable, "-m", "jaxpipe", "run", "experiments/seed.toml", "--plain",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    printed = [_shape(x.replace(str(tmp_path / "run"), "RUN")) for x in p.stdout.splitlines()]
    for page in ("README.md", "docs/getting-started.md"):
        text = open(os.path.join(ROOT, page), encoding="utf-8").read()
        blocks = [b for b in re.findall(r"```text\n(.*?)\n```", text, re.S) if _is_seed(b)]
        assert blocks, page
        for block in blocks:
            at = 0
            for line in block.splitlines():
                if line.strip() in ("", "..."):
                    continue
                shape = _shape(line)
                assert shape in printed[at:], (page, line)
                at = printed.index(shape, at) + 1


def _is_seed(block):
    heads = ("jaxpipe run: seed-tabular", "Data flow", "Model\n", "Training", "Loss\n")
    return (
        block.startswith(heads)
        or "Prediction trace (validation row 0)" in block
        or (block.startswith("Wrote runs/seed-tabular"))
    )
