"""Publish a fine-tuned checkpoint to the Hugging Face Hub: the ``publish`` command (the logic is lir_robust.hub).

    python train/publish.py --checkpoint runs/finetune-topk --repo user/name --license apache-2.0 \
        --project-url https://github.com/OWNER/lir-robust
    python train/publish.py --checkpoint runs/finetune-topk --repo user/name --license apache-2.0 --dry-run out/topk
    make publish CHECKPOINT=runs/finetune-topk REPO=user/name PUBLISH_ARGS="--license apache-2.0 --private"

colpali-engine checkpoints are pushed adapter-only, text checkpoints as a whole PyLate model; both with pooling.json
(the head) and a generated model card carrying the sweep results found beside the checkpoint (or --results) and,
with --study, the retraining study's rows for the checkpoint's head (in the text: the model-index holds only the
checkpoint's own sweep); and the checkpoint's `lir-robust mteb` results (<run>/mteb, or --mteb FOLDER): mteb's
result files under mteb/ and a labelled table in the card's text; and its `lir-robust attack` runs (<run>/attack, or
--attacks FOLDER): compact copies under attacks/ and text-attack rows beside the sweep's. Options are checked first, then the Hub (offline flag, token, reachable), and only then is
the folder built. The token comes from `hf auth login` or HF_TOKEN (never from the command line). --dry-run OUT writes exactly the folder that would be uploaded, validated,
without touching the network.
"""

from __future__ import annotations

import logging

from lir_robust.commands import cli

__all__ = ["build_parser", "parse_args", "main"]


def build_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=cli.existing_folder,
                        help="a train/finetune.py output folder (holding model/) or the model folder itself")
    parser.add_argument("--repo", required=True, help="the model repo on the Hub, OWNER/NAME")
    parser.add_argument("--license", required=True,
                        help="licence of the published weights as the Hub names it (usually the base model's), e.g. "
                             "apache-2.0, mit, cc-by-4.0 (https://huggingface.co/docs/hub/repositories-licenses)")
    parser.add_argument("--project-url", default=None,
                        help="lir-robust's public repository, linked from the card with its install line (default: the "
                             "installed package's [project.urls])")
    parser.add_argument("--language", nargs="+", default=None, metavar="CODE",
                        help="the card's language codes (default: the sweep's language, else en)")
    parser.add_argument("--base-model", default=None,
                        help="Hub id of the base model when the checkpoint was trained on a local folder")
    parser.add_argument("--results", default="auto",
                        help="a length-sweep results.json measured on this checkpoint; 'auto': the one beside it; 'none': no results")
    parser.add_argument("--mteb", default="auto", metavar="FOLDER",
                        help="the --out folder of `lir-robust mteb` measured on this checkpoint: mteb's result files go "
                             "under mteb/ and a labelled table into the card's text (never model-index entries); "
                             "'auto': <run>/mteb when there; 'none': no mteb results")
    parser.add_argument("--attacks", default="auto", metavar="FOLDER",
                        help="a folder of `lir-robust attack --out` folders measured on this checkpoint: compact copies "
                             "go under attacks/ and rows (success@10 at N = 10, retained nDCG@10 at L = 16) into the "
                             "card's robustness section (never model-index entries); 'auto': <run>/attack when there "
                             "(make attack-one OUT=<run>); 'none': no text-attack results")
    parser.add_argument("--study", default=None,
                        help="the retraining study's summary.json (make study): its rows for the checkpoint's head (and "
                             "defence) become a card section labelled as the study's own models (never model-index "
                             "entries); a plain {title, rows} table is shown as it is")
    parser.add_argument("--dry-run", default=None, metavar="OUT", type=cli.output_folder,
                        help="write the folder that would be uploaded into OUT (new or empty) and stop; no network")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (created when missing; default main)")
    parser.add_argument("--commit-message", default=None)
    parser.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to the branch")
    parser.add_argument("--timeout", type=cli.positive_float, default=10.0,
                        help="seconds to wait for the Hub to answer before giving up")
    return parser


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from lir_robust import hub

    results = None if str(args.results).lower() == "none" else args.results
    mteb = None if str(args.mteb).lower() == "none" else args.mteb
    attacks = None if str(args.attacks).lower() == "none" else args.attacks
    where = hub.publish(
        args.checkpoint, args.repo, license=args.license, dry_run=args.dry_run, base_model=args.base_model,
        results=results, study=args.study, project_url=args.project_url, language=args.language, mteb=mteb, attacks=attacks, private=args.private,
        revision=args.revision, commit_message=args.commit_message, create_pr=args.create_pr, timeout=args.timeout,
    )
    print(f"{'wrote' if args.dry_run else 'published'}: {where}")
    return 0
