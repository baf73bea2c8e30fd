"""A screenshot of the demo page (README), taken in headless Debian Chromium after typing a history as a person would.

python docs/figures/demo_screenshot.py                              # runs/cpu-quick-stacked/checkpoint (make run)
python docs/figures/demo_screenshot.py path/to/checkpoint --history "Star Wars (1977)" "Fargo (1996)"
python docs/figures/demo_screenshot.py --small-model runs/demo-small  # no trained checkpoint: train a small one first

``--small-model DIR`` trains, through the main job (``run_experiment``) on MovieLens-100k, a 2-layer random Llama
(hidden 64, a word-level tokenizer over the catalog's texts) for 150 steps (about a minute on 2 CPU
cores) and serves that: the page is the same, its lists are those of a small model, not of cpu-quick.
Needs the demo extra and Debian's chromium (see docs/demo.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile

import transformers_iam  # noqa: F401  (registers the Auto classes and the pipeline)
from transformers_iam.integrations.demo import DEFAULT_CHECKPOINT, launch_demo, load_recommender

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HISTORY = ["Star Wars (1977)", "Fargo (1996)", "Toy Story (1995)", "Return of the Jedi (1983)", "Scream (1996)"]
SEARCH = "godfather"  # left in the search box, so the picture shows the match list too
# headless on a machine with no network: without the background-networking flags Chromium keeps dialling out
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def train_small_model(output_dir: str) -> str:
    """Train a small IAM model on MovieLens-100k through the main job; returns its checkpoint folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    from transformers_iam.experiments import RunArguments, run_experiment
    from transformers_iam.experiments.build import load_data

    config = dict(
        output_dir=output_dir,
        num_backbone_layers=2,
        freeze_bottom_layers=0,
        max_history=10,
        train_examples_per_user=3,
        supervision="every_item",
        max_item_tokens=16,
        max_length=256,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        max_steps=150,
        evaluations=1,
        max_eval_users=200,  # the page needs a trained model, not its metrics
        learning_rate=3e-3,
        adapter_learning_rate=3e-3,
        eval_on_start=False,
    )
    data = load_data(RunArguments.from_preset(None, **config))
    words = sorted({word for text in data.catalog.texts for word in text.split()} | {"A", "user", "watched", "next"})
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials + words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    backbone = os.path.join(output_dir, "backbone")
    torch.manual_seed(0)
    llama = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
    )
    LlamaModel(llama).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    run_experiment(RunArguments.from_preset(None, backbone=backbone, **config))
    return os.path.join(output_dir, "checkpoint")


def take_screenshot(checkpoint: str, out: str, history: list[str], search: str = SEARCH) -> None:
    """Serve ``checkpoint``, type ``history`` (Enter after each title), type ``search``, save a full-page PNG."""
    from playwright.sync_api import sync_playwright

    example = os.path.join(ROOT, "examples", "demo.py")
    spec = importlib.util.spec_from_file_location("demo_example", example)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the example's popularity: what `make demo` shows
    recommender = load_recommender(checkpoint, popularity=module.popularity_for(checkpoint))
    demo, url = launch_demo(recommender, block=False)
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=chromium, headless=True, args=CHROMIUM_ARGS
            )
            page = context.new_page()
            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(url)
            box = page.locator("#search textarea, #search input").first
            for count, title in enumerate(history, start=1):
                box.fill("")
                box.press_sequentially(title, delay=5)
                box.press("Enter")
                page.wait_for_function(
                    "(n) => document.querySelectorAll('#history label').length === n", arg=count, timeout=60_000
                )
            box.fill("")
            box.press_sequentially(search, delay=5)
            page.wait_for_selector(f"#matches >> text=Matches for '{search}'")
            page.screenshot(path=out, full_page=True)
            context.close()
    finally:
        demo.close()
    print(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", default=DEFAULT_CHECKPOINT)
    parser.add_argument("--small-model", metavar="DIR", help="train a small model into DIR first and serve it")
    parser.add_argument("--history", nargs="+", default=HISTORY, help="titles typed into the page, oldest first")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images", "demo.png"))
    args = parser.parse_args(argv)
    checkpoint = train_small_model(args.small_model) if args.small_model else args.checkpoint
    take_screenshot(checkpoint, args.out, args.history)


if __name__ == "__main__":
    main()
