"""README.md: the quickstart is what CI runs, and its Python example runs."""

from __future__ import annotations

import re

from PIL import Image

from .conftest import REPO, natural_image

README = (REPO / "README.md").read_text()


def code_blocks(section: str, language: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", body, flags=re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_second_verbatim():
    commands = [block.strip() for block in code_blocks("Quickstart", "bash")]
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines


def test_python_api_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(natural_image(96, 128)).save("photo.png")
    (example,) = code_blocks("Python API", "python")
    namespace = {}
    exec(compile(example, "README.md", "exec"), namespace)
    assert namespace["coarse"].size == (128, 96)
    assert namespace["header"].model_name == "base"
