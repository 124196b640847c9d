"""The README, read as a user would: every ```python block runs as written (in order, in one namespace, from a folder
holding what the README names: `outputs/demo/commercemm-tiny-demo`, `pairs.jsonl`, `omni.jsonl`), and every
`commercemm ...` command line of its ```bash blocks parses with the real command line (flags and values exist).

The names the README introduces in prose (`image`, `folder`, `catalog`, `ids`, `new_products`, `new_ids`,
`categorization_folder`, `title`, `photo`) are given here; the only change to a block is a smaller step count
(`max_steps=1000` -> 2)."""

import re
import shlex
from pathlib import Path

import pytest
from helpers import random_image

from commercemm_hf.cli import parse_arguments


README = Path(__file__).resolve().parent.parent / "README.md"
SUBSTITUTIONS = {"max_steps=1000": "max_steps=2"}


def blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of each fenced block of `language`."""
    found, lines = [], README.read_text(encoding="utf-8").splitlines()
    start = None
    for number, line in enumerate(lines, 1):
        if start is None and line.strip() == f"```{language}":
            start = number
        elif start is not None and line.strip() == "```":
            found.append((start, "\n".join(lines[start:number - 1])))
            start = None
    return found


def test_every_python_block_runs_as_written(readme_workdir, monkeypatch):
    monkeypatch.chdir(readme_workdir)
    catalog = [(random_image(index), f"product {index} ceramic mug") for index in range(6)]
    namespace = {
        "image": random_image(100), "photo": random_image(101), "title": "red ceramic mug",
        "folder": "outputs/demo/commercemm-tiny-demo", "categorization_folder": "outputs/categorizer",
        "catalog": catalog, "ids": [f"sku-{index}" for index in range(6)],
        "new_products": [{"image": random_image(200), "text": "blue lamp"}], "new_ids": ["sku-new"],
    }
    python_blocks = blocks("python")
    assert len(python_blocks) >= 5
    for line, code in python_blocks:
        if "(not run by tests/test_readme.py" in code.splitlines()[0]:
            continue  # the block says why (a server, files of a command); the ones that can run, run
        for old, new in SUBSTITUTIONS.items():
            code = code.replace(old, new)
        try:
            exec(compile(code, f"README.md, block at line {line}", "exec"), namespace)
        except Exception as error:
            raise AssertionError(f"README.md block at line {line} fails: {type(error).__name__}: {error}") from error
    assert namespace["vectors"].shape == (3, namespace["encoder"].model.config.projection_dim)
    assert namespace["trainer"].state.global_step == 2


def command_lines() -> list[tuple[int, str]]:
    """Each `commercemm ...` command of the bash blocks, continuation lines joined, comments dropped; lines with
    placeholders (`...`) are left out."""
    found = []
    for start, code in blocks("bash"):
        joined = re.sub(r"\\\n\s*", " ", code)
        for offset, line in enumerate(joined.splitlines()):
            line = line.split(" #", 1)[0].strip()
            if line.startswith("commercemm ") and "..." not in line:
                found.append((start + offset, line))
    return found


@pytest.mark.parametrize("line, command", command_lines())
def test_every_commercemm_command_line_parses(line, command):
    try:
        args = parse_arguments(shlex.split(command)[1:])
    except SystemExit as error:
        raise AssertionError(f"README.md line ~{line}: {command!r} does not parse ({error})") from error
    assert args.command in command
