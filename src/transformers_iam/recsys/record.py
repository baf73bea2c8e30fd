"""The project's record of final numbers (``docs/results.json``) and the tables generated from it.

The record is a list of entries, one per (run, split, target group). Every table of results in README.md and
docs/results.md sits between ``<!-- results-table ... -->`` and ``<!-- end results-table -->`` and is generated
from the record (``python benchmarks/record_results.py update README.md docs/results.md``); a test checks that each
table still matches it. An entry is added from a run's ``metrics.json`` (or SASRec's ``sasrec_metrics.json``) by
``python benchmarks/record_results.py add``, never typed in by hand.

Example:
    >>> entry = {"dataset": "toy", "model": "IAM", "split": "test", "targets": "all", "users": 3, "ndcg@10": 0.25,
    ...          "hr@10": 0.5, "command": "python examples/finetune.py", "date": "2026-12-06", "machine": "x86_64"}
    >>> check_entry(entry)
    >>> print(render_table([entry], "dataset=toy"))
    | model | test NDCG@10 | test HR@10 | NDCG@10 against SASRec, paired (95% interval) | users | command |
    | --- | --- | --- | --- | --- | --- |
    | IAM | 0.2500 | 0.5000 | - | 3 | `python examples/finetune.py` |
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

REQUIRED = ("dataset", "model", "split", "targets", "users", "ndcg@10", "hr@10", "command", "date", "machine")
SPLITS = ("valid", "test")
TARGET_GROUPS = ("all", "cold", "warm", "cold-shelf", "head", "torso", "tail")
_BLOCK = re.compile(r"(<!-- results-table (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- end results-table -->)", re.DOTALL)


def check_entry(entry: dict) -> None:
    """Refuse an entry that lacks a required field or holds a value no table could show."""
    missing = [name for name in REQUIRED if name not in entry]
    if missing:
        raise ValueError(f"record entry {entry.get('model')!r} lacks {missing}")
    if entry["split"] not in SPLITS or entry["targets"] not in TARGET_GROUPS:
        raise ValueError(f"record entry {entry['model']!r}: split {entry['split']!r} / targets {entry['targets']!r}")
    for metric in ("ndcg@10", "hr@10"):
        if entry[metric] is not None and not 0 <= entry[metric] <= 1:
            raise ValueError(f"record entry {entry['model']!r}: {metric} = {entry[metric]!r} is not in [0, 1]")
    if ("converged" in entry) != ("epochs" in entry):
        raise ValueError(f"record entry {entry['model']!r}: a baseline trained to a rule gives converged and epochs")


def load_record(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        record = json.load(handle)
    if not isinstance(record, list):
        raise ValueError(f"{path}: the record is a list of entries")
    for entry in record:
        check_entry(entry)
    return record


def select(record: Iterable[dict], spec: str) -> list[dict]:
    """The entries a table's ``spec`` names: ``key=value`` pairs (``dataset=ml-1m split=test targets=all``, the last
    two by default; ``headline=true`` for the README's rows), in record order."""
    wanted = {"split": "test", "targets": "all"}
    wanted.update(dict(pair.split("=", 1) for pair in spec.split()))
    chosen = []
    for entry in record:
        if all(str(entry.get(key, "")).lower() == value.lower() for key, value in wanted.items()):
            chosen.append(entry)
    return chosen


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"  # None: not recorded when it was measured


def _paired(entry: dict) -> str:
    paired = entry.get("vs_sasrec")
    if not paired:
        return "-"
    difference, low, high = paired["ndcg@10"]
    relative = paired.get("relative")
    words = f"{difference:+.4f} [{low:+.4f}, {high:+.4f}]"
    return words + (f" ({relative})" if relative else "")


def _model_cell(entry: dict) -> str:
    name = entry["model"]
    if "converged" in entry:
        state = "converged" if entry["converged"] else "not converged"
        name += f" ({entry['epochs']} epochs, {state})"
    return name


def render_table(record: Iterable[dict], spec: str) -> str:
    """The markdown table of the entries ``spec`` selects (see :func:`select`)."""
    entries = select(record, spec)
    split = dict(pair.split("=", 1) for pair in ("split=test " + spec).split())["split"]
    header = ["model", f"{split} NDCG@10", f"{split} HR@10", "NDCG@10 against SASRec, paired (95% interval)"]
    lines = ["| " + " | ".join([*header, "users", "command"]) + " |", "| --- | --- | --- | --- | --- | --- |"]
    for entry in entries:
        cells = [
            _model_cell(entry),
            _number(entry["ndcg@10"]),
            _number(entry["hr@10"]),
            _paired(entry),
            f"{entry['users']:,}",
            _code_span(entry["command"].replace("|", "\\|")),  # a pipe would end the cell, even in a code span
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _code_span(text: str) -> str:
    """``text`` as one markdown code span: fenced by more backticks than its longest run of them, padded with a space
    where it starts or ends with one (a single backtick in a command would otherwise end the span)."""
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def update_tables(text: str, record: list[dict]) -> str:
    """``text`` with every ``results-table`` block regenerated from ``record``."""
    return _BLOCK.sub(
        lambda match: match.group(1) + render_table(record, match.group("spec")) + "\n" + match.group(4), text
    )


def stale_tables(text: str, record: list[dict]) -> list[str]:
    """The specs of the blocks in ``text`` that do not match ``record`` (an empty list: every table matches)."""
    return [
        match.group("spec")
        for match in _BLOCK.finditer(text)
        if match.group("body") != render_table(record, match.group("spec")) + "\n"
    ]


__all__ = ["REQUIRED", "check_entry", "load_record", "render_table", "select", "stale_tables", "update_tables"]
