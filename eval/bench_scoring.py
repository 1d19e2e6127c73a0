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

from lir_robust.commands import cli
from lir_robust.commands.bench_scoring import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
