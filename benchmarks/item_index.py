"""Top-10 over a large catalog for one user: exact in chunks (core/ranking.py) against faiss indexes
(integrations/item_index.py), with the approximate index's recall@10 against the exact top-10.

    python benchmarks/item_index.py                                  # 10k, 100k and 1M items, d = 576
    python benchmarks/item_index.py --sizes 10000 100000 --json-out runs/item_index.json
    python benchmarks/item_index.py --quick                          # tiny: checks the script, measures nothing

The rows are synthetic, float32, d = 576 (SmolLM2-135M's hidden size, the adapter's): item rows point near one of
1,000 directions (cluster sizes Zipf-like, exponent 0.8; cosine about 0.8 to their direction) with norms 0.2 x
lognormal(0, 0.3), as trained rows of a text-initialised adapter; each item's bias is its centred log-popularity,
popularity Pareto(1.2) (a long tail); a user state is a mix of two directions plus noise scaled to norm sqrt(576), as
the adapter's LayerNorm gives. Every user excludes 20 random items (a history). One process, one user per query:
latency p50/p99 over `--users` queries; recall@10: the share of the exact top-10 (same exclusions) found; memory:
the growth of the process's resident memory while the index is built (faiss's copy of the rows), and the rows' own
size. HNSW (inner product, M=32) is measured up to `--hnsw-max-items` (its build is minutes beyond). The load of the
machine is printed before and after: other processes sharing the CPU slow every row, and the multi-threaded rows
most (a parallel region waits for a CPU): `--threads 1` measures one serving thread.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import sys
import time

import psutil
import torch
import torch.nn.functional as F

from transformers_iam.core.ranking import DEFAULT_CHUNK_SIZE, chunked_topk
from transformers_iam.integrations.item_index import ItemIndex, default_nlist, import_faiss, item_vectors, query_vectors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from latency import latency_percentiles  # noqa: E402

K, EXCLUDED, CLUSTERS = 10, 20, 1000


def synthetic_rows(num_items: int, dim: int, num_users: int, seed: int = 0):
    """(user states, item rows, item biases, each user's excluded items), as the module docstring describes."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(CLUSTERS, dim, generator=generator), dim=1)
    sizes = 1.0 / torch.arange(1, CLUSTERS + 1) ** 0.8
    weight = torch.empty(num_items, dim)
    for start in range(0, num_items, 65_536):  # in blocks: no second full-size temporary
        stop = min(start + 65_536, num_items)
        cluster = torch.multinomial(sizes, stop - start, replacement=True, generator=generator)
        noise = 0.8 * torch.randn(stop - start, dim, generator=generator) / math.sqrt(dim)
        norms = 0.2 * torch.exp(0.3 * torch.randn(stop - start, 1, generator=generator))
        weight[start:stop] = F.normalize(centres[cluster] + noise, dim=1) * norms
    popularity = (1.0 - torch.rand(num_items, generator=generator)) ** (-1 / 1.2)  # Pareto(1.2), minimum 1
    bias = popularity.log() - popularity.log().mean()
    first = torch.multinomial(sizes, num_users, replacement=True, generator=generator)
    second = torch.randint(0, CLUSTERS, (num_users,), generator=generator)
    noise = torch.randn(num_users, dim, generator=generator) / math.sqrt(dim)
    states = F.normalize(centres[first] + 0.5 * centres[second] + noise, dim=1) * math.sqrt(dim)
    excluded = torch.randint(0, num_items, (num_users, EXCLUDED), generator=generator)
    return states, weight, bias, excluded


def latencies(search, num_users: int) -> tuple[float, float]:
    """p50 and p99 in ms of ``search(user)`` over the users, one at a time (after one warm-up query)."""
    search(0)
    times = []
    for user in range(num_users):
        start = time.perf_counter()
        search(user)
        times.append(time.perf_counter() - start)
    timed = latency_percentiles(times)
    return timed["p50_ms"], timed["p99_ms"]


def recall(found: torch.Tensor, exact: torch.Tensor) -> float:
    return sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist())) / exact.numel()


def resident_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def measure_index(name, build, states, excluded, exact, num_users):
    before, start = resident_mb(), time.perf_counter()
    index = build()
    built_s, memory = time.perf_counter() - start, resident_mb() - before
    p50, p99 = latencies(lambda user: index.search(states[user : user + 1], K, excluded[user : user + 1]), num_users)
    found = torch.cat(
        [index.search(states[user : user + 1], K, excluded[user : user + 1])[1] for user in range(len(states))]
    )
    return {"method": name, "build_s": built_s, "memory_mb": memory, "p50_ms": p50, "p99_ms": p99,
            "recall@10": recall(found, exact)}  # fmt: skip


