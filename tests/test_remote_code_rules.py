"""The remote-code files (they travel with a saved folder and load with `trust_remote_code=True` where the package
is not installed) import only what a user of transformers has, relatively only inside their own folder, and each
file's docstring names everything it imports at its top."""

import ast
import sys
from pathlib import Path

import pytest

import commercemm_hf


PACKAGE = Path(commercemm_hf.__file__).parent
REMOTE_CODE_FOLDERS = ("modeling", "processing", "pipelines")
# transformers and its own dependencies: present wherever a remote-code folder can load
ALLOWED = {"torch", "transformers", "huggingface_hub", "safetensors", "numpy", "PIL", "tokenizers"}
# sentence-transformers loads this module itself, so it is there whenever the module is
EXTRA_ALLOWED = {"sentence_commercemm.py": {"sentence_transformers"}}
FILES = sorted(path for folder in REMOTE_CODE_FOLDERS for path in (PACKAGE / folder).glob("*_commercemm*.py"))


def top_level_imports(tree: ast.Module) -> tuple[set[str], list[int]]:
    """(third-party top packages imported at module level, levels of the relative imports)."""
    packages, levels = set(), []
    for node in tree.body:
        if isinstance(node, ast.Import):
            packages |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                levels.append(node.level)
            elif node.module != "__future__":
                packages.add(node.module.split(".")[0])
    return {name for name in packages if name not in sys.stdlib_module_names}, levels


def test_there_are_remote_code_files():
    names = {path.name for path in FILES}
    assert {"modeling_commercemm.py", "processing_commercemm.py", "pipeline_commercemm_search.py"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_imports_follow_the_remote_code_rule_the_docstring_states(path):
    tree = ast.parse(path.read_text())
    packages, levels = top_level_imports(tree)
    assert packages <= ALLOWED | EXTRA_ALLOWED.get(path.name, set()), (
        f"{path.name} imports {sorted(packages - ALLOWED)} at its top"
    )
    assert all(level == 1 for level in levels), f"{path.name} imports from outside its folder"
    docstring = ast.get_docstring(tree) or ""
    assert "remote code" in docstring, f"{path.name} does not state its import rule"
    named = docstring.replace("`", "")
    unnamed = sorted(name for name in packages if name not in named)
    assert not unnamed, f"{path.name}'s docstring does not name {unnamed}, which it imports"
    if levels:
        assert "sibling" in docstring, f"{path.name} imports siblings but its docstring does not say so"
