"""The retraining study (thin entry; the logic is lir_robust.studies.retraining): fine-tune one model per head and seed (and per
defended head), sweep each, summarise. Resumable: rerun the same command after a kill.

    python eval/study.py                          # everything: make study
    python eval/study.py --list-parts             # the named parts and what each holds
    python eval/study.py --parts raw:cranfield cranfield:seed0
    python eval/study.py --summarize-only         # rebuild summary.json from the finished sweeps

Then `make results-doc` turns results/study/summary.json (and the synthetic study's results) into docs/RESULTS.md.
"""

from lir_robust.commands import cli
from lir_robust.commands.study import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
