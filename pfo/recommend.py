"""Recommendation metrics of the paper's §4.2 (Table 2).

Titles are compared after removing bracketed parts ("Toy Story (1995)" -> "toy story"), quotes
and punctuation at the ends, collapsing white space and case-folding; generations are not filtered
for validity (as the paper). A recommendation list has one slot per generation, in rank order; a
slot whose title normalises to nothing (an empty generation) recommends nothing.
HitRate@K: share of users whose true next item is in one of their first K slots. DivRatio: unique
recommendations / all (non-empty) recommendations, over every user's list.
"""
from __future__ import annotations

import re
from typing import Sequence

_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


_EDGES = " \t\n\"'`“”‘’.,;:!?*-"


def normalize_title(title: str) -> str:
    prev = None
    while prev != title:  # nested brackets: strip inner first
        prev, title = title, _BRACKETS.sub(" ", title)
    return " ".join(title.split()).strip(_EDGES).casefold()


def hit_rate(recommendations: Sequence[Sequence[str]], truths: Sequence[str], k: int) -> float:
    if len(recommendations) != len(truths):
        raise ValueError(f"{len(recommendations)} recommendation lists for {len(truths)} users")
    if not truths:
        raise ValueError("hit rate of no users")
    hits = sum(normalize_title(t) in {normalize_title(r) for r in recs[:k]} - {""}
               for recs, t in zip(recommendations, truths))
    return hits / len(truths)


def div_ratio(recommendations: Sequence[Sequence[str]]) -> float:
    flat = [n for recs in recommendations for n in map(normalize_title, recs) if n]
    if not flat:
        raise ValueError("diversity of no recommendations")
    return len(set(flat)) / len(flat)


_UNCLOSED = re.compile(r"[(\[][^()\[\]]*$")
_FIRST_BRACKET = re.compile(r"^[^\n(\[]*?(\([^()\n]*\)|\[[^\[\]\n]*\])")


def first_item(generation: str) -> str:
    """The recommended title in one generation: its first line, cut after the first bracketed
    part (the year) when there is one, so that "Fargo (1996), Heat (1995)" -> "Fargo (1996)".
    A title without a bracket keeps its whole line ("Rainmaker, The" stays whole). Nothing is
    checked against the catalogue: an invented title is a miss, not a filtered row (paper §4.2)."""
    line = generation.strip().split("\n", 1)[0].strip() if generation.strip() else ""
    m = _FIRST_BRACKET.match(line)
    item = m.group(0) if m else _UNCLOSED.sub("", line)  # a bracket cut off by the token limit
    return item.strip().strip("\"'“”‘’`").strip()


def recommendation_lists(generations: Sequence[Sequence[str]]) -> list[list[str]]:
    """Per user: one item per generation, in rank order ("" for an empty generation, which keeps
    its slot: HitRate@5 looks at the first 5 generations, whatever they contain)."""
    return [[first_item(g) for g in gens] for gens in generations]


def rec_metrics(recommendations: Sequence[Sequence[str]], truths: Sequence[str], ks=(5, 10)) -> dict:
    out = {"num_users": len(truths)}
    out.update({f"hit_rate@{k}": hit_rate(recommendations, truths, k) for k in ks})
    out["div_ratio"] = div_ratio(recommendations)
    out["num_recommendations"] = sum(1 for recs in recommendations for r in recs if normalize_title(r))
    return out
