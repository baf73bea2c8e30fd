"""The exact item-state cache: every catalog item's states after the leading intra layers, computed once.

Why it is exact, and when it is refused: docs/architecture.md, "Compute once, supervise everywhere". The cache
records what its states were computed for (the leading intra layers, the attention implementation, how many states
per item the layers above read, the rendering of the catalog, and a digest of the token embeddings, the cached
layers and the rotary buffers) and checks it before every forward that reads it: stale states are never served.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import logging

from .item_cache_files import RECORD_FILE, read_cache_record, read_cache_tensors, write_cache_files
from .item_spans import distinct_sequences, token_sequence_keys

logger = logging.get_logger(__name__)

# Elements of each cached weight compared at every forward: catches most writes that bypass PyTorch's version
# counter (``param.data[...] = ...``); ordinary in-place updates bump the counter and trigger the full digest.
_SAMPLED_ELEMENTS = 64
# Context runs remembered (``ItemStateCache.context_states``): a prompt template gives one, a query after the history
# one per history length; a bound keeps prompts that differ per user from growing the memo without end.
_MAX_CONTEXTS = 256


def weights_digest(tensors: Sequence[torch.Tensor]) -> str:
    """A sha256 of the exact bytes (and shapes) of ``tensors``: any change, a permutation included, changes it."""
    digest = hashlib.sha256()
    for tensor in tensors:
        data = tensor.detach().contiguous().cpu()
        digest.update(str((tuple(data.shape), str(data.dtype))).encode())
        digest.update(data.view(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


def _token_table(sequences: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max(len(tokens) for tokens in sequences)
    table = torch.full((len(sequences), width), -1, dtype=torch.long)
    for row, tokens in enumerate(sequences):
        table[row, : len(tokens)] = torch.as_tensor(list(tokens), dtype=torch.long)
    return table


def distinct_items(token_sequences: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(table, first, inverse)``: the sequences as a ``-1`` padded table, the index of one sequence per distinct
    one (in the order of a cache's entries) and each sequence's entry."""
    table = _token_table(token_sequences)
    return (table, *distinct_sequences(table))


def rendering_digest(token_sequences: Sequence[Sequence[int]]) -> str:
    """A sha256 of item token sequences in order: what a cache's states were computed from."""
    return hashlib.sha256(repr([tuple(int(t) for t in tokens) for tokens in token_sequences]).encode()).hexdigest()


@dataclass(frozen=True)
class CacheRecord:
    """What a cache's states were computed for; a model that differs in any of these cannot use them."""

    num_layers: int
    num_item_tokens: int | None
    attn_implementation: str
    rendering_digest: str
    weights_digest: str

    def differences(self, other: CacheRecord) -> list[str]:
        names = {
            "num_layers": "the leading intra layers",
            "num_item_tokens": "the states per item the layers above read (num_item_tokens)",
            "attn_implementation": "the attention implementation",
            "rendering_digest": "the rendering of the catalog",
            "weights_digest": "the token embeddings, the cached layers or the rotary settings",
        }
        return [
            f"{description} ({getattr(self, name)!r:.40} -> {getattr(other, name)!r:.40})"
            for name, description in names.items()
            if getattr(self, name) != getattr(other, name)
        ]


