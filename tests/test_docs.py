"""The docs keep up with the code: every config key in configuration.md, every command in
cli.md, and the files the guides point at exist."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from frontier_dag.cli.main import COMMANDS
from frontier_dag.config.hardware import HardwareConfig
from frontier_dag.config.model import ModelConfig
from frontier_dag.config.run import RunConfig
from frontier_dag.dsl import list_workflows

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def code_words(path: Path) -> set[str]:
    """Identifiers that appear in the code of a markdown file: fenced blocks and `spans`."""
    text = path.read_text()
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    code = fenced + re.findall(r"`([^`\n]+)`", prose)
    return {word for span in code for word in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span)}


def field_names(model: type[BaseModel], seen: set | None = None) -> set[str]:
    """Every key of a config model, nested models included."""
    seen = seen if seen is not None else set()
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for kind in _models_in(info.annotation):
            if kind not in seen:
                seen.add(kind)
                names |= field_names(kind, seen)
    return names


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


@pytest.mark.parametrize("model", [RunConfig, ModelConfig, HardwareConfig], ids=lambda m: m.__name__)
def test_configuration_md_names_every_key(model):
    missing = field_names(model) - code_words(DOCS / "configuration.md")
    assert not missing, f"docs/configuration.md does not mention {sorted(missing)}"


def test_configuration_md_names_every_workflow_param():
    words = code_words(DOCS / "configuration.md")
    for wf in list_workflows():
        if wf.fn.__module__.startswith("frontier_dag.workflows."):
            assert wf.name in words and set(wf.params) <= words, wf.name


def test_cli_md_has_a_section_per_command():
    text = (DOCS / "cli.md").read_text()
    for command in COMMANDS:
        assert re.search(rf"^## {re.escape(command)}\b", text, re.M), command


@pytest.mark.parametrize("name", ["architecture.md", "dsl.md", "cli.md", "configuration.md"])
def test_relative_links_resolve(name):
    for doc in [DOCS / name]:
        for target in re.findall(r"\]\((?!https?:|#)([^)#]+)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} links to missing {target}"


def documented_invocations() -> list[tuple[str, int, str]]:
    """(file, line, the text after ``frontier-dag``) of every command line shown in the code
    of README.md and docs/*.md (continuation lines joined, comments dropped)."""
    found = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        lines = path.read_text().splitlines()
        number = 0
        while number < len(lines):
            line = lines[number]
            match = re.match(r"^(?:\s{4,}|\s*\$ )(?:\$ )?frontier-dag(\s.*)?$", line)
            start = number
            number += 1
            if not match:
                continue
            text = match.group(1) or ""
            while text.rstrip().endswith("\\") and number < len(lines):
                text = text.rstrip()[:-1] + " " + lines[number].strip()
                number += 1
            found.append((path.name, start + 1, text.split(" #")[0].strip()))
    return found


def command_of(words: list[str]):
    """The click command that ``words`` name, and how many words that took."""
    import click

    from frontier_dag.cli.main import cli

    command, used = cli, 0
    while isinstance(command, click.Group) and used < len(words):
        sub = command.get_command(None, words[used])
        if sub is None:
            break
        command, used = sub, used + 1
    return command, used


INVOCATIONS = documented_invocations()


def test_the_docs_show_commands():
    assert len(INVOCATIONS) > 50
    assert {"README.md", "cli.md"} <= {name for name, _, _ in INVOCATIONS}


def test_cli_md_has_no_command_left_to_come():
    assert "not there yet" not in (DOCS / "cli.md").read_text().lower()


DOCUMENTED_COMMANDS = sorted({" ".join(t.split()[:command_of(t.split())[1]]) for _, _, t in INVOCATIONS} - {""})


@pytest.mark.parametrize("shown", DOCUMENTED_COMMANDS)
def test_every_documented_command_has_help(shown):
    """Each command the docs show answers --help (exit 0)."""
    from click.testing import CliRunner

    from frontier_dag.cli.main import cli

    result = CliRunner().invoke(cli, [*shown.split(), "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


@pytest.mark.parametrize(("name", "line", "text"), INVOCATIONS, ids=[f"{n}:{line}" for n, line, _ in INVOCATIONS])
def test_every_documented_option_exists(name, line, text):
    """The docs name only subcommands and options that the command has."""
    words = text.replace("[", " ").replace("]", " ").replace("|", " ").split()
    if not words or words[0].startswith("-") or words[0] in ("COMMAND", "..."):
        return  # the top-level synopsis
    import click

    command, used = command_of(words)
    assert used, f"{name}:{line}: frontier-dag {words[0]} is not a command"
    # a group followed by a placeholder (profile OP): the options of any of its commands
    commands = [command.get_command(None, c) for c in command.list_commands(None)] \
        if isinstance(command, click.Group) else [command]
    options = {opt for c in commands for param in c.params for opt in (*param.opts, *param.secondary_opts)}
    options |= {"--help", "-h"}
    for word in words[used:]:
        option = word.split("=")[0]
        if re.fullmatch(r"--?[a-z][a-z0-9-]*", option):
            assert option in options, f"{name}:{line}: frontier-dag {' '.join(words[:used])} has no option {option}"
