"""An index over a model's item rows (faiss), for serving top-k over a large catalog in milliseconds.

The model scores item ``i`` for a user state ``u`` (``model.user_states``) as ``u . w_i + b_i`` (the adapter's row and
bias): an inner product of ``[u ; 1]`` with ``[w_i ; b_i]``, the bias folded in. ``kind="exact"`` is a flat
inner-product index over ``[w_i ; b_i]`` (``faiss.IndexFlatIP``: every item is scored). ``kind="ivf"`` is an inverted
file (``faiss.IndexIVFFlat``): the items are grouped around ``nlist`` centroids and a query scans the ``nprobe``
groups nearest it. Grouped by inner product, items with a large bias or norm crowd a few groups and recall collapses
(0.18 at ``nprobe=128`` on a million synthetic rows), so the ivf index holds ``[w_i ; b_i ; sqrt(M^2 - |[w_i ;
b_i]|^2)]`` (``M`` the largest row norm) and is queried with ``[u ; 1 ; 0]``: a squared L2 distance is then ``|q|^2 +
M^2 - 2 score``, the nearest items are the best scored, and L2 groups stay balanced (Bachrach et al., 2014). Either
way the items found are scored again from the model's rows (``u . w_i + b_i``) and returned best first, so a score is
the model's own. ``benchmarks/item_index.py`` measures the latency and the recall@10 against the exact top-k.

An index is bound to the catalog it was built for (``config.catalog_fingerprint``) and to the rows it holds (a digest
of a sample of them): :meth:`ItemIndex.load` and :meth:`ItemIndex.attach` refuse a model with another catalog or other
rows, so a stale index is never served. faiss is optional: ``pip install 'transformers-iam[serve]'``.

Example:
    >>> index = ItemIndex.from_model(model, kind="exact")
    >>> batch = collator([{"history": ["i1", "i7"]}])
    >>> history = batch["history_item_indices"]
    >>> scores, indices = index.search(model.user_states(**batch), k=5, exclude=history)
    >>> indices.tolist() == model.recommend(**batch, k=5, exclude_item_ids=history).indices.tolist()
    True
    >>> _ = index.save(tmp)  # beside the checkpoint: load refuses a model of another catalog or other rows
    >>> ItemIndex.load(tmp, model).num_items
    20
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import uuid
from collections.abc import Sequence

import numpy as np
import torch

from ..core.files import write_file_atomically, write_text_atomically
from ..core.ranking import check_exclusions, check_items_left

SERVE_EXTRA = "pip install 'transformers-iam[serve]'"
METADATA_FILE = "item_index.json"
KINDS = ("exact", "ivf")
FORMAT_VERSION = 1
# an "ivf" query scans this many groups by default: recall@10 0.997 against the exact top-10, 2.8 ms, on a million
# synthetic rows (benchmarks/item_index.py)
DEFAULT_NPROBE = 32
BUILD_CHUNK = 65_536  # rows turned into index vectors at a time
# the rows sampled into the digest that binds an index to the rows it was built from (a retrained model changes them)
DIGEST_ROWS = 1024


def import_faiss():
    """faiss, imported when an index is first built or loaded; a clear error naming the extra when it is missing."""
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            f"ItemIndex needs faiss (the faiss-cpu package), which is not installed: {SERVE_EXTRA} "
            "(or pip install faiss-cpu)"
        ) from error
    return faiss


def item_vectors(weight: torch.Tensor, bias: torch.Tensor | None, norm: float | None = None) -> np.ndarray:
    """``[w_i ; b_i]`` for every row, float32 ``(items, d + 1)``; with ``norm`` (``M``, at least every row's norm) the
    column ``sqrt(M^2 - |[w_i ; b_i]|^2)`` is added, ``(items, d + 2)``: the rows of an ``"ivf"`` index.

    Example:
        >>> item_vectors(torch.tensor([[3.0, 0.0]]), torch.tensor([4.0]), norm=13.0).tolist()
        [[3.0, 0.0, 4.0, 12.0]]
    """
    rows = torch.cat([weight.detach().float().cpu(), _bias(weight, bias).detach().float().cpu()[:, None]], 1)
    if norm is not None:
        rows = torch.cat([rows, (norm**2 - rows.pow(2).sum(1, keepdim=True)).clamp(min=0).sqrt()], 1)
    return np.ascontiguousarray(rows.numpy())


def query_vectors(user_states: torch.Tensor, augmented: bool = False) -> np.ndarray:
    """``[u ; 1]``, or ``[u ; 1 ; 0]`` for an ``"ivf"`` index (``augmented``), for every user state, float32: its
    inner product with an item's vector is the model's score of the item."""
    states = torch.as_tensor(user_states).detach().float().cpu()
    columns = [states, torch.ones(states.shape[0], 1)] + ([torch.zeros(states.shape[0], 1)] if augmented else [])
    return np.ascontiguousarray(torch.cat(columns, 1).numpy())


def _bias(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return weight.new_zeros(weight.shape[0]) if bias is None else bias


def rows_digest(weight: torch.Tensor, bias: torch.Tensor | None, samples: int = DIGEST_ROWS) -> str:
    """A sha256 of the rows' shape and of ``samples`` evenly spaced rows and biases (float32): cheap on a million
    rows, and changed by any training of them."""
    picked = torch.linspace(0, weight.shape[0] - 1, min(samples, weight.shape[0])).long().to(weight.device)
    digest = hashlib.sha256(repr(tuple(weight.shape)).encode())
    digest.update(item_vectors(weight[picked], _bias(weight, bias)[picked]).tobytes())
    return digest.hexdigest()


def default_nlist(num_items: int) -> int:
    """The ivf groups for a catalog: about ``sqrt(num_items)``, at least 39 training items per group (faiss's
    minimum), at most 4,096.

    Example:
        >>> default_nlist(1_000_000), default_nlist(10_000), default_nlist(50)
        (1000, 100, 1)
    """
    return max(1, min(4096, round(math.sqrt(num_items)), num_items // 39))


class ItemIndex:
    """A faiss index over item rows, queried with user states: the top-k items of each, scored as the model does.

    Build it with :meth:`from_model` (or :meth:`build` from rows), query it with :meth:`search`, keep it beside the
    checkpoint with :meth:`save` / :meth:`load`, and serve it from ``pipeline("item-recommendation")`` with
    :meth:`attach`. It holds a copy of the rows (faiss's) and a reference to the model's (to score what it finds).

    Args:
        index: the faiss index (``IndexFlatIP`` over ``[w_i ; b_i]``, or ``IndexIVFFlat`` in L2 over the rows with
            their norm column, :func:`item_vectors`).
        kind: ``"exact"`` or ``"ivf"``.
        weight, bias: the rows ``(items, d)`` and biases ``(items,)`` the items found are scored with.
        fingerprint: the catalog's ``config.catalog_fingerprint`` (``None``: bound to no catalog, cannot be saved).
    """

    def __init__(self, index, kind: str, weight: torch.Tensor, bias: torch.Tensor | None, fingerprint: str | None):
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if index.ntotal != weight.shape[0]:
            raise ValueError(f"the faiss index holds {index.ntotal} items, the rows {weight.shape[0]}")
        self.index, self.kind, self.fingerprint = index, kind, fingerprint
        self.weight, self.bias = weight.detach(), _bias(weight, bias).detach()
        self.digest = rows_digest(self.weight, self.bias)

    @property
    def num_items(self) -> int:
        return int(self.index.ntotal)

    @property
    def nprobe(self) -> int | None:
        """The groups an ``"ivf"`` query scans (more: better recall, slower); ``None`` for ``"exact"``."""
        return int(self.index.nprobe) if self.kind == "ivf" else None

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self.kind != "ivf":
            raise ValueError("nprobe is an option of kind='ivf' only")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"nprobe must be an int >= 1, got {value!r}")
        self.index.nprobe = value

    @classmethod
    def build(
        cls,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        kind: str = "ivf",
        nlist: int | None = None,
        nprobe: int = DEFAULT_NPROBE,
        train_size: int | None = None,
        seed: int = 0,
        fingerprint: str | None = None,
    ) -> ItemIndex:
        """An index over the rows ``weight`` ``(items, d)`` and ``bias`` ``(items,)``, added ``BUILD_CHUNK`` rows at
        a time (no second full copy of them).

        ``kind="ivf"``: ``nlist`` groups (by default :func:`default_nlist`), their centroids trained by k-means on
        ``train_size`` rows drawn with ``seed`` (by default 40 per group; faiss asks for 39 to 256), ``nprobe``
        scanned per query (settable later: ``index.nprobe = 64``).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        faiss = import_faiss()
        num_items, bias = weight.shape[0], _bias(weight, bias)
        norm = None
        if kind == "exact":
            index = faiss.IndexFlatIP(weight.shape[1] + 1)
        else:
            nlist = default_nlist(num_items) if nlist is None else nlist
            if isinstance(nlist, bool) or not isinstance(nlist, int) or not 1 <= nlist <= num_items:
                raise ValueError(f"nlist must be an int in [1, {num_items}] (the items), got {nlist!r}")
            norm = max(
                float((weight[a:b].detach().float().pow(2).sum(1) + bias[a:b].detach().float() ** 2).max().sqrt())
                for a, b in _blocks(num_items)
            )
            width = weight.shape[1] + 2
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(width), width, nlist, faiss.METRIC_L2)
            size = min(num_items, 40 * nlist if train_size is None else train_size)
            picked = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(num_items, size, replace=False)))
            picked = picked.to(weight.device)
            index.train(item_vectors(weight[picked], bias[picked], norm))
        for a, b in _blocks(num_items):
            index.add(item_vectors(weight[a:b], bias[a:b], norm))
        built = cls(index, kind, weight, bias, fingerprint)
        if kind == "ivf":
            built.nprobe = nprobe
        return built

    @classmethod
    def from_model(cls, model, kind: str = "ivf", **options) -> ItemIndex:
        """An index over ``model``'s adapter rows, bound to its catalog (``config.catalog_fingerprint``); ``options``
        as for :meth:`build`."""
        with torch.no_grad():
            weight, bias = model.adapter.item_rows()
        return cls.build(weight, bias, kind, fingerprint=model.config.catalog_fingerprint, **options)

    def check(self, model, rows: bool = False) -> None:
        """Refuse a ``model`` this index was not built for: another catalog (or a catalog grown by ``add_items``),
        and with ``rows=True`` other adapter rows (a retrained model; :func:`rows_digest`, a few ms)."""
        _check_binding(self.num_items, self.fingerprint, self.digest, model, rows)

    def attach(self, pipeline) -> None:
        """Serve ``pipeline("item-recommendation")``'s top-k from this index (checked against its model first);
        ``pipeline.item_index = None`` detaches it."""
        self.check(pipeline.model, rows=True)
        pipeline.item_index = self

    @torch.no_grad()
    def search(
        self,
        user_states: torch.Tensor,
        k: int,
        exclude: torch.Tensor | Sequence[Sequence[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The top-``k`` items of each user state ``(users, d)`` (``model.user_states``): ``(scores, indices)``,
        float32 and long ``(users, k)``, best first, on the rows' device; the scores are ``u . w_i + b_i`` from the
        rows (the model's scores, to float rounding).

        ``exclude``: catalog indices never to return, per user, as for ``recommend`` (-1 pads): the index is asked
        for ``k`` plus the most any user excludes and the excluded items are dropped from each user's list, so an
        exact index returns exactly ``k``; a ``k`` over what a user has left is refused. An ``"ivf"`` index may find
        fewer than ``k`` items (the groups it scans hold fewer): the places left are index -1, score -inf.
        """
        num_items = self.num_items
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_items:
            raise ValueError(f"k must be an int in [1, {num_items}] (the indexed items), got {k!r}")
        if not isinstance(user_states, torch.Tensor) or user_states.dim() != 2:
            raise ValueError("user_states must be a 2-D tensor (users, hidden): model.user_states(**batch)")
        if user_states.shape[1] != self.weight.shape[1]:
            raise ValueError(
                f"user_states have {user_states.shape[1]} features, the index's rows {self.weight.shape[1]}"
            )
        queries = query_vectors(user_states, augmented=self.kind == "ivf")
        exclusions = None
        if exclude is not None:
            exclusions = check_exclusions(exclude, len(queries), num_items, "exclude").cpu()
            check_items_left(exclusions, k, num_items)
        extra = int((exclusions >= 0).sum(1).max()) if exclusions is not None and exclusions.numel() else 0
        _, indices = self.index.search(queries, min(num_items, k + extra))
        indices = torch.from_numpy(indices).long()
        found = indices >= 0
        if extra:
            found &= ~(indices[:, :, None] == exclusions[:, None, :]).any(-1)
        # the items found, scored from the rows as the model scores them, best first
        device = self.weight.device
        states = user_states.detach().to(device, self.weight.dtype)
        # index_select, not weight[rows]: advanced indexing starts a parallel region that, beside faiss's own OpenMP
        # threads, waits for a CPU (8 ms a query on 2 cores)
        rows = indices.clamp(min=0).to(device).view(-1)
        found_rows = self.weight.index_select(0, rows).view(*indices.shape, -1)
        scores = torch.einsum("bnd,bd->bn", found_rows, states) + self.bias.index_select(0, rows).view(indices.shape)
        scores = scores.float()
        scores = scores.masked_fill(~found.to(device), float("-inf"))
        order = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
        indices = indices.to(device).gather(1, order).masked_fill(~found.to(device).gather(1, order), -1)
        return scores.gather(1, order), indices

    def save(self, folder: str | os.PathLike) -> str:
        """Write the index into ``folder`` (beside the checkpoint): ``item_index.json`` (its kind, options, catalog
        fingerprint and rows digest) naming the faiss file it goes with, written last, so a crash leaves the old
        index or the new one whole. Returns the json's path."""
        if self.fingerprint is None:
            raise ValueError(
                "this index is bound to no catalog (its model had none): call model.set_catalog(catalog) and rebuild "
                "it, so that a model of another catalog cannot load it"
            )
        faiss = import_faiss()
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        metadata_path = os.path.join(folder, METADATA_FILE)
        previous = _index_file(metadata_path)
        name = f"item_index.{uuid.uuid4().hex[:12]}.faiss"
        write_file_atomically(os.path.join(folder, name), lambda temporary: faiss.write_index(self.index, temporary))
        metadata = {
            "format_version": FORMAT_VERSION,
            "index_file": name,
            "kind": self.kind,
            "nprobe": self.nprobe,
            "num_items": self.num_items,
            "catalog_fingerprint": self.fingerprint,
            "rows_digest": self.digest,
        }
        write_text_atomically(metadata_path, json.dumps(metadata, indent=2) + "\n")
        if previous is not None and previous != name and os.path.exists(os.path.join(folder, previous)):
            os.remove(os.path.join(folder, previous))
        return metadata_path

    @classmethod
    def load(cls, folder: str | os.PathLike, model) -> ItemIndex:
        """The index :meth:`save` wrote into ``folder``, for ``model`` (whose rows score what it finds): refused,
        before the faiss file is read, when the model's catalog or adapter rows are not the ones it was built from."""
        folder = os.fspath(folder)
        metadata_path = os.path.join(folder, METADATA_FILE)
        if not os.path.isfile(metadata_path):
            raise FileNotFoundError(f"{folder} has no {METADATA_FILE}: build one with ItemIndex.from_model and save it")
        with open(metadata_path, encoding="utf-8") as handle:
            metadata = json.load(handle)
        if metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{metadata_path} has format {metadata.get('format_version')!r}, not {FORMAT_VERSION}")
        if not _is_index_file_name(metadata.get("index_file")):
            raise ValueError(
                f"{metadata_path}: index_file {metadata.get('index_file')!r} is not a name ItemIndex.save writes "
                "(item_index.<12 hex digits>.faiss, in the same folder)"
            )
        _check_binding(metadata["num_items"], metadata["catalog_fingerprint"], metadata["rows_digest"], model, True)
        index = import_faiss().read_index(os.path.join(folder, metadata["index_file"]))
        with torch.no_grad():
            weight, bias = model.adapter.item_rows()
        loaded = cls(index, metadata["kind"], weight, bias, metadata["catalog_fingerprint"])
        if loaded.kind == "ivf":
            loaded.nprobe = int(metadata["nprobe"])
        return loaded


def _blocks(num_items: int):
    for start in range(0, num_items, BUILD_CHUNK):
        yield start, min(start + BUILD_CHUNK, num_items)


def _check_binding(num_items: int, fingerprint: str | None, digest: str, model, rows: bool) -> None:
    model_items, model_fingerprint = model.config.num_items, model.config.catalog_fingerprint
    if model_items != num_items or model_fingerprint != fingerprint:
        raise ValueError(
            f"this item index was built for another catalog ({num_items} items, fingerprint {str(fingerprint)[:12]}) "
            f"than the model's ({model_items} items, fingerprint {str(model_fingerprint)[:12]}): rebuild it with "
            "ItemIndex.from_model(model)"
        )
    if rows and _model_rows_digest(model) != digest:
        raise ValueError(
            "this item index was built from other adapter rows than the model's (a retrained model?): rebuild it with "
            "ItemIndex.from_model(model)"
        )


@torch.no_grad()
def _model_rows_digest(model) -> str:
    return rows_digest(*model.adapter.item_rows())


def _is_index_file_name(name) -> bool:
    # only a name save() writes: a crafted item_index.json could otherwise name any path, for save() to delete and for
    # load() to hand to faiss
    return isinstance(name, str) and re.fullmatch(r"item_index\.[0-9a-f]{12}\.faiss", name) is not None


def _index_file(metadata_path: str) -> str | None:
    """The faiss file an earlier save recorded, when it is one save() could have written (else None: not removed)."""
    if not os.path.isfile(metadata_path):
        return None
    try:
        with open(metadata_path, encoding="utf-8") as handle:
            name = json.load(handle).get("index_file")
    except (OSError, ValueError, AttributeError):
        return None
    return name if _is_index_file_name(name) else None


__all__ = ["ItemIndex", "default_nlist", "import_faiss", "item_vectors", "query_vectors", "rows_digest"]
