"""docs/figures/attention_masks.py draws from the library's mask code and runs end to end (so its pictures in
docs/architecture.md can always be made again)."""

from __future__ import annotations

import importlib.util
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script():
    path = os.path.join(ROOT, "docs", "figures", "attention_masks.py")
    spec = importlib.util.spec_from_file_location("attention_masks", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pictures_show_the_mask_semantics(tmp_path):
    script = load_script()
    tokens, segments = script.example_tokens()
    index = {token: position for position, token in reversed(list(enumerate(tokens)))}
    intra, inter, full = (script.mask_of(kind, segments) for kind in ("intra", "inter", "full"))
    # a token of "Fargo" sees its own item in intra, not "Toy"; in inter the reverse, and itself; full sees both
    fargo, fargo_year, toy = index["Fargo"], index["(1996)"], index["Toy"]
    assert intra[fargo_year, fargo] and not intra[fargo_year, toy]
    assert inter[fargo_year, toy] and not inter[fargo_year, fargo] and inter[fargo_year, fargo_year]
    assert full[fargo_year, toy] and full[fargo_year, fargo] and not full.any(where=np.triu(np.ones_like(full), 1))
    # the last query token sees every item in inter (it aggregates the history) and none in intra
    assert inter[-1].all() and not intra[-1, index["Toy"] : index["Next"]].any()
    # an allowed cell takes its key's segment colour, a masked one stays white
    image = script.coloured(inter, segments)
    assert (image[fargo_year, fargo] == 1).all() and not (image[fargo_year, toy] == 1).all()

    paths = script.main(["--out-dir", str(tmp_path)])
    assert [os.path.basename(path) for path in paths] == ["masks_kinds.png", "masks_layouts.png"]
    assert all(os.path.getsize(path) > 10_000 for path in paths)
