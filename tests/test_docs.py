"""The spec reference and README cannot drift from the schema the loader enforces."""

import os

from conftest import ROOT

from jaxpipe.spec.experiment import Spec, spec_markdown, spec_schema
from jaxpipe.spec.schema import _fields, is_section


def test_docs_spec_md_is_generated_from_the_schema():
    with open(os.path.join(ROOT, "docs", "spec.md")) as f:
        on_disk = f.read()
    assert on_disk == spec_markdown(), (
        "docs/spec.md is stale: regenerate it with "
        "`python -m jaxpipe.cli schema --format markdown > docs/spec.md`"
    )


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
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    for text in (
        "jaxpipe validate",
        "jaxpipe schema",
        "jaxpipe predict",
        "docs/spec.md",
        "Exit status",
        "evenBetterToml",
    ):
        assert text in readme, text
