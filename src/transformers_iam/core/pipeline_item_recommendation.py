"""``pipeline("item-recommendation")``: a history of item ids (or item texts) in, top-k items out."""

from __future__ import annotations

import os
from typing import Any

import torch
from transformers import AutoModel, AutoTokenizer, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .collator import IAMDataCollator
from .loading import optional_checkpoint_file
from .ranking import check_exclusions, chunked_topk, exclude_items, items_left, ranking_chunk_size

TASK = "item-recommendation"
# what any tokenizer's save_pretrained writes (tokenizer_config.json always; tokenizer.json for a fast one)
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")


def missing_tokenizer_error(location: str) -> Exception:
    """Why ``pipeline()`` has no tokenizer for the checkpoint at ``location`` (a folder, a Hub id, or ``""``).

    ``pipeline()`` tries to load the tokenizer and, for this pipeline, keeps ``None`` when it fails, so that a
    checkpoint saved without one gets this message instead of transformers' guess at a tokenizer class (which asks
    for sentencepiece). When tokenizer files are there, their own loading error is returned.
    """
    how = (
        "the pipeline renders each history as text with the tokenizer the model was trained with. Save it into the "
        "checkpoint folder with `collator.save_pretrained(folder)` (the collator's prompt settings and its tokenizer) "
        "or `tokenizer.save_pretrained(folder)`, or pass one: `pipeline(..., tokenizer=tokenizer)`"
    )
    if not location:
        return ValueError(f"this model has no folder to load a tokenizer from: {how}")
    if not any(optional_checkpoint_file(location, name) is not None for name in TOKENIZER_FILES):
        return ValueError(f"{location} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}): {how}")
    try:
        AutoTokenizer.from_pretrained(location)
    except Exception as error:  # the files are there but do not load: their own error says why
        return error
    # the checkpoint's tokenizer loads: what failed was the `tokenizer=` given to pipeline()
    return ValueError(f"pipeline() could not load the tokenizer it was given; omit tokenizer= to use {location}'s own")