def measure_hnsw(states, weight, bias, excluded, exact, num_users, ef_searches):
    """faiss HNSW over [w ; b] with the inner-product metric, queried with [u ; 1] (over-fetching the exclusions)."""
    faiss = import_faiss()
    before, start = resident_mb(), time.perf_counter()
    vectors = item_vectors(weight, bias)
    index = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.add(vectors)
    del vectors
    built_s, memory = time.perf_counter() - start, resident_mb() - before
    queries = query_vectors(states)
    rows = []
    for ef in ef_searches:
        index.hnsw.efSearch = ef

        def search(user):
            _, found = index.search(queries[user : user + 1], K + EXCLUDED)
            drop = set(excluded[user].tolist())
            return [item for item in found[0].tolist() if item not in drop][:K]

        p50, p99 = latencies(search, num_users)
        found = torch.tensor([search(user) + [-1] * (K - len(search(user))) for user in range(len(states))])
        rows.append({"method": f"faiss HNSW, inner product, M=32, efSearch={ef}", "build_s": built_s,
                     "memory_mb": memory, "p50_ms": p50, "p99_ms": p99, "recall@10": recall(found, exact)})  # fmt: skip
    return rows


def run_size(num_items: int, args) -> list[dict]:
    states, weight, bias, excluded = synthetic_rows(num_items, args.dim, args.users)
    chunk_size = min(DEFAULT_CHUNK_SIZE, num_items)
    exact = chunked_topk(states, weight, bias, K, excluded, chunk_size)[1]  # what recall@10 is measured against

    def exact_row(name, search):
        p50, p99 = latencies(search, args.users)
        return {"method": name, "build_s": 0.0, "memory_mb": 0.0, "p50_ms": p50, "p99_ms": p99, "recall@10": 1.0}

    def in_chunks(user):
        return chunked_topk(states[user : user + 1], weight, bias, K, excluded[user : user + 1], chunk_size)

    def one_matrix(user):
        scores = F.linear(states[user : user + 1], weight, bias)
        scores[0, excluded[user]] = float("-inf")
        return scores.topk(K)

    rows = [
        exact_row(f"exact, chunks of {chunk_size:,} (chunked_topk)", in_chunks),
        exact_row("exact, one [1 x items] matrix (F.linear + topk)", one_matrix),
    ]
    batch = min(64, args.users)
    start = time.perf_counter()
    chunked_topk(states[:batch], weight, bias, K, excluded[:batch], chunk_size)
    per_user = (time.perf_counter() - start) / batch * 1e3
    rows.append({**exact_row("", lambda user: None), "method": f"exact, chunks, {batch} users per call (ms per user)",
                 "p50_ms": per_user, "p99_ms": float("nan")})  # fmt: skip
    exact_index = lambda: ItemIndex.build(weight, bias, kind="exact")  # noqa: E731
    rows.append(
        measure_index("faiss exact (IndexFlatIP over [w ; b])", exact_index, states, excluded, exact, args.users)
    )
    before, start = resident_mb(), time.perf_counter()
    ivf = ItemIndex.build(weight, bias, kind="ivf")
    built_s, memory = time.perf_counter() - start, resident_mb() - before
    for nprobe in args.nprobes:
        ivf.nprobe = nprobe
        name = f"faiss IVF-flat (L2 over [w ; b ; norm]), nlist={default_nlist(num_items)}, nprobe={nprobe}"
        row = measure_index(name, lambda index=ivf: index, states, excluded, exact, args.users)
        rows.append({**row, "build_s": built_s, "memory_mb": memory})
    del ivf
    if num_items <= args.hnsw_max_items:
        rows += measure_hnsw(states, weight, bias, excluded, exact, args.users, args.ef_searches)
    return [{"items": num_items, **row} for row in rows]


def table(rows: list[dict]) -> str:
    lines = [
        "| items | method | build s | index memory MB | p50 ms | p99 ms | recall@10 |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['items']:,} | {row['method']} | {row['build_s']:.1f} | {row['memory_mb']:,.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {row['recall@10']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--users", type=int, default=200, help="queries per measurement (and users for recall)")
    parser.add_argument("--nprobes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--ef-searches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--hnsw-max-items", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="2,000 items, d=32, 20 users: checks the script only")
    parser.add_argument("--threads", type=int, default=None, help="torch's and faiss's threads (default: theirs)")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        import_faiss().omp_set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.dim, args.users, args.nprobes, args.ef_searches = [2_000], 32, 20, [4], [32]
    threads = f"torch threads {torch.get_num_threads()}, faiss threads {import_faiss().omp_get_max_threads()}"
    print(f"load average before: {os.getloadavg()}, {os.cpu_count()} CPUs, {threads}")
    rows = []
    for num_items in args.sizes:
        rows += run_size(num_items, args)
        print(table([row for row in rows if row["items"] == num_items]), flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    print(f"load average after: {os.getloadavg()}; peak resident memory {peak:.1f} GiB\n")
    print(table(rows))
    if args.json_out:
        os.makedirs(os.path.dirname(os.path.abspath(args.json_out)), exist_ok=True)
        with open(args.json_out, "w", encoding="utf-8") as handle:
            json.dump({"dim": args.dim, "users": args.users, "threads": threads, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
