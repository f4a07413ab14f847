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


def test_first_item_of_a_generation():
    from pfo.recommend import first_item

    assert first_item("Fargo (1996), Heat (1995), Alien (1979)") == "Fargo (1996)"
    assert first_item("Heat (1995)\nAlien (1979)") == "Heat (1995)"
    assert first_item("Rainmaker, The") == "Rainmaker, The"           # no bracket: the whole line
    assert first_item('"Heat (1995)" is a good pick') == "Heat (1995)"
    assert first_item("3 Ninjas: High Noon (19") == "3 Ninjas: High Noon"  # cut by the token limit
    assert first_item("   \n") == ""


def test_users_with_fewer_valid_generations():
    """User A: 10 generations, 4 of them empty; each keeps its slot, so the truth ("Heat", 10th
    generation) is a hit @10 only, and "B" (3rd generation) would be within @5. User B: all empty
    -> recommends nothing, a miss. HitRate@5 = 0/2, HitRate@10 = 1/2; DivRatio = 6 unique titles
    of 20 slots = 0.3 (empty slots are not filtered out: they lower diversity)."""
    from pfo.recommend import rec_metrics, recommendation_lists

    gens_a = ["A (1990)", "", "B", "", "C, D", "", "D (2000)", "E", "", "Heat (1995), X"]
    gens_b = [""] * 10
    recs = recommendation_lists([gens_a, gens_b])
    assert recs == [["A (1990)", "", "B", "", "C, D", "", "D (2000)", "E", "", "Heat (1995)"], [""] * 10]
    m = rec_metrics(recs, ["Heat (1995)", "Fargo (1996)"])
    assert m["hit_rate@5"] == 0.0 and m["hit_rate@10"] == pytest.approx(0.5)
    assert m["div_ratio"] == pytest.approx(0.3) and m["num_recommendations"] == 6 and m["num_users"] == 2
    assert rec_metrics(recs, ["B", "x"])["hit_rate@5"] == 0.5  # the 3rd slot counts for @5
    # with a duplicate: "a (1990)" and "A" normalise to the same title -> 6 unique of 11 slots
    m = rec_metrics([recs[0] + ["a"]], ["Heat"])
    assert m["div_ratio"] == pytest.approx(6 / 11)
    # a user with only 2 generations has 2 chances, also @10
    assert rec_metrics([["x", "Heat"]], ["Heat (1995)"])["hit_rate@10"] == 1.0


def test_quotes_and_edge_punctuation_do_not_hide_a_title():
    assert normalize_title('"Fargo" (1996)') == normalize_title("Fargo (1996).") == "fargo"
    assert normalize_title("(1996)") == ""  # a bare year is no recommendation
    assert div_ratio([["(1996)", "Fargo"]]) == 0.5  # 1 title in 2 slots


def test_a_model_that_recommends_nothing_scores_zero_without_crashing():
    from pfo.recommend import rec_metrics, recommendation_lists

    recs = recommendation_lists([["", "\n", "(1995)"], [""] * 3])
    m = rec_metrics(recs, ["Heat (1995)", "Fargo (1996)"])
    assert m == {"num_users": 2, "hit_rate@5": 0.0, "hit_rate@10": 0.0, "div_ratio": 0.0, "num_recommendations": 0}


def test_titles_that_begin_with_brackets():
    """MovieLens-25M has "(500) Days of Summer (2009)" and "[REC] (2007)": the leading bracket is
    part of the title, so the cut comes after the year, and an all-bracket title keeps its name."""
    from pfo.recommend import first_item

    assert first_item("(500) Days of Summer (2009), Heat (1995)") == "(500) Days of Summer (2009)"
    assert first_item("(500) Days of Summer (20") == "(500) Days of Summer"
    assert first_item("[REC] (2007), Fargo (1996)") == "[REC] (2007)"
    assert first_item("(T)Raumschiff Surprise: Periode 1 (2004)") == "(T)Raumschiff Surprise: Periode 1 (2004)"
    assert normalize_title("(500) Days of Summer (2009)") == normalize_title("Days of Summer") == "days of summer"
    assert normalize_title("[REC] (2007)") == normalize_title("[Rec] (2007)") == "rec"
    assert hit_rate([[first_item("[REC] (2007), Fargo")]], ["[REC] (2007)"], 5) == 1.0
    # a lone bracketed title is a title, a lone year is not
    assert normalize_title("[REC]") == "rec" and normalize_title("(1994-1998)") == normalize_title("(500)") == ""


def test_numbered_list_markers_are_not_part_of_the_title():
    from pfo.recommend import first_item

    assert first_item("1. Toy Story (1995)\n2. Heat (1995)") == "Toy Story (1995)"
    assert first_item("2) Fargo (1996), Heat") == first_item("- Fargo (1996)") == "Fargo (1996)"
    assert first_item("2001: A Space Odyssey (1968)") == "2001: A Space Odyssey (1968)"
    assert first_item("12 Angry Men (1957)") == "12 Angry Men (1957)"
    # SmolLM2's chatty replies: a lead-in line, then the list (seen in cpu-demo generations)
    lead = "Yes, using the past movie choices, I can predict the next they will likely watch:"
    assert first_item(lead + "\n\n1. Kingpin (1996)\n2. Fargo (1996)") == "Kingpin (1996)"
    assert first_item(lead + "\n\n1. A (1") == "A"          # cut by the token limit
    assert first_item(lead) == lead                          # nothing after it: the line itself (a miss)
