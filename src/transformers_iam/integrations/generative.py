"""The generative variant: the target item's *text* is the completion, decoded under a catalog constraint.

Training goes through TRL's ``SFTTrainer`` (token NLL on the completion) with item-aware masks
active: the generated item is one more segment (``n + 1``) after the history. Decoding is a
beam search constrained by a prefix tree over the items' token sequences, so every answer is
a real catalog item, and the beam list is ranked with the same metric code as the ranking head.

Example (a tiny random Llama as the causal LM):
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> _ = torch.manual_seed(0)
    >>> config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                      num_attention_heads=4)
    >>> model = enable_generative_iam(LlamaForCausalLM(config), ["intra", "inter"])
    >>> collator = GenerativeIAMCollator(tokenizer, catalog, max_length=256, prompt="user history :", query="next ?")
    >>> trie = CatalogTrie.from_collator(collator)
    >>> example = {"history": ["i1", "i7"]}
    >>> ranked = constrained_beam_search(model, collator, example, trie, num_beams=5,
    ...                                  exclude_item_indices=catalog.indices_of(example["history"]))
    >>> [catalog.item_ids[indices[0]] for log_probability, indices in ranked]
    ['i2', 'i13', 'i10', 'i15', 'i16']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel

from ..core.attention import enable_item_aware_attention
from ..core.collator import IAMDataCollator


class GenerativeIAMCollator(IAMDataCollator):
    """Like [`IAMDataCollator`], plus the target item's tokens (and EOS) as a completion segment.

    ``labels`` are token ids on the completion and -100 elsewhere (a causal-LM target), padding
    is on the right by default, and the completion carries segment id ``n + 1`` so intra-item layers
    treat the generated item as an item of its own.
    """

    def __init__(self, *args, padding_side: str = "right", **kwargs):
        super().__init__(*args, padding_side=padding_side, **kwargs)
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the generative variant needs a tokenizer with an eos_token_id to end each item")

    def completion_ids(self, catalog_index: int) -> list[int]:
        """The tokens the model generates for an item: its text tokens, then EOS."""
        return self.item_token_ids(catalog_index) + [self.tokenizer.eos_token_id]

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        rows = []
        for position, example in enumerate(examples):
            input_ids, segment_ids, _, _ = self.render(example, position)
            if example.get("target") is None:
                raise ValueError(f"example {position}: the generative collator needs a target to train on")
            completion = self.completion_ids(self._catalog_index(example["target"], position, example, "target"))
            next_segment = max(segment_ids) + 1
            rows.append(
                (
                    input_ids + completion,
                    segment_ids + [next_segment] * len(completion),
                    [-100] * len(input_ids) + completion,
                )
            )
        return self.pad(
            {
                "input_ids": ([ids for ids, _, _ in rows], self.pad_token_id),
                "attention_mask": ([[1] * len(ids) for ids, _, _ in rows], 0),
                "item_segment_ids": ([segments for _, segments, _ in rows], 0),
                "labels": ([labels for _, _, labels in rows], -100),
            }
        )


@dataclass
class _TrieNode:
    children: dict[int, _TrieNode] = field(default_factory=dict)
    items: list[int] = field(default_factory=list)  # catalog indices whose sequence ends here


class CatalogTrie:
    """A prefix tree over the completion token sequences of every catalog item.

    Items with identical token sequences (duplicate titles) share a leaf and tie in a ranking.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]):
        self.root = _TrieNode()
        for index, sequence in enumerate(sequences):
            if not sequence:
                raise ValueError(f"catalog item {index} has no tokens")
            node = self.root
            for token in sequence:
                node = node.children.setdefault(int(token), _TrieNode())
            node.items.append(index)

    @classmethod
    def from_collator(cls, collator: GenerativeIAMCollator) -> CatalogTrie:
        return cls([collator.completion_ids(index) for index in range(len(collator.catalog))])

    def walk(self, tokens: Sequence[int]) -> _TrieNode:
        node = self.root
        for token in tokens:
            node = node.children[int(token)]
        return node


def enable_generative_iam(model: PreTrainedModel, layer_types: Sequence[str]) -> PreTrainedModel:
    """Item-aware attention on a causal LM; the layer kinds are stored in its config so a reload can restore them."""
    enable_item_aware_attention(model, layer_types)
    model.config.iam_layer_types = list(layer_types)
    return model


def load_generative_iam(path: str, **kwargs) -> PreTrainedModel:
    """Reload a causal LM saved after [`enable_generative_iam`], with its item-aware layers restored."""
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    layer_types = getattr(model.config, "iam_layer_types", None)
    if layer_types is None:
        raise ValueError(f"{path} has no iam_layer_types in its config: it was not saved as a generative IAM model")
    return enable_generative_iam(model, layer_types)


# a beam or a finished entry: (log-probability renormalised over the catalog trie, generated tokens or item indices)
Beam = tuple[float, list[int]]