class ItemStateCache:
    """The states of every distinct catalog item after the leading intra layers, found by the item's token ids.

    Built by [`IAMForCausalRecommendation.enable_item_cache`]. Only the states the layers above read are stored:
    every token's, or an item's last ``num_item_tokens`` (the item-level inter half). An item whose tokens are not in
    the cache (another rendering) is computed live, so a lookup is never wrong, only slower. Forwards in eval mode
    without autograd (every-item supervision) also keep each prompt's context run here (:meth:`context_states`, at
    most ``max_contexts``).

    Example:
        >>> cache = model.requires_grad_(False).enable_item_cache(collator)  # frozen: the states cannot go stale
        >>> cache.num_items, cache.nbytes
        (20, 4992)
    """

    def __init__(
        self,
        token_sequences: Sequence[Sequence[int]],
        states: Sequence[torch.Tensor],
        num_layers: int,
        num_item_tokens: int | None = None,
    ):
        if len(token_sequences) != len(states):
            raise ValueError(f"{len(token_sequences)} token sequences but {len(states)} states")
        first = self._set_items(token_sequences, num_layers, num_item_tokens)
        kept = [states[index].detach() for index in first.tolist()]
        if num_item_tokens is not None:
            kept = [state[-num_item_tokens:] for state in kept]
        self._set_states(torch.cat(kept), torch.tensor([len(state) for state in kept], dtype=torch.long))

    @classmethod
    def from_stored(
        cls,
        token_sequences: Sequence[Sequence[int]],
        states: torch.Tensor,
        num_layers: int,
        num_item_tokens: int | None = None,
    ) -> ItemStateCache:
        """A cache from its stored states as one tensor (what ``cache.states`` holds: each distinct sequence's, in
        the order of ``distinct_items``, every token's or its last ``num_item_tokens``), without another copy."""
        cache = cls.__new__(cls)
        cache._set_items(token_sequences, num_layers, num_item_tokens)
        stored = cache.lengths if num_item_tokens is None else cache.lengths.clamp(max=num_item_tokens)
        if states.dim() != 2 or states.shape[0] != int(stored.sum()):
            raise ValueError(
                f"states of shape {tuple(states.shape)} for {cache.num_items} distinct items that store "
                f"{int(stored.sum())} states"
            )
        cache._set_states(states.detach(), stored)
        return cache

    def _set_items(self, token_sequences, num_layers: int, num_item_tokens: int | None) -> torch.Tensor:
        self.num_layers, self.num_item_tokens = num_layers, num_item_tokens
        self.token_sequences = [tuple(tokens) for tokens in token_sequences]
        table, first, inverse = distinct_items(self.token_sequences)
        self.catalog_entries = inverse  # entry of each given sequence (catalog order)
        self.tokens = table[first]
        self.lengths = (self.tokens >= 0).sum(-1)
        keys = token_sequence_keys(self.tokens)
        self.sorted_keys, self.key_entries = keys.sort()
        self.record: CacheRecord | None = None
        self.saved_record: CacheRecord | None = None  # what a loaded cache's file says it was computed for
        self._modules: list[nn.Module] = []
        self._parameters: list[torch.Tensor] = []
        self._fast_check: list[tuple] = []
        self._samples: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._on_device: dict[tuple, dict[str, torch.Tensor]] = {}
        self._contexts: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._max_contexts = _MAX_CONTEXTS
        self._lock = threading.Lock()
        return first

    def _set_states(self, states: torch.Tensor, stored: torch.Tensor) -> None:
        self.stored = stored
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.stored.cumsum(0)])
        self.states = states

    @property
    def rendering_digest(self) -> str:
        return rendering_digest(self.token_sequences)

    @property
    def num_items(self) -> int:
        """Distinct item token sequences held."""
        return self.tokens.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of the states."""
        return self.states.numel() * self.states.element_size()

    @property
    def index_nbytes(self) -> int:
        """Bytes of what finds an item's states: its tokens, hash key, lengths and offsets."""
        tensors = (self.tokens, self.lengths, self.stored, self.offsets, self.sorted_keys, self.key_entries)
        return sum(tensor.numel() * tensor.element_size() for tensor in tensors)

    # -- what it was built for -------------------------------------------------------------------------------
    def bind(self, modules: Sequence[nn.Module], rotary: nn.Module, attn_implementation: str) -> None:
        """Remember the weights the states were computed from (token embeddings, cached layers) and the rotary
        embedding (its buffers, the frequencies, read afresh at every check, and its ``attention_scaling``)."""
        self._modules = list(modules)
        self._rotary = rotary
        self._rotary_scaling = getattr(rotary, "attention_scaling", None)
        self._parameters = self._current_tensors()
        self.record = CacheRecord(
            self.num_layers,
            self.num_item_tokens,
            attn_implementation,
            self.rendering_digest,
            weights_digest(self._parameters),
        )
        self._fast_check = self._fast_state(self._parameters)
        generator = torch.Generator().manual_seed(0)
        self._samples = []
        for tensor in self._parameters:
            flat = tensor.detach().reshape(-1)
            index = torch.randint(0, max(1, flat.numel()), (min(_SAMPLED_ELEMENTS, flat.numel()),), generator=generator)
            self._samples.append((index.to(flat.device), flat[index.to(flat.device)].clone()))

    def _current_tensors(self) -> list[torch.Tensor]:
        # the rotary buffers from the module each time: a frequency tensor replaced (dynamic RoPE) is seen
        return [p for module in self._modules for p in module.parameters()] + list(self._rotary.buffers())

    @staticmethod
    def _fast_state(tensors: Sequence[torch.Tensor]) -> list[tuple]:
        # bumped by every ordinary in-place update (an optimizer step, load_state_dict, a row swap under no_grad)
        return [(id(t), t._version, t.data_ptr(), t.requires_grad) for t in tensors]

    def check(self, num_layers: int, num_item_tokens: int | None, attn_implementation: str) -> None:
        """Raise unless the cache still describes the model: same leading intra layers, states per item, attention
        implementation, and cached weights (checked by version counters and sampled values at every call, by the full
        digest whenever a version moved)."""
        if self.record is None:
            raise RuntimeError("this item-state cache was never bound to a model (use model.enable_item_cache)")
        wanted = CacheRecord(
            num_layers, num_item_tokens, attn_implementation, self.record.rendering_digest, self.record.weights_digest
        )
        differences = self.record.differences(wanted)
        if differences:
            raise RuntimeError(
                f"the item-state cache was built for another model: {'; '.join(differences)}; call "
                "enable_item_cache(collator) again"
            )
        if getattr(self._rotary, "attention_scaling", None) != self._rotary_scaling:
            raise RuntimeError(
                "the rotary embedding's attention_scaling changed since enable_item_cache: the cached item states are "
                "stale; call enable_item_cache(collator) again"
            )
        tensors = self._current_tensors()
        if [id(t) for t in tensors] != [id(t) for t in self._parameters]:
            raise RuntimeError(
                "the cached layers gained or lost weights, or the rotary frequencies were replaced, since "
                "enable_item_cache (an adapter such as LoRA was added? dynamic RoPE past its original length?): the "
                "cached item states are stale; call enable_item_cache(collator) again"
            )
        trainable = [t for t in tensors if t.requires_grad]
        if trainable:
            raise RuntimeError(
                "a cached layer or the token embeddings became trainable (requires_grad) after enable_item_cache: "
                "the cache would go stale as they train; freeze them again or call disable_item_cache()"
            )
        sampled_same = all(
            bool(torch.equal(t.detach().reshape(-1)[index], values))
            for t, (index, values) in zip(tensors, self._samples)
        )
        fast = self._fast_state(tensors)
        if sampled_same and fast == self._fast_check:
            return
        # written to in place: an identical reload (load_best_model_at_end) keeps the cache valid
        if weights_digest(tensors) != self.record.weights_digest:
            raise RuntimeError(
                "the weights of the cached layers, the token embeddings or the rotary settings changed since "
                "enable_item_cache: the cached item states are stale; call enable_item_cache(collator) again"
            )
        with self._lock:
            self._fast_check = fast

    def verify(self) -> None:
        """The full digest of the cached weights now, whatever the version counters say (after writes through
        ``.data``, which PyTorch does not count)."""
        if self.record is None or weights_digest(self._current_tensors()) != self.record.weights_digest:
            raise RuntimeError("the cached item states are stale; call enable_item_cache(collator) again")

    # -- on disk (item_cache_files.py) ----------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> str:
        """Write the states and what finds them (safetensors) and the record of what they were computed for
        (``item_cache.json``) into ``folder``, atomically: a crash leaves the old cache or the new one. Returns the
        json's path. Only a bound cache (one that knows its weights digest) can be saved.

        Example:
            >>> cache = model.requires_grad_(False).enable_item_cache(collator)
            >>> _ = cache.save(tmp)
            >>> loaded = ItemStateCache.load(tmp)
            >>> torch.equal(loaded.states, cache.states), loaded.saved_record == cache.record
            (True, True)
        """
        if self.record is None:
            raise RuntimeError("only a bound item-state cache can be saved (build it with model.enable_item_cache)")
        tensors = {"states": self.states, "tokens": self.tokens, "catalog_entries": self.catalog_entries}
        return write_cache_files(folder, tensors, {**dataclasses.asdict(self.record), "num_items": self.num_items})

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str | torch.device = "cpu") -> ItemStateCache:
        """The cache :meth:`save` wrote into ``folder`` (safetensors and json: nothing is unpickled), its states on
        ``device``, unbound: ``saved_record`` is what it was computed for, and only ``bind`` (which digests the
        model's weights) and the model's checks let a model use it, as for a built one. A ValueError naming the file
        when a file is truncated or corrupt, or its tensors do not match its record."""
        record = read_cache_record(folder)
        if record is None:
            raise FileNotFoundError(f"{os.fspath(folder)} has no {RECORD_FILE}: save a cache with ItemStateCache.save")
        tensors = read_cache_tensors(folder, device)
        path = os.path.join(os.fspath(folder), record["states_file"])
        try:
            saved = CacheRecord(**{field.name: record[field.name] for field in dataclasses.fields(CacheRecord)})
            tokens, entries = tensors["tokens"].cpu(), tensors["catalog_entries"].cpu()
            if tokens.dtype != torch.long or entries.dtype != torch.long or tokens.dim() != 2 or entries.dim() != 1:
                raise ValueError("tokens and catalog_entries must be int64 tables")
            if entries.numel() and not (0 <= int(entries.min()) and int(entries.max()) < tokens.shape[0]):
                raise ValueError("catalog_entries out of range")
            distinct = [tuple(token for token in row if token >= 0) for row in tokens.tolist()]
            cache = cls.from_stored(
                [distinct[entry] for entry in entries.tolist()],
                tensors["states"],
                saved.num_layers,
                saved.num_item_tokens,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} does not hold the item-state cache its record describes: {error!r}") from error
        if cache.rendering_digest != saved.rendering_digest:
            raise ValueError(f"{path}: its item tokens are not the ones its record's rendering digest describes")
        cache.saved_record = saved
        return cache

    # -- lookups ---------------------------------------------------------------------------------------------
    def on_device(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """The cache's tensors on ``device`` (states in ``dtype``), moved once and kept: safe from several threads."""
        key = (str(device), dtype)
        tensors = self._on_device.get(key)
        if tensors is None:
            with self._lock:
                tensors = self._on_device.get(key)
                if tensors is None:
                    tensors = {
                        "states": self.states.to(device=device, dtype=dtype),
                        "tokens": self.tokens.to(device),
                        "lengths": self.lengths.to(device),
                        "stored": self.stored.to(device),
                        "offsets": self.offsets.to(device),
                        "sorted_keys": self.sorted_keys.to(device),
                        "key_entries": self.key_entries.to(device),
                    }
                    self._on_device[key] = tensors
        return tensors

    def lookup(self, tokens: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """The entry of each row of ``tokens`` (``-1`` padded), ``-1`` where the cache does not hold it."""
        if tokens.shape[0] == 0:
            return torch.zeros(0, dtype=torch.long, device=tokens.device)
        on = self.on_device(tokens.device, self.states.dtype)
        keys = token_sequence_keys(tokens) if keys is None else keys
        position = torch.searchsorted(on["sorted_keys"], keys).clamp(max=on["sorted_keys"].shape[0] - 1)
        entry = on["key_entries"][position]
        width = max(tokens.shape[1], on["tokens"].shape[1])
        pad = torch.nn.functional.pad
        candidate = pad(on["tokens"][entry], (0, width - on["tokens"].shape[1]), value=-1)
        same = (on["sorted_keys"][position] == keys) & (
            pad(tokens, (0, width - tokens.shape[1]), value=-1) == candidate
        ).all(-1)
        return torch.where(same, entry, torch.full_like(entry, -1))

    def states_at(
        self, entries: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, device, dtype
    ) -> torch.Tensor:
        """States of token ``offsets`` (within items of ``lengths`` tokens) of cache ``entries``; every asked token
        must be stored (one of the item's last ``num_item_tokens`` when those are all the cache keeps)."""
        on = self.on_device(device, dtype)
        index = on["offsets"][entries] + offsets - (lengths - on["stored"][entries])
        return on["states"][index]

    @property
    def max_contexts(self) -> int:
        """How many context runs :meth:`context_states` keeps (the latest; 256 by default). Setting it drops the
        oldest beyond the new bound at once; 0 keeps none, and every context runs live."""
        return self._max_contexts

    @max_contexts.setter
    def max_contexts(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"max_contexts must be an int >= 0, got {value!r}")
        with self._lock:
            self._max_contexts = value
            while len(self._contexts) > value:
                self._contexts.popitem(last=False)

    def context_states(self, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The leading layers' states of one row's context run (its prompt tokens, segment 0), named by ``key`` (the
        device, dtype, tokens and true positions that determine them): ``compute()`` the first time, remembered after
        (the latest ``max_contexts``). Like the item states, they depend only on the cached weights, which every
        forward that reads this cache checks first."""
        with self._lock:
            states = self._contexts.get(key)
            if states is not None:
                self._contexts.move_to_end(key)
                return states
        states = compute().detach()
        with self._lock:
            self._contexts[key] = states
            while len(self._contexts) > self._max_contexts:
                self._contexts.popitem(last=False)
        return states

    def extend(self, token_sequences: Sequence[Sequence[int]], states: Sequence[torch.Tensor]) -> ItemStateCache:
        """A cache holding these states and the new ones (items added to the catalog), bound like this one."""
        cache = ItemStateCache(
            self.token_sequences + [tuple(tokens) for tokens in token_sequences],
            [self.states_of_sequence(index) for index in range(len(self.token_sequences))] + list(states),
            self.num_layers,
            self.num_item_tokens,
        )
        cache.bind(self._modules, self._rotary, self.record.attn_implementation)
        cache.max_contexts = self.max_contexts
        return cache

    def states_of_sequence(self, index: int) -> torch.Tensor:
        """The stored states of the ``index``-th sequence the cache was built from (catalog order)."""
        entry = int(self.catalog_entries[index])
        return self.states[int(self.offsets[entry]) : int(self.offsets[entry + 1])]


__all__ = ["CacheRecord", "ItemStateCache", "distinct_items", "rendering_digest", "weights_digest"]
