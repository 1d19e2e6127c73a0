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

from lir_robust.commands import cli
from lir_robust.commands.bench_scale import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
