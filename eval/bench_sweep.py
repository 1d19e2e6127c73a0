"""Benchmark (not a test): the full length / injection sweep against one plain evaluation, in the same run.

    python eval/bench_sweep.py                    # MiniLM on $LIR_ROBUST_DATA_ROOT/cranfield, default heads / kinds / K
    python eval/bench_sweep.py --max-queries 50   # quicker
    python eval/bench_sweep.py --threads 1        # both sides on one thread

Measured, on the same embeddings and machine:
- encode: queries + corpus, no cache (done once; both costs below include it);
- plain evaluation = encode + score K = 0 with one head (maxsim, lir_robust.scoring.scorer.score) + pytrec_eval metrics;
  also reported: plain evaluation of every head (encode + one score pass per head + metrics);
- full sweep = encode + what `make eval-length-sweep` runs after encoding: the merged-state sweep of every head x kind
  x K over the default segments, keeping each query's top documents (lir_robust.sweep.pipeline.ranked_segments' path:
  InjectionSweep.rank, including the faiss hard-negative search and the pooled gaussian / corpus blocks) + metrics of
  every (head, kind, K) (lir_robust.sweep.pipeline.sweep_metrics).
Ratios: full sweep / plain evaluation (target <= 1.5) and full sweep / plain evaluation of every head.
Writes results/bench-sweep/bench.json.
"""

from lir_robust.commands import cli
from lir_robust.commands.bench_sweep import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
