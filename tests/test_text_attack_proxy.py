"""The proxy beside docs/RESULTS.md's text attacks (issue 19.1d): where each proxy value comes from, and the rank
correlation over variants between each proxy and text-attack success@10, computed from the runs the doc shows."""

from __future__ import annotations

import pytest

from lir_robust.studies.attack_summary import spearman
from lir_robust.studies.text_attack_doc import text_attack_section
from lir_robust.studies.text_attack_proxy import correlation_points, proxy_summary, study_row


def _run(kind: str, heads: dict[str, float], weights: str = "base", iterations: int = 20, n: int = 10) -> dict:
    """A compact text-attack report: ``heads`` maps each head to its success@10."""
    config = {"model": "minilm", "data": "tiny", "attack": kind, "n": n, "length": 32, "heads": list(heads),
              "iterations": iterations, "candidates": 32, "init": "queries", "objective": "mean", "position": "end", "seed": 0}
    return {"compact": True, "config": config, "heads": list(heads), "data": {"name": "tiny"},
            "encoder": {"base_model": "minilm", "weights": weights},
            "split": {"seed": 0, "training_queries": 4, "held_out_queries": 4, "cluster_sizes": [2, 2]},
            "results": {head: {"metrics": {"success@1": 0.0, "success@10": value, "success@100": 1.0, "ndcg@10_clean": 0.5,
                                           "ndcg@10_retained": 0.9}} for head, value in heads.items()}}


def _row(protocol: str, variant: str, head: str, spike: float, hard: float) -> dict:
    return {"collection": "tiny", "protocol": protocol, "variant": variant, "head": head, "seeds": [0],
            "retained": {"spike": {"4": {"mean": spike}}, "hard": {"4": {"mean": hard}}}}


# untrained heads a, b, c and retrained maxsim: spike proxy 0.1 / 0.4 / 0.3 / 0.2, hard 0.9 / 0.6 / 0.7 / 0.8
STUDY = {"rows": [_row("raw", "raw", "maxsim", 0.1, 0.9), _row("raw", "raw", "softmax:tau=1.0", 0.4, 0.6),
                  _row("raw", "raw", "exclusive:capacity=1,candidates=8", 0.3, 0.7),
                  _row("retrained", "maxsim", "maxsim", 0.2, 0.8)]}
SUCCESS = {"maxsim": 0.5, "softmax:tau=1.0": 0.25, "exclusive:capacity=1,candidates=8": 0.5}
RUNS = [("tiny/raw/hotflip-n10", _run("hotflip", SUCCESS)),
        ("tiny/maxsim/hotflip-n10", _run("hotflip", {"maxsim": 0.125}, weights="abc")),
        ("tiny/raw/hotflip-it5-n10", _run("hotflip", {"maxsim": 0.0}, iterations=5)),   # other settings: not a point
        ("tiny/raw/hotflip-n1", _run("hotflip", {"maxsim": 0.0}, n=1)),                  # N = 1: not a point
        ("tiny/raw/cluster-text-n10", _run("cluster-text", {"maxsim": 0.75, "softmax:tau=1.0": 0.0}))]


@pytest.mark.parametrize("xs, ys", [([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]), ([0.1, 0.4, 0.3, 0.2], [0.5, 0.25, 0.5, 0.125]),
                                    ([3, 1, 2, 2, 5, 4], [1, 1, 2, 3, 9, 0]), ([1, 2, 3], [3, 1, 2])])
def test_spearman_is_scipys_with_ties(xs, ys):
    stats = pytest.importorskip("scipy.stats")
    assert spearman(xs, ys) == pytest.approx(stats.spearmanr(xs, ys).statistic, abs=1e-12)


def test_spearman_by_hand_and_too_few():
    assert spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)   # 1 - 6 * (4 + 1 + 1) / (3 * 8)
    assert spearman([1, 2], [2, 1]) is None and spearman([1, 2, 3], [1, 1, 1]) is None


def test_the_points_are_the_standard_n10_runs_with_their_models_proxy():
    points = correlation_points(RUNS, STUDY, "hotflip")["tiny"]
    assert [(p["model"], p["head"], p["success@10"], p["spike_k4_retained"]) for p in points] == [
        ("untrained", "exclusive:capacity=1,candidates=8", 0.5, 0.3), ("untrained", "maxsim", 0.5, 0.1),
        ("untrained", "softmax:tau=1.0", 0.25, 0.4), ("retrained", "maxsim", 0.125, 0.2)]


