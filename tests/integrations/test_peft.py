"""LoRA through PEFT: trainable parameters, adapter-only checkpoints, merge_and_unload."""

from __future__ import annotations

import os

import torch
from peft import PeftModel

from transformers_iam import IAMDataCollator
from transformers_iam.integrations.peft import apply_lora

from ..testing_utils import SEGMENTS, collator_kwargs, random_ids, tiny_model


def perturb_trainable(model, seed: int = 0):
    """Stand-in for training: give every trainable parameter (LoRA B starts at zero) a non-zero value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))


def scores(model):
    with torch.no_grad():
        return model(input_ids=random_ids(), item_segment_ids=SEGMENTS).logits


def test_lora_trains_projections_and_the_whole_adapter():
    peft_model = apply_lora(tiny_model(), rank=4)
    trainable = {name for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any("q_proj.lora_A" in name for name in trainable) and any("down_proj.lora_B" in name for name in trainable)
    assert any("adapter.modules_to_save" in name and "item_embeddings" in name for name in trainable)
    assert not any("embed_tokens" in name or ("q_proj.base_layer" in name) for name in trainable)


def test_adapter_only_checkpoint_round_trip_and_merge(tmp_path):
    base = tiny_model(seed=3)
    base_scores = scores(base)
    peft_model = apply_lora(tiny_model(seed=3), rank=4).eval()
    perturb_trainable(peft_model)
    tuned = scores(peft_model)
    assert not torch.allclose(tuned, base_scores)  # LoRA and the adapter really changed the scores

    peft_model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "adapter_model.safetensors" in files and "model.safetensors" not in files
    assert os.path.getsize(tmp_path / "adapter_model.safetensors") < 0.5 * sum(p.numel() * 4 for p in base.parameters())

    reloaded = PeftModel.from_pretrained(tiny_model(seed=3), tmp_path).eval()
    torch.testing.assert_close(scores(reloaded), tuned)
    merged = reloaded.merge_and_unload()
    assert type(merged).__name__ == "IAMForCausalRecommendation"
    torch.testing.assert_close(scores(merged), tuned, atol=1e-5, rtol=1e-4)
    assert merged.config._attn_implementation == "iam_sdpa"


def test_lora_trains_the_item_id_vectors_in_full(tokenizer, catalog):
    # new weights with nothing pretrained to adapt: frozen by PEFT they would stay at their zero initialisation
    model = tiny_model(num_layers=4, num_item_tokens=1, use_item_id_embeddings=True)
    peft_model = apply_lora(model, rank=4).train()
    own = "item_id_embeddings.modules_to_save.default.weight"
    trainable = {name: p for name, p in peft_model.named_parameters() if p.requires_grad}
    assert any(name.endswith(own) for name in trainable)
    collator = IAMDataCollator(tokenizer, catalog, max_length=48, **collator_kwargs())
    batch = collator([{"history": ["i3", "i1", "i5"], "target": "i4"}, {"history": ["i7", "i9"], "target": "i3"}])
    peft_model(**batch).loss.backward()
    gradient = next(p.grad for name, p in trainable.items() if name.endswith(own))
    assert gradient is not None and gradient.abs().sum() > 0
