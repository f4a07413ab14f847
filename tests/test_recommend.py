"""Recommendation metrics against hand-computed cases."""
import pytest

from pfo.recommend import div_ratio, hit_rate, normalize_title


def test_bracketed_parts_ignored():
    assert normalize_title("Independence Day (a.k.a. ID4) (1996)") == "independence day"
    assert normalize_title("Toy Story (1995)") == normalize_title("toy story")
    assert normalize_title("Alien [Director's Cut] (1979)") == "alien"
    assert normalize_title("Heat ((1995))") == "heat"


def test_hit_rate_hand_computed():
    """User 1: truth at rank 3 -> hit @5 and @10. User 2: truth at rank 7 -> hit @10 only.
    User 3: no hit. User 4: only 2 generations (fewer than 10), truth at rank 2 -> hit @5, @10.
    HitRate@5 = 2/4, HitRate@10 = 3/4."""
    recs = [
        ["A (2000)", "B", "Fargo (1996)", "C", "D", "E", "F", "G", "H", "I"],
        ["A", "B", "C", "D", "E", "F", "Heat", "G", "H", "I"],
        ["A", "B", "C", "D", "E", "F", "G", "H", "I", "J"],
        ["X", "aladdin"],
    ]
    truths = ["Fargo (1996)", "Heat (1995)", "Casino (1995)", "Aladdin (1992)"]
    assert hit_rate(recs, truths, 5) == pytest.approx(0.5)
    assert hit_rate(recs, truths, 10) == pytest.approx(0.75)


def test_div_ratio_counts_duplicates_across_and_within_users():
    """6 recommendations: "Heat", "Heat (1995)" (same title), "Fargo", "fargo" (same), "Alien", "Heat"
    -> unique {heat, fargo, alien} = 3 of 6 = 0.5."""
    recs = [["Heat", "Heat (1995)", "Fargo"], ["fargo", "Alien", "Heat"]]
    assert div_ratio(recs) == pytest.approx(0.5)
    assert div_ratio([["A", "B"], ["C"]]) == 1.0


def test_errors_are_clear():
    with pytest.raises(ValueError, match="2 recommendation lists for 1 users"):
        hit_rate([["a"], ["b"]], ["a"], 5)
    with pytest.raises(ValueError):
        div_ratio([[]])
