"""The package's layers import only downwards: core <- recsys <- integrations <- experiments."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "src" / "transformers_iam"
LAYERS = ["core", "recsys", "integrations", "experiments"]


def imported_layers(path: pathlib.Path) -> set[str]:
    """The layers of transformers_iam that a module imports (relative or absolute imports)."""
    layer_of_module = path.relative_to(PACKAGE).parts[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                found.add(layer_of_module)
            elif node.level == 2 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 0 and (node.module or "").startswith("transformers_iam."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("transformers_iam.")}
    return found & set(LAYERS)


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_from_layers_below_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    modules = sorted((PACKAGE / layer).glob("*.py"))
    assert modules, f"no modules in {layer}/"
    for module in modules:
        assert imported_layers(module) <= allowed, f"{module.name} imports {imported_layers(module) - allowed}"
