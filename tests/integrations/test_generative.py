"""The generative variant: completion collator, catalog-constrained beam search, TRL SFTTrainer."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

from transformers_iam.integrations.generative import (
    CatalogTrie,
    GenerativeIAMCollator,
    constrained_beam_search,
    enable_generative_iam,
    rank_in_beams,
)

from ..testing_utils import TINY, collator_kwargs, next_item_dataset


def tiny_lm(seed: int = 0, layer_types=("intra", "inter")) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(num_hidden_layers=len(layer_types), **TINY)).eval()
    return enable_generative_iam(model, list(layer_types))


def make_collator(tokenizer, catalog):
    return GenerativeIAMCollator(tokenizer, catalog, max_length=64, **collator_kwargs())


def test_completion_is_a_new_segment_with_labels_only_on_it(tokenizer, catalog):
    collator = make_collator(tokenizer, catalog)
    batch = collator([{"history": ["i1", "i2"], "target": "i5"}, {"history": ["i3"], "target": "i4"}])
    row, mask = batch["labels"][0], batch["attention_mask"][0].bool()
    completion = collator.completion_ids(catalog.index_of("i5"))
    assert row[row != -100].tolist() == completion and completion[-1] == tokenizer.eos_token_id
    segments = batch["item_segment_ids"][0][mask]
    assert segments[-len(completion) :].tolist() == [3] * len(completion)  # items 1, 2, then the completion
    assert batch["attention_mask"][1, -1] == 0  # right padding


def exact_constrained_scores(model, collator, trie, example):
    """Teacher-forced log-probability of every item, renormalised over the trie's children at each step."""
    scores = {}
    for index in range(len(collator.catalog)):
        batch = collator([{**example, "target": collator.catalog.item_ids[index]}])
        with torch.no_grad():
            log_probs = torch.log_softmax(
                model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0].float(), -1
            )
        completion = collator.completion_ids(index)
        start = batch["input_ids"].shape[1] - len(completion)
        total, prefix = 0.0, []
        for step, token in enumerate(completion):
            allowed = torch.tensor(list(trie.walk(prefix).children))
            renormalised = torch.log_softmax(log_probs[start - 1 + step, allowed], -1)
            total += float(renormalised[allowed.tolist().index(token)])
            prefix.append(token)
        scores[index] = total
    return scores


def test_exhaustive_beam_search_matches_teacher_forcing(tokenizer, catalog):
    model, collator = tiny_lm(), make_collator(tokenizer, catalog)
    trie = CatalogTrie.from_collator(collator)
    example = {"history": ["i3", "i8", "i11"]}
    finished = constrained_beam_search(model, collator, example, trie, num_beams=len(catalog))
    assert sorted(i for _, items in finished for i in items) == list(
        range(len(catalog))
    )  # only real items, all of them
    exact = exact_constrained_scores(model, collator, trie, example)
    for score, items in finished:
        for index in items:
            assert abs(score - exact[index]) < 1e-4, (index, score, exact[index])
    assert [items[0] for _, items in finished] == sorted(exact, key=exact.get, reverse=True)


def test_beam_search_excludes_history_and_ranks_pessimistically(tokenizer, catalog):
    model, collator = tiny_lm(seed=1), make_collator(tokenizer, catalog)
    trie = CatalogTrie.from_collator(collator)
    history = [catalog.index_of(item) for item in ("i3", "i8")]
    finished = constrained_beam_search(
        model, collator, {"history": ["i3", "i8"]}, trie, num_beams=5, exclude_item_indices=history
    )
    found = [i for _, items in finished for i in items]
    assert len(finished) == 5 and not set(found) & set(history)
    assert rank_in_beams(finished, found[0], 20) == 1 and rank_in_beams(finished, history[0], 20) == 20
    assert rank_in_beams([(0.0, [4, 7]), (-1.0, [2])], 4, 20) == 2  # a shared leaf ties: pessimistic


def test_sft_trainer_learns_the_completion_with_item_aware_masks(tmp_path, tokenizer, catalog):
    model, collator = tiny_lm(), make_collator(tokenizer, catalog)
    train, held_out = next_item_dataset(catalog, 128, seed=0), next_item_dataset(catalog, 32, seed=1)

    def held_out_loss():
        model.eval()
        with torch.no_grad():
            return float(model(**collator(list(held_out))).loss)

    before = held_out_loss()
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        max_steps=40,
        learning_rate=1e-2,
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10,
    )
    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, data_collator=collator, processing_class=tokenizer
    )
    seen_segments = []
    hook = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen_segments.append("item_segments" in kwargs), with_kwargs=True
    )
    trainer.train()
    hook.remove()
    assert seen_segments and all(seen_segments)  # every training forward carried the item segments
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)


def test_generative_checkpoint_reloads_item_aware(tmp_path, tokenizer, catalog):
    from transformers_iam.integrations.generative import load_generative_iam

    model, collator = tiny_lm(seed=2), make_collator(tokenizer, catalog)
    model.save_pretrained(tmp_path)
    reloaded = load_generative_iam(str(tmp_path)).eval()
    assert reloaded.config._attn_implementation == "iam_sdpa"
    batch = collator([{"history": ["i1", "i2"], "target": "i3"}])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits)