def test_the_doc_carries_the_correlation_computed_from_the_runs():
    text = "\n".join(text_attack_section(RUNS, STUDY))
    # HotFlip, spike: proxy (0.3, 0.1, 0.4, 0.2) against success (0.5, 0.5, 0.25, 0.125)
    spike = spearman([0.3, 0.1, 0.4, 0.2], [0.5, 0.5, 0.25, 0.125])
    hard = spearman([0.7, 0.9, 0.6, 0.8], [0.5, 0.5, 0.25, 0.125])
    # by hand: ranks (3, 1, 4, 2) vs (3.5, 3.5, 2, 1), both means 2.5: sum dx dy = -1, sum dx^2 = 5, sum dy^2 = 4.5
    assert spike == pytest.approx(-1 / (5 * 4.5) ** 0.5) and hard == pytest.approx(1 / (5 * 4.5) ** 0.5)
    hotflip = "| tiny | HotFlip N = 10, L = 32, 20 iterations, init queries, 32 candidates | success@10 |"
    assert f"{hotflip} spike K=4 kept | 4 | {spike:+.2f} | untrained: exclusive:capacity=1,candidates=8; maxsim; softmax:tau=1.0 / retrained: maxsim |" in text
    assert f"{hotflip} hard K=4 kept | 4 | {hard:+.2f} |" in text
    assert "| tiny | cluster-text N = 10 | success@10 | spike K=4 kept | 2 | too few | untrained: maxsim; softmax:tau=1.0 |" in text
    # success@100 is 1.0 everywhere: a constant column has no rank correlation
    assert "| tiny | HotFlip N = 10, L = 32, 20 iterations, init queries, 32 candidates | success@100 | spike K=4 kept | 4 | undefined (a constant column) |" in text
    assert "| retrained | maxsim | 20.0 % | 80.0 % | 12.5 % | 100.0 % | n/a | n/a |" in text   # the points table


def test_proxy_rows_come_from_the_study_then_the_recipe_search_and_the_coherence_files():
    search = {"rows": [_row("retrained", "blend-tau1.0-weight0.5-capacity1-candidates8",
                            "blend:tau=1.0,weight=0.5,capacity=1,candidates=8", 0.5, 0.5),
                       _row("raw", "raw", "maxsim", 0.99, 0.99)],   # the study's row comes first and wins
              "raw_screen": [{"head": "blend:tau=1.0,weight=0.5,capacity=1,candidates=8", "retained_spike_k4": 0.4,
                              "retained_hard_k4": 0.8}]}
    head = "coherent:inner=exclusive:capacity=1+candidates=8,beta=0.5,typicality=loo,m=4"
    seeds = [{"collection": "tiny", "seed": seed, "protocol": "sweep", "trained_with": head, "scored_with": head,
              "retained_spike_k4": spike, "retained_hard_k4": 0.9} for seed, spike in ((0, 0.5), (1, 0.7))]
    seeds.append({**seeds[0], "scored_with": "maxsim", "retained_spike_k4": 0.01})   # not its own head: left out
    screen = {"rows": [{"data": "tiny", "queries": 30, "head": head, "retained_spike_k4": 0.8, "retained_hard_k4": 0.95},
                       {"data": "tiny", "queries": 5, "head": "maxsim", "retained_spike_k4": 0.0, "retained_hard_k4": 0.0}]}
    rows = proxy_summary(STUDY, search, {"coherence_retrained": {"per_seed": seeds}, "coherence_screen": screen})
    runs = [("tiny/raw/hotflip", _run("hotflip", {"maxsim": 0.1, head: 0.2})),
            ("tiny/coherent-innerexclusive-capacity1+candidates8-beta0.5-typicalityloo-m4/hotflip", _run("hotflip", {head: 0.3}, "w")),
            ("tiny/blend-tau1.0-weight0.5-capacity1-candidates8/hotflip",
             _run("hotflip", {"blend:tau=1.0,weight=0.5,capacity=1,candidates=8": 0.4}, "w2"))]
    got = {(p["model"], p["head"]): (p["spike_k4_retained"], p["hard_k4_retained"])
           for p in correlation_points(runs, rows, "hotflip")["tiny"]}
    assert got == {("untrained", "maxsim"): (0.1, 0.9), ("untrained", head): (0.8, 0.95),
                   ("retrained", head): (pytest.approx(0.6), 0.9),
                   ("retrained", "blend:tau=1.0,weight=0.5,capacity=1,candidates=8"): (0.5, 0.5)}
    assert any(row["collection"] == "cranfield" and row["head"].startswith("blend") for row in rows["rows"])  # the screen
    assert not [row for row in rows["rows"] if row["retained"]["spike"]["4"]["mean"] == 0.01]  # coherent scored with maxsim


