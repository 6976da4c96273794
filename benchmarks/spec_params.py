"""Functions in jaxpipe/ that take the whole Spec (issue 22 item 3).

    python benchmarks/spec_params.py [--list]

A function counts when one of its parameters is annotated `Spec` (bare, quoted, or as
`x.Spec`, optionally `| None`), or is named `spec` (however annotated: `Any`, `SpecLike`)
unless its annotation names something else: `str` (a format spec), a section
(`EarlyStoppingSpec`) or a `PartitionSpec`. Nested functions and methods count.
Prints the total, the count outside the face (api.py, sklearn.py, __init__.py), the
shells (runner/shell.py, sweep/shell.py, sweep/cv.py), check/ and testing/, and the
count per module; `--list` also names each function. Issue 22's target: whole-Spec
functions only at the face and the shell, at most 15.
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(HERE), "jaxpipe")
FACE = {"__init__.py", "api.py", "sklearn.py"}
SHELLS = {"runner/shell.py", "sweep/shell.py", "sweep/cv.py"}
EXEMPT_FOLDERS = ("check/", "testing/")


def _annotation_is_spec(node: ast.expr | None) -> bool:
    if node is None:
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _annotation_is_spec(node.left) or _annotation_is_spec(node.right)
    if isinstance(node, ast.Name):
        return node.id == "Spec"
    if isinstance(node, ast.Attribute):
        return node.attr == "Spec"
    return False


def _annotation_is_other(node: ast.expr | None) -> bool:
    """An annotation naming something that is not the experiment's Spec: `str` (a format
    spec), a section (`EarlyStoppingSpec`) or a `PartitionSpec`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            node = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            return False
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    return name == "str" or (name is not None and name.endswith("Spec") and name != "Spec")


def _takes_spec(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    a = fn.args
    params = a.posonlyargs + a.args + a.kwonlyargs
    return any(
        _annotation_is_spec(p.annotation)
        or (p.arg == "spec" and not _annotation_is_other(p.annotation))
        for p in params
    )


def spec_functions() -> dict[str, list[str]]:
    """{module path relative to jaxpipe/: [qualified names of functions taking the Spec]}."""
    found: dict[str, list[str]] = {}
    for root, dirs, files in os.walk(PACKAGE):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, PACKAGE).replace(os.sep, "/")
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), filename=path)
            names: list[str] = []

            def visit(node: ast.AST, prefix: str) -> None:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        qual = prefix + child.name
                        if _takes_spec(child):
                            names.append(qual)  # noqa: B023 - visit is called before the loop moves on
                        visit(child, qual + ".")
                    elif isinstance(child, ast.ClassDef):
                        visit(child, prefix + child.name + ".")
                    else:
                        visit(child, prefix)

            visit(tree, "")
            if names:
                found[rel] = names
    return found


def exempt(rel: str) -> bool:
    """The face, the shells, check/ and testing/ may take the whole Spec."""
    return rel in FACE or rel in SHELLS or rel.startswith(EXEMPT_FOLDERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--list", action="store_true", help="name each function")
    args = parser.parse_args(argv)
    if hasattr(signal, "SIGPIPE"):  # `| head` ends the listing quietly
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    found = spec_functions()
    total = sum(len(v) for v in found.values())
    outside = sum(len(v) for k, v in found.items() if not exempt(k))
    print(f"functions taking the whole Spec: {total}")
    print(f"outside face/shell/check/testing: {outside}")
    for rel in sorted(found, key=lambda k: (exempt(k), -len(found[k]), k)):
        mark = "  (face/shell/check/testing)" if exempt(rel) else ""
        print(f"  {len(found[rel]):3d}  {rel}{mark}")
        if args.list:
            for qual in found[rel]:
                print(f"         {qual}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
