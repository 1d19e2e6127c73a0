"""Benchmark: scoring speed and peak memory of the pooling heads against colpali-engine and the matmul floor.

Every method scores the same seeded random embeddings (default: 64 queries x 20 tokens against 2,000 documents x
1,030 patches, 128-d, as ColPali produces). Each measurement runs in a fresh subprocess, so the peak memory it reports
is that method's own (the growth of ru_maxrss over the embeddings already in memory; torch.cuda max memory on a GPU).
The methods take turns, one run each per round (``--rounds``, after an untimed warm-up on two documents), and each
reports its best run: a shared machine that slows down for a minute then slows every method, not the one that
happened to be running (topk's best of three runs in a row took 13.9 s, its best of two 10.8 s minutes later).

    python eval/bench_scoring.py                       # the full size (about a minute per method on 2 CPU cores)
    python eval/bench_scoring.py --documents 200       # smaller
    make bench-scoring

Not a test: it prints a table (and --json writes one).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import sys
import time

import torch

from lir_robust.commands import cli

METHODS = ["colpali-engine", "floor", "maxsim", "topk:k=4", "softmax:tau=0.1", "lse:tau=0.1", "exclusive:capacity=1,candidates=8",
           "blend:tau=1.0,weight=0.5,capacity=1,candidates=8"]
# each at most 1.5x maxsim (the head the fine-tuned default scores with, blend, and its capacity-limited half, exclusive, too: issue 20)
TARGET_HEADS = ("topk:k=4", "softmax:tau=0.1", "lse:tau=0.1", "exclusive:capacity=1,candidates=8",
                "blend:tau=1.0,weight=0.5,capacity=1,candidates=8")


def device_option(text: str) -> str:
    """``--device`` (argparse type): cpu, or cuda / cuda:N when torch sees that GPU."""
    device = str(text).strip().lower()
    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        index = int(device[5:]) if ":" in device else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: torch sees no such GPU ({torch.cuda.device_count()} visible); use --device cpu")
        return device
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")


def method_option(text: str) -> str:
    """``--methods`` item (argparse type): colpali-engine, floor, or a pooling head spec (canonical spelling)."""
    return text if text in ("colpali-engine", "floor") else cli.head_spec(text)


def build_parser() -> cli.ArgumentParser:
    """The options; each ``type=`` checks its value (cross-checks in parse_args)."""
    parser = cli.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=cli.positive_int, default=64)
    parser.add_argument("--query-tokens", type=cli.positive_int, default=20)
    parser.add_argument("--documents", type=cli.positive_int, default=2000)
    parser.add_argument("--patches", type=cli.positive_int, default=1030)
    parser.add_argument("--dim", type=cli.positive_int, default=128)
    parser.add_argument("--batch-size", type=cli.positive_int, default=128, help="colpali-engine's batch_size and ours")
    parser.add_argument("--rounds", type=cli.positive_int, default=3,
                        help="rounds in which every method runs once, in turn; each method's best run is reported, as "
                             "timeit does (one run swings with the machine)")
    parser.add_argument("--repeats", type=cli.positive_int, default=1, help="timed runs per method in each round")
    parser.add_argument("--device", type=device_option, default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", nargs="+", type=method_option, default=METHODS, help=f"any of {METHODS} or other head specs")
    parser.add_argument("--threads", type=cli.positive_int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=cli.output_file, default=None, help="also write the results here")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.methods = list(dict.fromkeys(args.methods))
    if "colpali-engine" in args.methods:  # a missing or unsupported colpali-engine: one line, before any work
        from lir_robust.patches.colpali import check_colpali_version

        check_colpali_version()
    return args


def make_embeddings(args: argparse.Namespace) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Seeded L2-normalised queries ``[Tq, D]`` x Nq and documents ``[Td, D]`` x Nd (lists, as colpali-engine gives)."""
    generator = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(args.queries, args.query_tokens, args.dim, generator=generator), dim=-1)
    documents = torch.empty(args.documents, args.patches, args.dim)
    for start in range(0, args.documents, 256):
        block = torch.randn(min(256, args.documents - start), args.patches, args.dim, generator=generator)
        documents[start : start + block.shape[0]] = torch.nn.functional.normalize(block, dim=-1)
    return list(queries.unbind(0)), list(documents.unbind(0))


def floor(queries: list[torch.Tensor], documents: list[torch.Tensor], batch_size: int, device: str) -> torch.Tensor:
    """The bare matrix products of the same shapes, in the same document chunks: ``[Nq*Tq, D] x [D, chunk*Td]``."""
    flat_queries = torch.stack(queries).to(device).flatten(0, 1)
    checksum = torch.zeros((), device=device)
    for start in range(0, len(documents), batch_size):
        chunk = torch.stack(documents[start : start + batch_size]).to(device).flatten(0, 1)
        checksum += (flat_queries @ chunk.T)[0, 0]
    return checksum