def test_which_model_a_run_attacked():
    assert study_row("tiny/maxsim/hotflip", _run("hotflip", {"maxsim": 0.1}, "w")) == ("retrained", "maxsim")
    assert study_row("tiny/raw/hotflip", _run("hotflip", {"maxsim": 0.1}, "w")) == ("raw", "raw")
    assert study_row("hotflip", _run("hotflip", {"maxsim": 0.1})) == ("raw", "raw")
    assert study_row("hotflip", _run("hotflip", {"maxsim": 0.1}, "w")) is None


def test_the_findings_name_the_rows_where_the_proxy_ranks_the_variants_as_the_attack_does_or_the_opposite():
    # spike (0.1, 0.4, 0.3) against success@10 (0.5, 0.1, 0.2): rho -1; hard (0.9, 0.6, 0.7): rho +1
    runs = [("tiny/raw/hotflip", _run("hotflip", {"maxsim": 0.5, "softmax:tau=1.0": 0.1,
                                                   "exclusive:capacity=1,candidates=8": 0.2}))]
    text = "\n".join(text_attack_section(runs, STUDY))
    assert ("- The proxy ranks the variants as the text attack does (rho <= -0.5): "
            "tiny hotflip success@10 / spike K=4 kept (-1.00).") in text
    assert "(rho >= +0.5: the variants the proxy calls robust are the easier to attack): tiny hotflip success@10 / hard K=4 kept (+1.00)." in text
    assert "(rho <= -0.5): no row." in "\n".join(text_attack_section(RUNS, STUDY))


def _edit_run(kind: str, hijack: dict[str, float], length: int, weights: str = "base", position: str = "end") -> dict:
    """A compact edit-attack report (insertion / stuffing): ``hijack`` maps each head to its hijack@10."""
    report = _run(kind, dict.fromkeys(hijack, 0.0), weights=weights)
    report["config"].update(length=length, position=position)
    report["results"] = {head: {"metrics": {"hijack@10": value, "ndcg@10_retained": 1.0 - value}} for head, value in hijack.items()}
    return report


def test_the_edit_attacks_join_the_correlation_at_the_model_cards_settings():
    """Insertion (an optimised snippet of L = 16 appended) and keyword stuffing (T = 32): their hijack@10 against each
    proxy, over the same variants; other lengths or positions are not points."""
    hijack = {"maxsim": 0.6, "softmax:tau=1.0": 0.1, "exclusive:capacity=1,candidates=8": 0.3}
    runs = [("tiny/raw/insertion-l16-end", _edit_run("insertion", hijack, 16)),
            ("tiny/raw/insertion-l4-end", _edit_run("insertion", {"maxsim": 0.0}, 4)),                  # other length
            ("tiny/raw/insertion-l16-sentence", _edit_run("insertion", {"maxsim": 0.0}, 16, position="sentence")),
            ("tiny/maxsim/insertion-l16-end", _edit_run("insertion", {"maxsim": 0.4}, 16, weights="abc")),
            ("tiny/raw/stuffing-t32", _edit_run("stuffing", {"maxsim": 0.2, "softmax:tau=1.0": 0.0}, 32)),
            ("tiny/raw/stuffing-t8", _edit_run("stuffing", {"maxsim": 0.9}, 8))]                       # other T
    points = correlation_points(runs, STUDY, "insertion")["tiny"]
    assert [(p["model"], p["head"], p["hijack@10"]) for p in points] == [
        ("untrained", "exclusive:capacity=1,candidates=8", 0.3), ("untrained", "maxsim", 0.6),
        ("untrained", "softmax:tau=1.0", 0.1), ("retrained", "maxsim", 0.4)]
    assert [(p["head"], p["hijack@10"]) for p in correlation_points(runs, STUDY, "stuffing")["tiny"]] == [
        ("maxsim", 0.2), ("softmax:tau=1.0", 0.0)]
    text = "\n".join(text_attack_section(runs, STUDY))
    # spike proxy (0.3, 0.1, 0.4, 0.2) against hijack (0.3, 0.6, 0.1, 0.4): ranks (3, 1, 4, 2) vs (2, 4, 1, 3): rho -1
    assert spearman([0.3, 0.1, 0.4, 0.2], [0.3, 0.6, 0.1, 0.4]) == pytest.approx(-1.0)
    assert ("| tiny | insertion L = 16, appended to 10 documents, 20 iterations | hijack@10 | spike K=4 kept | 4 | -1.00 |"
            in text)
    assert "| tiny | keyword stuffing T = 32, 10 documents | hijack@10 | spike K=4 kept | 2 | too few |" in text
    assert "tiny insertion hijack@10 / spike K=4 kept (-1.00)" in text
    assert "| untrained | maxsim | 10.0 % | 90.0 % | n/a | n/a | n/a | n/a | 60.0 % | 20.0 % |" in text   # the points table
