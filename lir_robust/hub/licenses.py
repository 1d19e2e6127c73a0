"""The licence identifiers the Hugging Face Hub accepts in a model card's ``license:`` field, and the check.

    check_license("apache-2.0")   # -> "apache-2.0"
    check_license("apache 2")     # HubError: ... not a licence identifier the Hub accepts; close: apache-2.0, ...

huggingface_hub ships no such list; this is the Hub's own (the values its card validation names, as documented at
https://huggingface.co/docs/hub/repositories-licenses). A card with another value is refused by the Hub's metadata
check, so the publish command refuses it first. ``other`` (with the terms in the card) and ``unknown`` are valid.
"""

from __future__ import annotations

import difflib

from lir_robust.core.huggingface import HubError

__all__ = ["HUB_LICENSES", "LICENSES_URL", "check_license"]

LICENSES_URL = "https://huggingface.co/docs/hub/repositories-licenses"

HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
    "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0",
    "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "cdla-sharing-1.0",
    "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1",
    "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "h-research",
    "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0", "odc-by", "odbl", "openmdw-1.0",
    "openmdw-1.1", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr",
    "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3", "llama3.1", "llama3.2",
    "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)


def _close_matches(value: str) -> list[str]:
    """Identifiers close to ``value``: the same text lower-cased with spaces / underscores as hyphens, then spelling
    neighbours, then identifiers that start with its first word (``apache 2`` -> apache-2.0)."""
    normalised = "-".join(value.lower().replace("_", " ").split())
    found = difflib.get_close_matches(normalised, HUB_LICENSES, n=3, cutoff=0.6)
    first = normalised.split("-")[0]
    found += [name for name in HUB_LICENSES if first and name.startswith(first) and name not in found]
    return found[:4]


def check_license(value: str | None) -> str:
    """``value`` when it is one of :data:`HUB_LICENSES`, else HubError naming the close matches (one line)."""
    text = "" if value is None else str(value).strip()
    if text in HUB_LICENSES:
        return text
    if not text:
        raise HubError("--license is empty: pass the licence of the published weights as the Hub names it (usually the "
                       f"base model's, e.g. apache-2.0; the list: {LICENSES_URL})")
    close = _close_matches(text)
    hint = f"did you mean {' or '.join(close)}?" if close else "e.g. apache-2.0, mit, cc-by-4.0, or other"
    raise HubError(f"--license {text!r} is not a licence identifier the Hub accepts: {hint} (the list: {LICENSES_URL})")
