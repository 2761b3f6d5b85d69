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
