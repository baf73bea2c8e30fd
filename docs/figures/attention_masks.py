"""Draw the attention masks of docs/architecture.md from the library's own mask code (nothing drawn by hand).

python docs/figures/attention_masks.py            # writes docs/images/masks_kinds.png and docs/images/masks_layouts.png

One short history (a prompt, three movies, the query) is cut into tokens with their item segment ids; the masks are
``transformers_iam.core.masks.item_aware_mask`` of those ids, and the layouts' per-layer kinds come from
``transformers_iam.core.configuration_iam.layer_types_for_layout``. A cell is coloured when the query token (row) may
attend to the key token (column), in the colour of the key's segment: grey for the context, one colour per item.
"""

from __future__ import annotations

import argparse
import os

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from transformers_iam.core.configuration_iam import IAM_LAYOUTS, layer_types_for_layout  # noqa: E402
from transformers_iam.core.masks import LAYER_TYPES, item_aware_mask  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(os.path.dirname(HERE), "images")
# (tokens, segment id): segment 0 is the context (prompt and query), 1..n the history items, oldest first
EXAMPLE = [
    (["User", "watched:"], 0),
    (["Toy", "Story", "(1995)"], 1),
    (["Fargo", "(1996)"], 2),
    (["Heat", "(1995)"], 3),
    (["Next", "movie:"], 0),
]
SEGMENT_COLOURS = ["#9e9e9e", "#1f77b4", "#ff7f0e", "#2ca02c"]
NUM_LAYERS = 6
DESCRIPTION = {
    "intra": "a token sees only its own item\n(context tokens: the context)",
    "inter": "a token sees the other items,\nthe context and itself",
    "full": "plain causal attention",
}


def example_tokens() -> tuple[list[str], torch.Tensor]:
    """The example history's tokens and their item segment ids ``(1, length)``.

    Example:
        >>> tokens, segments = example_tokens()
        >>> tokens[2], segments[0, 2].item()
        ('Toy', 1)
    """
    tokens = [token for words, _ in EXAMPLE for token in words]
    segments = [segment for words, segment in EXAMPLE for _ in words]
    return tokens, torch.tensor([segments])


def mask_of(kind: str, segments: torch.Tensor) -> np.ndarray:
    """The library's mask of one layer kind, ``(query, key)``, True where attention is allowed."""
    return item_aware_mask(segments, kind)[0, 0].numpy()


def coloured(mask: np.ndarray, segments: torch.Tensor) -> np.ndarray:
    """An RGB image of ``mask``: allowed cells in the key's segment colour, the rest white."""
    keys = segments[0].tolist()
    image = np.ones(mask.shape + (3,))
    for key, segment in enumerate(keys):
        image[mask[:, key], key] = to_rgb(SEGMENT_COLOURS[segment % len(SEGMENT_COLOURS)])
    return image


def draw_kinds(path: str) -> None:
    """The three kinds side by side, with the example's tokens on both axes."""
    tokens, segments = example_tokens()
    figure, axes = plt.subplots(1, len(LAYER_TYPES), figsize=(15, 5.6))
    for axis, kind in zip(axes, LAYER_TYPES):
        axis.imshow(coloured(mask_of(kind, segments), segments), interpolation="nearest")
        axis.set_title(f"{kind}: {DESCRIPTION[kind]}", fontsize=10)
        axis.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
        axis.set_yticks(range(len(tokens)), tokens, fontsize=8)
        for labels in (axis.get_xticklabels(), axis.get_yticklabels()):
            for label, segment in zip(labels, segments[0].tolist()):
                label.set_color(SEGMENT_COLOURS[segment])
        axis.set_xlabel("key (attended to)")
        axis.set_xticks(np.arange(-0.5, len(tokens)), minor=True)
        axis.set_yticks(np.arange(-0.5, len(tokens)), minor=True)
        axis.grid(which="minor", color="white", linewidth=0.6)
        axis.tick_params(which="minor", length=0)
    axes[0].set_ylabel("query (attending)")
    figure.suptitle(
        "The three layer kinds on one history (core.masks.item_aware_mask): grey = context, colours = items 1, 2, 3",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def draw_layouts(path: str, num_layers: int = NUM_LAYERS) -> None:
    """One row per layout, one mask per layer, bottom layer on the left."""
    _, segments = example_tokens()
    figure, axes = plt.subplots(len(IAM_LAYOUTS), num_layers, figsize=(2.0 * num_layers, 2.3 * len(IAM_LAYOUTS)))
    for row, layout in enumerate(IAM_LAYOUTS):
        for layer, kind in enumerate(layer_types_for_layout(layout, num_layers)):
            axis = axes[row, layer]
            axis.imshow(coloured(mask_of(kind, segments), segments), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_title(f"layer {layer}: {kind}", fontsize=9)
        axes[row, 0].set_ylabel(layout, fontsize=12, rotation=0, ha="right", va="center", labelpad=12)
    figure.suptitle(
        f"The layouts on a {num_layers}-layer backbone (core.configuration_iam.layer_types_for_layout), "
        "same history as above",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=IMAGES)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    paths = [os.path.join(args.out_dir, "masks_kinds.png"), os.path.join(args.out_dir, "masks_layouts.png")]
    draw_kinds(paths[0])
    draw_layouts(paths[1])
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main()
