"""Length / injection sweep on a real collection (thin entry; the logic is lir_robust.sweep.pipeline).

    python eval/length_sweep.py                       # MiniLM ColBERT on $LIR_ROBUST_DATA_ROOT/cranfield, default heads
    python eval/length_sweep.py --model path/to/finetuned --kinds hard spike --ks 0 25 100
    torchrun --nproc_per_node 2 eval/length_sweep.py ...   # corpus encoding split over processes
"""

from lir_robust.commands import cli
from lir_robust.commands.sweep import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
