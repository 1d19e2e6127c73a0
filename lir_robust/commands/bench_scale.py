"""Benchmark (not a test): time and peak memory of the full default sweep grid as the corpus grows.

    python eval/bench_scale.py                                    # 10k, 30k, 100k documents; 1 and 2 processes (long)
    python eval/bench_scale.py --sizes 500 1500 --queries 20      # a quick check of the script
    make bench-scale

Synthetic multi-vector corpora: random unit vectors (128-d), 32 to 128 patches per document; queries of 32 random unit
tokens (225 by default) with 1 to 3 random gold documents each. Each corpus (and its queries) is written into the
embedding cache (EmbeddingCache.save), and every measurement reads it back memory-mapped (EmbeddingCache.load), as
eval/length_sweep.py does. The measurement is the command's own sweep path after encoding: lir_robust.sweep.pipeline's
ranked_segments (the faiss hard-negative search, the default segments, each query's top documents kept, segment files
written) and sweep_metrics, for every head x kind x K of the default grid (5 x 3 x 9; corpus patches drawn from the
corpus itself, hard patches found by faiss).

Each (size, processes) runs in a fresh process (``torchrun --nproc_per_node N`` for N > 1), so that its peak RSS
(ru_maxrss) is its own; both processes' peaks are reported for N = 2. Time = the sweep alone (not making the corpus,
not loading the libraries). The memory-mapped embeddings count in RSS once their pages are read, so the table also
gives peak RSS minus their size, and the peak of the anonymous (not file-backed) resident memory, sampled every 20 ms.

Targets (issue 9): time grows at most linearly (exponent log(t2/t1) / log(n2/n1) <= 1.1 between sizes) and peak
RSS minus the memory-mapped embeddings grows by at most 1.5x from the smallest size to the largest.
Writes <out>/bench.json (atomically).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

import lir_robust
from lir_robust.commands import cli
from lir_robust.core.files import write_json_atomic
from lir_robust.attacks.kinds import DEFAULT_KINDS, DEFAULT_KS
from lir_robust.sweep.pipeline import DEFAULT_HEADS, library_versions

DIM = 128
QUERY_TOKENS = 32
PATCHES = (32, 128)  # fewest and most patches of a document
GOLD = (1, 3)  # fewest and most gold documents of a query
TIME_EXPONENT_TARGET = 1.1
MEMORY_RATIO_TARGET = 1.5


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=cli.int_at_least(20), default=[10_000, 30_000, 100_000],
                        help="corpus sizes (documents), smallest first")
    parser.add_argument("--processes", nargs="+", type=cli.int_at_least(1), default=[1, 2],
                        help="process counts to measure (N > 1 runs under torchrun --nproc_per_node N)")
    parser.add_argument("--queries", type=cli.positive_int, default=225)
    parser.add_argument("--threads", type=cli.positive_int, default=None,
                        help="torch and faiss threads per process (default: the CPU cores shared among the processes)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0)
    parser.add_argument("--work-dir", type=cli.output_folder, default=None,
                        help="where the corpora are written (default: a temporary folder, removed at the end; "
                        "100k documents take about 4 GB)")
    parser.add_argument("--out", type=cli.output_folder, default="results/bench-scale")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: one measurement
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    """The options, every one checked before any corpus is made."""
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        return args
    if sorted(set(args.sizes)) != args.sizes:
        raise cli.UserError(f"--sizes {' '.join(map(str, args.sizes))}: give distinct sizes, smallest first")
    args.processes = list(dict.fromkeys(args.processes))
    if any(count > 1 for count in args.processes) and _torchrun() is None:
        raise cli.UserError("torchrun is not installed beside this Python (it comes with torch); install it or pass --processes 1")
    return args


def _torchrun() -> str | None:
    return shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


# ------------------------------------------------------------------------------------------------------------------
# Making a corpus (in the parent process, before any measurement)
# ------------------------------------------------------------------------------------------------------------------


def make_corpus(size: int, queries: int, seed: int, cache_dir: Path) -> dict[str, Any]:
    """Write a synthetic corpus of ``size`` documents and its queries into the embedding cache under ``cache_dir``;
    returns the plan a worker reads (cache keys, gold documents, sizes)."""
    from lir_robust.encoders.cache import EmbeddingCache
    from lir_robust.encoders.flat_corpus import FlatCorpus

    generator = torch.Generator().manual_seed(seed * 1_000_003 + size)
    lengths = torch.randint(PATCHES[0], PATCHES[1] + 1, (size,), generator=generator)
    starts = torch.zeros(size + 1, dtype=torch.long)
    starts[1:] = lengths.cumsum(0)
    vectors = torch.empty(int(starts[-1]), DIM)
    for start in range(0, vectors.shape[0], 1 << 20):  # in blocks: no second copy of the corpus
        block = vectors[start : start + (1 << 20)]
        block.normal_(generator=generator)
        block.div_(block.norm(dim=1, keepdim=True))
    query_vectors = torch.nn.functional.normalize(torch.randn(queries * QUERY_TOKENS, DIM, generator=generator), dim=-1)
    query_starts = torch.arange(0, queries * QUERY_TOKENS + 1, QUERY_TOKENS)
    gold = []
    for _ in range(queries):
        count = int(torch.randint(GOLD[0], GOLD[1] + 1, (1,), generator=generator))
        gold.append(sorted(torch.randperm(size, generator=generator)[:count].tolist()))
    cache = EmbeddingCache(cache_dir)
    identity = {"synthetic": "bench_scale", "size": size, "queries": queries, "seed": seed, "dim": DIM}
    documents_key = EmbeddingCache.key(identity, "synthetic", "documents")
    queries_key = EmbeddingCache.key(identity, "synthetic", "queries")
    cache.save(documents_key, FlatCorpus(vectors, starts), meta={"synthetic": identity})
    del vectors
    cache.save(queries_key, FlatCorpus(query_vectors, query_starts), meta={"synthetic": identity})
    return {"cache": str(cache_dir), "documents_key": documents_key, "queries_key": queries_key, "gold": gold,
            "size": size, "patches": int(starts[-1]),
            "embeddings_bytes": (Path(cache.path(documents_key)) / "vectors.npy").stat().st_size}


# ------------------------------------------------------------------------------------------------------------------
# One measurement (a fresh process; under torchrun for several processes)
# ------------------------------------------------------------------------------------------------------------------


def _status_bytes(field: str) -> int | None:
    """A ``/proc/self/status`` field (``VmHWM``, ``RssAnon``, ...) in bytes; None where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class AnonymousPeak:
    """Samples the resident anonymous memory (RssAnon: not the memory-mapped files) every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status_bytes("RssAnon") or 0)
            self._stop.wait(self.interval)

    def __enter__(self) -> "AnonymousPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_bytes("RssAnon") or 0)


def worker(folder: Path) -> None:
    """Sweep the corpus of ``folder/plan.json`` memory-mapped, as the command does; write ``folder/rank<r>.json``."""
    import faiss

    from lir_robust.encoders.base import barrier, init_distributed
    from lir_robust.encoders.cache import EmbeddingCache
    from lir_robust.attacks.kinds import InjectionSettings
    from lir_robust.sweep.pipeline import SweepConfig, ranked_segments, segment_count, sweep_metrics

    plan = json.loads((folder / "plan.json").read_text())
    rank, size = init_distributed()
    threads = plan["threads"] or max(1, (os.cpu_count() or 1) // size)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    cache = EmbeddingCache(plan["cache"])
    corpus = cache.load(plan["documents_key"])
    query_corpus = cache.load(plan["queries_key"])
    if corpus is None or query_corpus is None:
        raise RuntimeError(f"the synthetic corpus under {plan['cache']} could not be read")
    queries = [query_corpus.document(index) for index in range(len(query_corpus))]
    gold = plan["gold"]
    config = SweepConfig()  # the default grid and segments
    settings = InjectionSettings(seed=config.seed, spike_tokens=config.spike_tokens, targets=dict(config.targets),
                                 pool_blocks=config.pool_blocks)
    ks = sorted(set(config.ks) | {0})
    query_ids = [f"q{index}" for index in range(len(queries))]
    document_ids = [f"d{index}" for index in range(len(corpus))]
    qrels = {qid: {document_ids[document]: 1 for document in gold[row]} for row, qid in enumerate(query_ids)}
    rss_before = _status_bytes("VmRSS")
    barrier()
    with AnonymousPeak() as anonymous:
        started = time.perf_counter()
        ranked = ranked_segments(queries, corpus, gold, config.heads, config, settings, folder / "partial", show_progress=False)
        if ranked is not None:
            sweep_metrics(ranked, qrels, query_ids, document_ids, config.heads, config.kinds, ks, settings)
        seconds = time.perf_counter() - started
    report = {
        "rank": rank, "processes": size, "threads": threads, "seconds": seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,  # KiB on Linux
        "vm_hwm_bytes": _status_bytes("VmHWM"), "rss_before_sweep_bytes": rss_before,
        "peak_anonymous_bytes_sampled": anonymous.peak, "rss_file_at_end_bytes": _status_bytes("RssFile"),
        "segments": segment_count(config, len(corpus)),
    }
    write_json_atomic(folder / f"rank{rank}.json", report)
    barrier()
    if size > 1:
        torch.distributed.destroy_process_group()


def measure(plan: dict[str, Any], processes: int, threads: int | None, folder: Path) -> list[dict[str, Any]]:
    """One fresh run (N processes) of the worker on a corpus; the reports of every rank."""
    folder.mkdir(parents=True)
    write_json_atomic(folder / "plan.json", {**plan, "threads": threads})
    script = ["-m", "lir_robust.commands.bench_scale", "--worker", str(folder)]  # python -m / torchrun -m
    if processes == 1:
        command = [sys.executable, *script]
    else:
        command = [_torchrun(), "--nproc_per_node", str(processes), "--master_port", str(_free_port()), *script]
    # the worker imports this very lir_robust (a checkout or the installed package), wherever it is started from
    package_root = str(Path(lir_robust.__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads or max(1, (os.cpu_count() or 1) // processes)),
                   "PYTHONPATH": python_path}
    subprocess.run(command, check=True, env=environment)
    return [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(processes)]


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------------------------


def _gb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**30:.2f}"


def exponent(n1: float, n2: float, v1: float, v2: float) -> float:
    """Growth exponent ``log(v2 / v1) / log(n2 / n1)`` (1 = linear)."""
    return math.log(v2 / v1) / math.log(n2 / n1) if v1 > 0 and v2 > 0 and n2 != n1 else math.nan


def summarise(rows: list[dict[str, Any]], processes: int) -> dict[str, Any]:
    """Exponents between consecutive sizes and the target checks, for the runs with ``processes`` processes."""
    runs = sorted((row for row in rows if row["processes"] == processes), key=lambda row: row["documents"])
    steps = []
    for a, b in zip(runs, runs[1:]):
        steps.append({
            "from": a["documents"], "to": b["documents"],
            "time_exponent": exponent(a["documents"], b["documents"], a["seconds"], b["seconds"]),
            "rss_minus_embeddings_exponent": exponent(a["documents"], b["documents"], a["rss_minus_embeddings_bytes"],
                                                      b["rss_minus_embeddings_bytes"]),
        })
    summary: dict[str, Any] = {"processes": processes, "steps": steps}
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        summary["time_exponent_overall"] = exponent(first["documents"], last["documents"], first["seconds"], last["seconds"])
        summary["rss_minus_embeddings_ratio"] = last["rss_minus_embeddings_bytes"] / first["rss_minus_embeddings_bytes"]
        summary["time_target_met"] = all(step["time_exponent"] <= TIME_EXPONENT_TARGET for step in steps)
        summary["memory_target_met"] = summary["rss_minus_embeddings_ratio"] <= MEMORY_RATIO_TARGET
    return summary


def table(rows: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> str:
    lines = [
        "| documents | processes | sweep time (s) | peak RSS (GB) | memory-mapped embeddings (GB) | peak RSS - embeddings (GB) "
        "| peak anonymous RSS, sampled (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        peaks = " / ".join(_gb(rank["peak_rss_bytes"]) for rank in row["ranks"])
        anonymous = " / ".join(_gb(rank["peak_anonymous_bytes_sampled"]) for rank in row["ranks"])
        lines.append(f"| {row['documents']:,} | {row['processes']} | {row['seconds']:.1f} | {peaks} | {_gb(row['embeddings_bytes'])} "
                     f"| {_gb(row['rss_minus_embeddings_bytes'])} | {anonymous} |")
    lines += ["", f"Targets: time exponent <= {TIME_EXPONENT_TARGET} between sizes; peak RSS - memory-mapped embeddings "
              f"within {MEMORY_RATIO_TARGET}x from the smallest size to the largest (the largest process when N > 1).", ""]
    for summary in summaries:
        for step in summary["steps"]:
            lines.append(f"{summary['processes']} process(es), {step['from']:,} -> {step['to']:,} documents: time exponent "
                         f"{step['time_exponent']:.2f}, peak RSS - embeddings exponent {step['rss_minus_embeddings_exponent']:.2f}")
        if "time_exponent_overall" in summary:
            lines.append(
                f"{summary['processes']} process(es), overall: time exponent {summary['time_exponent_overall']:.2f} "
                f"({'met' if summary['time_target_met'] else 'NOT met'}), peak RSS - embeddings x"
                f"{summary['rss_minus_embeddings_ratio']:.2f} ({'met' if summary['memory_target_met'] else 'NOT met'})"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
        worker(Path(args.worker))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    log = logging.getLogger("bench_scale")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="lir-robust-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    try:
        for size in args.sizes:
            tick = time.perf_counter()
            plan = make_corpus(size, args.queries, args.seed, work / f"cache-{size}")
            log.info("%d documents (%d patches, %.2f GB memory-mapped) made in %.0f s", size, plan["patches"],
                     plan["embeddings_bytes"] / 2**30, time.perf_counter() - tick)
            for processes in args.processes:
                ranks = measure(plan, processes, args.threads, Path(tempfile.mkdtemp(prefix=f"run-{size}-{processes}-", dir=work)) / "run")
                largest = max(rank["peak_rss_bytes"] for rank in ranks)
                rows.append({"documents": size, "patches": plan["patches"], "processes": processes,
                             "seconds": ranks[0]["seconds"], "embeddings_bytes": plan["embeddings_bytes"],
                             "rss_minus_embeddings_bytes": largest - plan["embeddings_bytes"], "ranks": ranks})
                log.info("%d documents, %d process(es): %.1f s, peak RSS %s GB", size, processes, ranks[0]["seconds"],
                         " / ".join(_gb(rank["peak_rss_bytes"]) for rank in ranks))
                write_report(args, rows, complete=False)  # a long run keeps what it has measured
            shutil.rmtree(work / f"cache-{size}", ignore_errors=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    summaries = write_report(args, rows, complete=True)
    print(table(rows, summaries))
    log.info("wrote %s", Path(args.out) / "bench.json")


def write_report(args: argparse.Namespace, rows: list[dict[str, Any]], complete: bool) -> list[dict[str, Any]]:
    """Write ``bench.json`` for the runs measured so far (``complete`` false while sizes remain); the summaries."""
    summaries = [summarise(rows, processes) for processes in args.processes]
    report = {
        "complete": complete, "sizes": args.sizes, "queries": args.queries, "query_tokens": QUERY_TOKENS, "dim": DIM, "patches_per_document": PATCHES,
        "gold_per_query": GOLD, "heads": list(DEFAULT_HEADS), "kinds": list(DEFAULT_KINDS), "ks": list(DEFAULT_KS),
        "threads": args.threads, "cpu_count": os.cpu_count(), "runs": rows, "summaries": summaries,
        "targets": {"time_exponent": TIME_EXPONENT_TARGET, "rss_minus_embeddings_ratio": MEMORY_RATIO_TARGET},
        "versions": library_versions(),
    }
    write_json_atomic(Path(args.out) / "bench.json", report)
    return summaries


if __name__ == "__main__":  # the worker of measure(): python -m lir_robust.commands.bench_scale --worker FOLDER
    raise SystemExit(cli.run_command(main))
