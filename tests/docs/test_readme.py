"""The README's quickstart runs exactly as written (on the real data and LLM), and its commands name real things."""

from __future__ import annotations

import os
import re

import pytest

from ..testing_utils import requires_movielens_100k, requires_smollm2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        return handle.read()


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_the_readme_is_short_and_has_one_quickstart():
    text = readme()
    assert len(text.splitlines()) <= 160
    (block,) = python_blocks(text)
    assert len(block.strip().splitlines()) <= 25
    for name in ("IAMForCausalRecommendation.from_backbone", "IAMDataCollator", "Trainer(", "recommend(", "AutoModel"):
        assert name in block, name


def test_every_file_the_readme_names_exists_and_the_code_map_is_complete():
    text = readme()
    for path in re.findall(r"`((?:docs|examples|benchmarks|src|tests)/[\w./-]+)`", text):
        assert os.path.exists(os.path.join(ROOT, path)), path
    code_map = text.split("## Layout of the code", 1)[1].split("\n## ", 1)[0]
    package = os.path.join(ROOT, "src", "transformers_iam")
    for layer in ("core", "recsys", "integrations", "experiments"):
        for module in sorted(os.listdir(os.path.join(package, layer))):
            if module.endswith(".py") and module != "__init__.py":
                assert f"`{module}`" in code_map or f"`  {module}`" in code_map, f"{layer}/{module} is not in the map"
    for module in re.findall(r"(\w+\.py)`", code_map):
        assert any(
            os.path.isfile(os.path.join(folder, module))
            for folder, _, _ in os.walk(ROOT)
            if ".venv" not in folder and ".git" not in folder
        ), module


@pytest.mark.slow
@requires_movielens_100k
@requires_smollm2
def test_the_quickstart_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # it writes runs/quickstart where it runs
    (block,) = python_blocks(readme())
    exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    shown = eval(printed)  # the five recommended items' texts
    assert len(shown) == 5 and all(" | " in text for text in shown)
    assert not any(text.startswith("Star Wars") for text in shown)  # the history is excluded
    assert (tmp_path / "runs" / "quickstart" / "model" / "item_catalog.json").is_file()


def test_the_api_page_lists_every_public_name_and_every_config_field_with_its_default():
    import dataclasses

    import transformers_iam
    from transformers_iam import IAMConfig
    from transformers_iam.experiments.arguments import documented_arguments

    with open(os.path.join(ROOT, "docs", "api.md"), encoding="utf-8") as handle:
        page = handle.read()
    for name in transformers_iam.__all__:
        assert f"`{name}`" in page, name
    fields = dataclasses.fields(IAMConfig)
    for field in fields:
        if field.name in documented_arguments(IAMConfig):
            row = next((line for line in page.splitlines() if line.startswith(f"| `{field.name}` |")), None)
            assert row is not None, f"IAMConfig.{field.name} is not on docs/api.md"
            if field.default is not None:
                assert f"`{field.default!r}`".replace("'", '"') in row, (field.name, field.default)
