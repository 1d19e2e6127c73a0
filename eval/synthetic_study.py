"""Synthetic study of PAPER.md, reproduced and extended: `python eval/synthetic_study.py --preset full --out DIR`.

Trains the concept-environment encoder with every pooling head on several seeds, then runs the document-length and
injection sweeps; writes results.json, four PNG figures and table.md under --out. Rerunning resumes: finished
(head, seed) runs in DIR/runs/ are kept. Thin entry: the command is lir_robust.commands.synthetic, the logic lir_robust.studies.concepts and
lir_robust.studies.synthetic.
"""

from lir_robust.commands import cli
from lir_robust.commands.synthetic import main

if __name__ == "__main__":
    raise SystemExit(cli.run_command(main))
