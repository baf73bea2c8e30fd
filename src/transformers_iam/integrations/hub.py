"""Sharing trained IAM models on the Hugging Face Hub, with a generated model card.

Example: ``push_to_hub(model, "org/iam-llama", collator=collator, results=results, figure=...)`` uploads the folder
that ``save_for_hub`` writes here (with a run's ``results`` and figure, the card shows its metrics and plot), and
``AutoModel.from_pretrained("org/iam-llama")`` loads it back as it loads the folder:
    >>> from transformers_iam.integrations.hub import save_for_hub
    >>> folder = os.path.join(tmp, "iam-llama")
    >>> save_for_hub(model, folder, "org/iam-llama", collator=collator)  # doctest: +NORMALIZE_WHITESPACE
    ['README.md', 'config.json', 'iam_collator.json', 'item_catalog.json', 'model.safetensors', 'tokenizer.json',
     'tokenizer_config.json']
    >>> import transformers_iam
    >>> from transformers import AutoModel
    >>> model = AutoModel.from_pretrained(folder)
    >>> type(model).__name__, model.catalog.item_ids[:3]
    ('IAMForCausalRecommendation', ['i0', 'i1', 'i2'])
"""

from __future__ import annotations

import os
import shutil
import tempfile

from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, ModelCardData

from ..core.collator import IAMDataCollator
from ..recsys.metrics import format_metrics_table
from ..recsys.results import results_rows

CARD_TEMPLATE = """---
{card_data}
---

# {title}

An LLM recommender with **item-aware attention** (IAM, "From Token to Item", WWW 2026), built with
the `transformers-iam` library. Each history item is a span
of tokens; `intra` layers let a token see only its own item, `inter` layers only other items and the
context, and a recommendation adapter scores the whole catalog ({num_items} items) from the last token.

- base model: `{base_model}`
- layer layout: {layout}
- weights: {weights}

## Data and protocol
{data}

{protocol}

## Results
{results}
{figure}

## How to load
```python
import transformers_iam  # registers IAM with the Auto classes
from transformers import AutoModel, pipeline

{load_lines}
recommender = pipeline("item-recommendation", model={repo!r})
recommender({{"history": ["<item id>", "<item id>"]}}, top_k=10)
```
"""


# the figure a run writes beside its checkpoint (experiments/run.py), under the same name in the repo
FIGURE_NAME = "validation_ndcg10.png"
FIGURE_TEXT = """
![Training loss and validation NDCG@10 during training, with popularity as a line]({name})

The training loss per logging step and validation NDCG@10 at each evaluation (the checkpoint with the best one is
this model), with popularity's validation NDCG@10 as a dashed line.
"""


def build_model_card(
    model, repo_id: str, results: dict | None = None, lora: bool = False, figure_name: str | None = None
) -> ModelCard:
    """A model card: base model, layer layout, dataset and split statistics, protocol, metrics table, the validation
    plot (``figure_name``: its file in the repo), how to load."""
    base = getattr(model, "get_base_model", lambda: model)()
    config = base.config
    base_model = (results or {}).get("model", {}).get("backbone") or config.name_or_path or "unknown"
    card_data = ModelCardData(
        library_name="transformers",
        tags=["recommendation", "item-aware-attention", "transformers-iam"] + (["peft", "lora"] if lora else []),
        # only a Hub id belongs in the metadata's base_model, not a local path or a GGUF description
        base_model=base_model
        if "/" in base_model and not os.path.exists(base_model) and " " not in base_model
        else None,
        model_name=repo_id,
    )
    if results:
        stats = results["dataset"]
        data = (
            f"{stats['name']}: {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions "
            f"(history length median {stats['history_median']}, max {stats['history_max']}); leave-one-out split with "
            f"a stable timestamp sort (ties keep file order); {stats['train_examples']} training examples."
        )
        table = format_metrics_table(results_rows(results))
        protocol = results["protocol"] + ". Checkpoint selected on validation NDCG@10; test evaluated once."
    else:
        data, table, protocol = "Not recorded.", "Not recorded.", ""
    if lora:
        load_lines = (
            "from peft import PeftModel\n"
            f'base = AutoModel.from_pretrained("<the full IAM base checkpoint>")\n'
            f"model = PeftModel.from_pretrained(base, {repo_id!r})"
        )
        weights = "LoRA adapter (attention and MLP projections) + the recommendation adapter in full"
    else:
        load_lines = f"model = AutoModel.from_pretrained({repo_id!r})"
        weights = "full model"
    text = CARD_TEMPLATE.format(
        card_data=card_data.to_yaml(),
        title=repo_id.split("/")[-1],
        num_items=config.num_items,
        base_model=base_model,
        layout=", ".join(config.resolved_layer_types),
        weights=weights,
        data=data,
        protocol=protocol,
        results=table,
        figure=FIGURE_TEXT.format(name=figure_name) if figure_name else "",
        load_lines=load_lines,
        repo=repo_id,
    )
    return ModelCard(text)


def save_for_hub(
    model,
    save_directory: str,
    repo_id: str,
    collator: IAMDataCollator | None = None,
    results: dict | None = None,
    figure: str | os.PathLike | None = None,
) -> list[str]:
    """Write what a Hub repo holds: weights (or LoRA adapter), config, catalog, prompt settings, tokenizer, card, and
    the run's validation plot (``figure``, e.g. ``runs/cpu-quick-stacked/validation_ndcg10.png``) shown in the card."""
    if figure is not None and not os.path.isfile(figure):
        raise FileNotFoundError(f"figure {os.fspath(figure)!r} does not exist (a run writes {FIGURE_NAME})")
    lora = hasattr(model, "peft_config")
    model.save_pretrained(save_directory)
    base = model.get_base_model() if lora else model
    if lora and base.catalog is not None:
        base.catalog.save(save_directory)
    if collator is not None:
        collator.save_pretrained(save_directory)
    if figure is not None:
        shutil.copyfile(figure, os.path.join(save_directory, FIGURE_NAME))
    card = build_model_card(model, repo_id, results, lora=lora, figure_name=FIGURE_NAME if figure else None)
    card.save(os.path.join(save_directory, "README.md"))
    return sorted(os.listdir(save_directory))


def push_to_hub(
    model,
    repo_id: str,
    collator: IAMDataCollator | None = None,
    results: dict | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload IAM recommender",
    api: HfApi | None = None,
    figure: str | os.PathLike | None = None,
):
    """Create (or reuse) the repo and upload the model, its catalog, prompt settings, model card (metrics table, and
    the validation plot when ``figure`` names the run's ``validation_ndcg10.png``) in one commit."""
    if figure is not None and not os.path.isfile(figure):  # before the repo is created
        raise FileNotFoundError(f"figure {os.fspath(figure)!r} does not exist (a run writes {FIGURE_NAME})")
    api = api or HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        # create_commit has the server validate README.md's metadata before any weights are uploaded
        names = save_for_hub(model, folder, repo_id, collator, results, figure=figure)
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=os.path.join(folder, name)) for name in names
        ]
        return api.create_commit(repo_id=repo_id, operations=operations, commit_message=commit_message)