@torch.no_grad()
def constrained_beam_search(
    model: PreTrainedModel,
    collator: GenerativeIAMCollator,
    example: dict,
    trie: CatalogTrie,
    num_beams: int = 20,
    exclude_item_indices: Sequence[int] = (),
    max_new_tokens: int | None = None,
) -> list[tuple[float, list[int]]]:
    """Beam search over the catalog trie for one user.

    Returns up to ``num_beams`` finished items, best first, as ``(log-probability, catalog
    indices)``; several indices share an entry when their texts tokenize identically. Items in
    ``exclude_item_indices`` (e.g. the history) are never returned.
    """
    model.eval()
    device = next(model.parameters()).device
    prompt_ids, segment_ids, _, _ = collator.render(example)
    prompt_segments = torch.tensor([segment_ids], device=device)
    completion_segment = max(segment_ids) + 1  # the generated item is one more item after the history
    excluded = set(exclude_item_indices)
    max_new_tokens = max_new_tokens or collator.max_item_tokens + 1

    cache = DynamicCache(config=model.config)
    logits = _prefill(model, torch.tensor([prompt_ids], device=device), prompt_segments, cache)
    beams: list[Beam] = [(0.0, [])]
    finished: list[Beam] = []
    for _ in range(max_new_tokens):
        candidates = _extensions(beams, torch.log_softmax(logits, dim=-1), trie)
        beams, parents = _next_beams(candidates, beams, trie, excluded, num_beams, finished)
        finished.sort(key=lambda entry: entry[0], reverse=True)
        finished = finished[:num_beams]
        # scores only fall as tokens are added: stop once no live beam can enter the finished list
        if not beams or (len(finished) >= num_beams and beams[0][0] <= finished[-1][0]):
            break
        logits = _decode_step(model, cache, beams, parents, prompt_segments, completion_segment)
    return finished


def _prefill(
    model: PreTrainedModel, input_ids: torch.Tensor, segments: torch.Tensor, cache: DynamicCache
) -> torch.Tensor:
    """Run the prompt once, filling ``cache``; the logits of the first generated token, ``[1, vocab]``."""
    outputs = model(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        item_segment_ids=segments,
        cache=cache,
        use_cache=True,
    )
    return outputs.logits[:, -1].float()


def _extensions(beams: list[Beam], log_probs: torch.Tensor, trie: CatalogTrie) -> list[tuple[float, int, int]]:
    """Every one-token extension the trie allows, as ``(score, beam row, token)``, best first."""
    candidates = []
    for row, (score, tokens) in enumerate(beams):
        allowed = list(trie.walk(tokens).children)
        if not allowed:
            continue
        allowed_tensor = torch.tensor(allowed, device=log_probs.device)
        # renormalised over the allowed continuations, as a prefix-constrained generate() does
        allowed_scores = torch.log_softmax(log_probs[row, allowed_tensor], dim=-1)
        candidates += [(score + float(s), row, token) for s, token in zip(allowed_scores.tolist(), allowed)]
    candidates.sort(key=lambda candidate: candidate[0], reverse=True)
    return candidates


def _next_beams(
    candidates: list[tuple[float, int, int]],
    beams: list[Beam],
    trie: CatalogTrie,
    excluded: set[int],
    num_beams: int,
    finished: list[Beam],
) -> tuple[list[Beam], list[int]]:
    """The best ``num_beams`` candidates that can still grow, and the beam rows they extend; every candidate that
    completes an item not in ``excluded`` is appended to ``finished`` (a candidate can do both)."""
    next_beams, parents = [], []
    for score, row, token in candidates:
        tokens = beams[row][1] + [token]
        node = trie.walk(tokens)
        items = [index for index in node.items if index not in excluded]
        if items:
            finished.append((score, items))
        if node.children and len(next_beams) < num_beams:
            next_beams.append((score, tokens))
            parents.append(row)
        if len(next_beams) >= num_beams and len(finished) >= num_beams:
            break
    return next_beams, parents


def _decode_step(
    model: PreTrainedModel,
    cache: DynamicCache,
    beams: list[Beam],
    parents: list[int],
    prompt_segments: torch.Tensor,
    completion_segment: int,
) -> torch.Tensor:
    """Feed each beam its newest token over the cache of the beam it extends; the next logits, ``[beams, vocab]``."""
    device = prompt_segments.device
    cache.reorder_cache(torch.tensor(parents, device=device))
    generated = len(beams[0][1])  # every beam has grown by one token per step
    past_length = prompt_segments.shape[1] + generated - 1
    step_ids = torch.tensor([tokens[-1] for _, tokens in beams], device=device)[:, None]
    generated_segments = torch.full((len(beams), generated), completion_segment, device=device)
    segments = torch.cat([prompt_segments.expand(len(beams), -1), generated_segments], dim=1)
    outputs = model(
        input_ids=step_ids,
        attention_mask=torch.ones(len(beams), past_length + 1, dtype=torch.long, device=device),
        item_segment_ids=segments,
        position_ids=torch.full((len(beams), 1), past_length, device=device),
        cache=cache,
        use_cache=True,
    )
    return outputs.logits[:, -1].float()


def rank_in_beams(finished: list[tuple[float, list[int]]], target_index: int, num_items: int) -> int:
    """Pessimistic 1-based rank of the target in a beam list; a target not found ranks last (``num_items``)."""
    seen = 0
    for _, items in finished:
        seen += len(items)
        if target_index in items:
            return seen
    return num_items
