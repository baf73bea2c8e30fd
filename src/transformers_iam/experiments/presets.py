"""The named presets of ``examples/finetune.py``: each a set of values of the run's arguments (``arguments.py``; a
field left out keeps its dataclass default), overridden in turn by a ``--config`` file and by flags. What each was
measured to give is in docs/results.md (and how it was chosen in docs/notebook.md).

Example:
    >>> PRESETS["cpu-quick"]["num_backbone_layers"], PRESETS["cpu-full"]["num_train_epochs"]
    (4, 10.0)
"""

from __future__ import annotations

DEFAULT_PRESET = "cpu-quick"

# Item-level IAM on 2 CPU cores: SmolLM2's first layers, the intra ones and the token embeddings frozen (the item-state
# cache serves them), the inter layers above reading each item through its last state plus a learned id vector, a
# target after every item of every 50-item window.
ITEM_LEVEL_CPU_RECIPE: dict = dict(
    num_backbone_layers=6,
    max_history=50,
    max_length=1400,
    supervision="every_item",
    item_cache=True,
    freeze_embeddings=True,
    freeze_bottom_layers=3,
    num_item_tokens=1,
    use_item_id_embeddings=True,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    learning_rate=3e-4,
    adapter_learning_rate=1e-3,
    evaluations=4,
    eval_on_start=False,
    init_item_prior=False,
)

PRESETS: dict[str, dict] = {
    # The default: 3 cached intra layers and one inter layer, 5 epochs (about 4 minutes on 2 CPU cores).
    "cpu-quick": dict(
        ITEM_LEVEL_CPU_RECIPE, num_backbone_layers=4, iam_layer_types=["intra"] * 3 + ["inter"], num_train_epochs=5.0
    ),
    # The paper's token-level IAM (every token of every item in the inter layers), the previous default; 3 random
    # 10-item windows per user, 70% of an epoch (about 6 minutes).
    "cpu-quick-token-level": dict(
        num_backbone_layers=6,
        max_history=10,
        train_examples_per_user=3,
        supervision="every_item",
        item_cache=True,
        freeze_embeddings=True,
        item_embedding_learning_rate=1e-4,
        freeze_bottom_layers=3,
        num_train_epochs=0.7,
        per_device_train_batch_size=8,
        learning_rate=2e-4,
        evaluations=4,
        eval_on_start=False,
    ),
    # The longer ml-100k run: the item-level recipe with 3 inter layers for 10 epochs (about 14 minutes).
    "cpu-full": dict(ITEM_LEVEL_CPU_RECIPE, num_train_epochs=10.0),
    # MovieLens-1M within 2 hours on 2 CPU cores: the item-level recipe for 2 epochs, the popularity prior kept.
    "cpu-ml-1m": dict(
        ITEM_LEVEL_CPU_RECIPE,
        dataset="ml-1m",
        num_train_epochs=2.0,
        per_device_eval_batch_size=128,
        init_item_prior=True,
    ),
    # A GPU: the paper's token-level IAM on the whole backbone, every prefix, every layer trained (docs/gpu.md).
    "gpu": dict(
        num_backbone_layers=None,
        max_history=20,
        train_examples_per_user=None,
        freeze_embeddings=False,
        num_train_epochs=3.0,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=5e-5,
        evaluations=6,
        bf16=True,
    ),
}

__all__ = ["DEFAULT_PRESET", "ITEM_LEVEL_CPU_RECIPE", "PRESETS"]
