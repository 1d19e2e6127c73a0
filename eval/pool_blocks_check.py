"""Check (not a test) that pooled gaussian / corpus patches give the same sweep results as private draws.

    python eval/pool_blocks_check.py                                # = make check-pool-blocks
    python eval/pool_blocks_check.py --pool-blocks none 16 64 --seeds 0 1 2

The sweep draws gaussian and corpus patches from pools of blocks shared between documents (InjectionSettings.
pool_blocks, default 64): each document's patches have exactly the distribution of fresh draws, but two documents
share a block of a budget interval with probability 1 / pool_blocks. This script runs the length-growth part of the
default sweep (MiniLM on $LIR_ROBUST_DATA_ROOT/cranfield, default heads, gaussian and corpus into all documents) with
private draws per document ("none") and with pools, for several seeds, and prints nDCG@10 and its retained share at
every K. The pooled runs should differ from the private ones by no more than private runs of different seeds differ
from each other. Writes results/pool-blocks-check/check.json and table.md.
"""

from lir_robust.commands import cli
from lir_robust.commands.pool_blocks_check import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
