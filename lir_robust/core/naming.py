"""File and folder names made from a pooling head's text form, written once for every caller.

    head_folder_name("topk:k=4")                           # 'topk-k4'
    head_folder_name("exclusive:capacity=1,candidates=8")  # 'exclusive-capacity1-candidates8'

The spelling is the one existing run folders use: ``runs/finetune-<name>`` (train/finetune.py's default), the
retraining study's variants (``models/<collection>/<name>/seed<k>``, the ``variant`` of summary.json), the
fine-tuning recipe's runs (eval/finetune_all.py) and the synthetic study's ``runs/<name>__seed<k>.json``.
A pure string function: pass the head's canonical text form (``parse_head(head).spec()``).
"""

from __future__ import annotations

__all__ = ["head_folder_name"]


def head_folder_name(spec: str) -> str:
    """A head's text form as a file / folder name: ``:`` and ``,`` become ``-``, ``=`` goes (``topk:k=4`` -> ``topk-k4``)."""
    return spec.replace(":", "-").replace("=", "").replace(",", "-")
