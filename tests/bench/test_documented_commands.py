"""Every bench command the README and the docs show is accepted by the bench's own options as written (its
placeholders filled in): an option the docs use cannot be renamed or narrowed without the docs following."""
from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
DOCS = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"python3? bench/(?P<bench>[a-z_]+)\.py(?P<args>(?:[ ]+(?:--?[a-z][a-z0-9-]*(?:[ =][^\s`|;&)\[\]]+)?"
                     r"|[A-Za-z0-9_.,/%-]+))*)")
PLACEHOLDERS = {"N": "2", "DIR": "runs/x", "X": "runs/x"}


class Parsed(Exception):
    """Raised where a bench's parser has accepted its arguments, before the bench runs."""


def commands() -> list:
    """One pytest param per distinct documented bench command: (bench module, its arguments)."""
    found: dict[tuple[str, str], str] = {}
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text(encoding="utf-8"))  # a command continued with a backslash
        for n, line in enumerate(text.splitlines(), 1):
            for m in COMMAND.finditer(line):
                found.setdefault((m.group("bench"), m.group("args").strip()), f"{doc.relative_to(ROOT)}:{n}")
    return [pytest.param(bench, args, id=where) for (bench, args), where in sorted(found.items())]


def test_the_docs_show_bench_commands():
    assert len(commands()) > 30


@pytest.mark.parametrize("bench, args", commands())
def test_a_documented_bench_command_parses(bench: str, args: str, monkeypatch, capsys) -> None:
    parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, argv=None, namespace=None):
        parse(self, argv, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    argv = [PLACEHOLDERS.get(token, token) for token in shlex.split(args)]
    with pytest.raises(Parsed):
        try:
            importlib.import_module(bench).main(argv)
        except SystemExit:
            err = capsys.readouterr().err.strip().splitlines()
            if err and "the following arguments are required: --out" in err[-1]:
                raise Parsed from None  # a command shown without its output folder
            pytest.fail(f"python bench/{bench}.py {args}: {err[-1] if err else 'exited'}")