def make_call(method: str, queries: list[torch.Tensor], documents: list[torch.Tensor], args: argparse.Namespace):
    """A function of no arguments that scores ``queries`` against ``documents`` with ``method``."""
    if method == "colpali-engine":
        import os

        os.environ.setdefault("COLPALI_SCORES_BACKEND", "torch")
        from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

        return lambda: BaseVisualRetrieverProcessor.score_multi_vector(
            queries, documents, batch_size=args.batch_size, device=args.device
        )
    if method == "floor":
        return lambda: floor(queries, documents, args.batch_size, args.device)
    from lir_robust.scoring.scorer import score

    return lambda: score(
        queries, documents, method, query_batch_size=args.batch_size, document_batch_size=args.batch_size,
        device=args.device,
    )


def run_one(method: str, args: argparse.Namespace, connection) -> None:
    """Child process: build the embeddings, time ``method``, send back seconds, peak memory and a checksum."""
    if args.threads:
        torch.set_num_threads(args.threads)
    queries, documents = make_embeddings(args)
    make_call(method, queries[:2], documents[:2], args)()  # warm-up: imports, compiled code (exclusive), thread pools
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    call = make_call(method, queries, documents, args)
    best = float("inf")
    result = None
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = call()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    if args.device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    checksum = float(result.double().sum()) if result.dim() else float(result)
    connection.send({"method": method, "seconds": best, "peak_mb": peak_mb, "checksum": checksum})
    connection.close()


def measure(method: str, args: argparse.Namespace) -> dict:
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=run_one, args=(method, args, sender))
    process.start()
    sender.close()
    outcome = receiver.recv() if receiver.poll(timeout=24 * 3600) else None
    process.join()
    if outcome is None or process.exitcode != 0:
        raise RuntimeError(f"benchmark of {method!r} failed (exit code {process.exitcode})")
    return outcome


def main(argv=None) -> int:
    args = parse_args(argv)
    shape = (
        f"{args.queries} queries x {args.query_tokens} tokens vs {args.documents} documents x {args.patches} patches, "
        f"{args.dim}-d, batch {args.batch_size}, {args.device}, torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads"
    )
    sys.stdout.write(f"bench_scoring: {shape}, {args.rounds} round(s) of {args.repeats} run(s) per method\n")
    outcomes: dict[str, list[dict]] = {method: [] for method in args.methods}
    for round_number in range(1, args.rounds + 1):
        for method in args.methods:
            outcomes[method].append(measure(method, args))
            sys.stdout.write(f"  round {round_number}  {method:<18} {outcomes[method][-1]['seconds']:8.2f} s\n")
            sys.stdout.flush()
    results = {  # each method's best run, with the highest peak memory of all its runs
        method: {**min(runs, key=lambda run: run["seconds"]), "peak_mb": max(run["peak_mb"] for run in runs),
                 "runs": [run["seconds"] for run in runs]}
        for method, runs in outcomes.items()
    }
    reference = results.get("colpali-engine", {}).get("seconds")
    floor_seconds = results.get("floor", {}).get("seconds")
    maxsim = results.get("maxsim", {}).get("seconds")
    ratio = lambda value, base: f"{value / base:6.2f}x" if base else "     -"  # noqa: E731
    lines = [f"{'method':<18} {'seconds':>8} {'vs colpali':>11} {'vs floor':>9} {'vs maxsim':>10} {'peak MB':>9}"]
    for method, outcome in results.items():
        seconds = outcome["seconds"]
        lines.append(
            f"{method:<18} {seconds:8.2f} {ratio(seconds, reference):>11} {ratio(seconds, floor_seconds):>9} "
            f"{ratio(seconds, maxsim):>10} {outcome['peak_mb']:9.0f}"
        )
    sys.stdout.write("\n".join(lines) + "\n")
    checks = []
    if reference and maxsim:
        checks.append(f"maxsim / colpali-engine = {maxsim / reference:.2f} (target <= 1.0)")
    if floor_seconds and maxsim:
        checks.append(f"maxsim / floor = {maxsim / floor_seconds:.2f} (target <= 2.0)")
    if maxsim:
        checks += [f"{head} / maxsim = {results[head]['seconds'] / maxsim:.2f} (target <= 1.5)"
                   for head in TARGET_HEADS if head in results]
    if checks:
        sys.stdout.write("targets: " + "; ".join(checks) + "\n")
    if maxsim:
        for head in results:  # other heads: the ratio, for the record
            if head not in ("colpali-engine", "floor", "maxsim", *TARGET_HEADS):
                sys.stdout.write(f"{head} / maxsim = {results[head]['seconds'] / maxsim:.2f} (no target)\n")
    if "colpali-engine" in results and "maxsim" in results:
        difference = abs(results["colpali-engine"]["checksum"] - results["maxsim"]["checksum"])
        sys.stdout.write(f"checksum |colpali-engine - maxsim| = {difference:.3g}\n")
    if args.json:
        from lir_robust.core.files import write_json_atomic

        write_json_atomic(args.json, {"shape": shape, "results": results}, indent=2)
    return 0