class ItemRecommendationPipeline(Pipeline):
    """Recommend catalog items from a user's history with a trained IAM checkpoint.

    Inputs are ``{"history": [item ids, oldest first]}`` (or a list of such dicts); an entry may
    also be an item's exact catalog text. The prompt is rendered as in training (the collator
    settings saved with the checkpoint). Returns, per user, ``top_k`` dicts with ``item_id``,
    ``text``, ``score`` and ``index`` (catalog index). History items are not recommended
    unless ``exclude_history=False``; when they leave fewer than ``top_k`` items, those are
    returned (never an excluded item). Unknown keyword arguments are an error. The tokenizer comes from the
    checkpoint (saved there by ``collator.save_pretrained``), from ``tokenizer=`` or from ``collator=``; a checkpoint
    saved without one is refused with how to save it.

    Example:
        >>> import transformers_iam
        >>> from transformers import pipeline
        >>> recommender = pipeline("item-recommendation", model=checkpoint)  # a folder (runs/.../checkpoint) or Hub id
        >>> history = ["i1", "i7", "w3_0"]  # ids or exact texts
        >>> rows = recommender({"history": history}, top_k=5)
        >>> [row["item_id"] for row in rows]
        ['i11', 'i17', 'i18', 'i2', 'i16']
        >>> rows[0]  # doctest: +ELLIPSIS
        {'item_id': 'i11', 'text': 'w11_0 w11_1 w11_2', 'score': 0.16..., 'index': 11}
    """

    _load_tokenizer = None  # try, and keep None when it fails: __init__ then raises missing_tokenizer_error

    def __init__(self, *args, collator: IAMDataCollator | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.model, "catalog", None) is None:
            raise ValueError(
                "this model has no item catalog (item_catalog.json): call model.set_catalog(catalog) first"
            )
        if self.tokenizer is None:
            if collator is None:
                raise missing_tokenizer_error(self.model.config.name_or_path)
            self.tokenizer = collator.tokenizer
        if collator is None:
            collator = IAMDataCollator.from_pretrained(
                self.model.config.name_or_path, catalog=self.model.catalog, tokenizer=self.tokenizer
            )
        self.collator = collator
        self._text_to_id: dict[str, str] = {}
        self._text_to_id_catalog = None  # the catalog _text_to_id was built from

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save a checkpoint this pipeline loads from again: the model and its catalog, the collator's prompt settings
        and its tokenizer.

        ``pipeline("item-recommendation", model=save_directory)`` then renders histories exactly as this pipeline does
        (no ``trust_remote_code``: the task is registered when ``transformers_iam`` is imported). Unlike
        ``Pipeline.save_pretrained``, it writes no ``custom_pipelines`` into the model's config and copies no source
        files: the live model is left as it was. Keyword arguments go to the model's ``save_pretrained``
        (``max_shard_size``, ...); ``recommender.push_to_hub(repo_id)`` uploads the same files.

        Example:
            >>> import os
            >>> from transformers import pipeline
            >>> folder = os.path.join(tmp, "saved-pipeline")
            >>> recommender = pipeline("item-recommendation", model=checkpoint)
            >>> recommender.save_pretrained(folder)
            >>> again = pipeline("item-recommendation", model=folder)
            >>> again({"history": ["i1", "i7"]}, top_k=3) == recommender({"history": ["i1", "i7"]}, top_k=3)
            True
        """
        if kwargs.pop("push_to_hub", False):  # the model alone would be pushed, without the prompt settings
            raise ValueError(
                "save_pretrained(push_to_hub=True) would upload the model without its prompt settings and tokenizer: "
                "call recommender.push_to_hub(repo_id), which uploads the whole checkpoint"
            )
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"save_directory {os.fspath(save_directory)!r} is a file, not a folder")
        self.model.save_pretrained(save_directory, **kwargs)
        self.collator.save_pretrained(save_directory)  # prompt settings and the tokenizer the prompts are made with

    def _sync_catalog(self) -> None:
        """Follow the model's catalog: items added since this pipeline was made are known by id and by text."""
        catalog = self.model.catalog
        if self.collator.catalog is not catalog:  # adopt the model's object: compared once, not on every request
            if self.collator.catalog != catalog:
                self.collator.extend_catalog(catalog)  # refuses a catalog that is not the old one extended
            self.collator.catalog = catalog
        if self._text_to_id_catalog is not catalog:
            self._text_to_id = {}
            for item_id, text in zip(catalog.item_ids, catalog.texts):
                self._text_to_id.setdefault(text, item_id)
            self._text_to_id_catalog = catalog

    def _sanitize_parameters(self, top_k: int | None = None, exclude_history: bool | None = None, **kwargs):
        if kwargs:  # a misspelt option (topk=5) would otherwise be ignored without a word
            raise TypeError(
                f"{type(self).__name__} got unknown arguments {sorted(kwargs)}; it takes top_k and exclude_history"
            )
        postprocess = {}
        if top_k is not None:
            num_items = len(self.model.catalog) if getattr(self.model, "catalog", None) is not None else None
            if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1 or (num_items and top_k > num_items):
                raise ValueError(f"top_k must be an int in [1, {num_items}] (the catalog's size), got {top_k!r}")
            postprocess["top_k"] = top_k
        if exclude_history is not None:
            if not isinstance(exclude_history, bool):
                raise ValueError(f"exclude_history must be True or False, got {exclude_history!r}")
            postprocess["exclude_history"] = exclude_history
        return {}, {}, postprocess

    def _resolve(self, entry) -> str:
        if entry in self.model.catalog:
            return str(entry)
        if entry in self._text_to_id:
            return self._text_to_id[entry]
        raise ValueError(f"history item {entry!r} is neither an item id nor an item text of the catalog")

    def preprocess(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if not isinstance(inputs, dict) or "history" not in inputs:
            raise ValueError('pass {"history": [item ids or texts, oldest first]}, or a list of such dicts')
        if isinstance(inputs["history"], (str, bytes)):  # would be read one character per item
            raise ValueError(f'"history" must be a list of item ids or texts, got the string {inputs["history"]!r}')
        self._sync_catalog()
        history = [self._resolve(entry) for entry in inputs["history"]]
        return self.collator([{**inputs, "history": history, "target": None}])

    def _forward(self, model_inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        history = model_inputs.pop("history_item_indices")
        # a large catalog (or an attached item index) is ranked from the user state: no [1 x num_items] scores
        if getattr(self, "item_index", None) is not None or ranking_chunk_size(None, self.model.config.num_items):
            return {"user_states": self.model.user_states(**model_inputs), "history_item_indices": history}
        logits = self.model(**model_inputs).logits
        return {"logits": logits, "history_item_indices": history}

    def postprocess(self, model_outputs, top_k: int = 10, exclude_history: bool = True) -> list[dict]:
        if "user_states" in model_outputs:
            values, indices = self._top_k_of_states(model_outputs, top_k, exclude_history)
        else:
            scores = model_outputs["logits"].float()
            if exclude_history:
                scores = exclude_items(scores, model_outputs["history_item_indices"])
            values, indices = scores[0].topk(min(top_k, scores.shape[-1]))
        catalog = self.model.catalog
        # fewer than top_k items may be left after the exclusion: return those, never an excluded item at -inf
        return [
            {"item_id": catalog.item_ids[index], "text": catalog.texts[index], "score": float(value), "index": index}
            for value, index in zip(values.tolist(), indices.tolist())
            if value != float("-inf") and index >= 0
        ]

    def _top_k_of_states(self, model_outputs, top_k: int, exclude_history: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-k of a large catalog: from the attached ``item_index`` (``integrations/item_index.py``:
        ``ItemIndex.attach(pipeline)``) when there is one, else exact by ``chunked_topk``; at most the items left after
        the exclusion."""
        num_items = self.model.config.num_items
        exclusions = check_exclusions(model_outputs["history_item_indices"], 1, num_items) if exclude_history else None
        k = min(top_k, num_items if exclusions is None else int(items_left(exclusions, num_items)[0]))
        if k == 0:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        with torch.no_grad():
            weight, bias = self.model.adapter.item_rows()
        states = model_outputs["user_states"].to(weight.device)  # the pipeline hands outputs back on the CPU
        index = getattr(self, "item_index", None)
        if index is not None:
            index.check(self.model)  # refuses an index of another catalog (items added since it was built)
            values, indices = index.search(states, k, exclude=exclusions)
        else:
            chunk_size = ranking_chunk_size(None, num_items)
            values, indices = chunked_topk(states, weight, bias, k, exclusions, chunk_size)
        return values[0], indices[0]


PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ItemRecommendationPipeline, pt_model=AutoModel)
