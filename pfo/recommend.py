"""Recommendation metrics of the paper's §4.2 (Table 2).

Titles are compared after removing bracketed parts ("Toy Story (1995)" -> "toy story"), collapsing
white space and case-folding; generations are not filtered for validity (as the paper).
HitRate@K: share of users whose true next item is among their first K recommendations; a user with
fewer than K generations simply has fewer chances. DivRatio: unique recommendations / all
recommendations, over every user's list.
"""
from __future__ import annotations

import re
from typing import Sequence

_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


def normalize_title(title: str) -> str:
    prev = None
    while prev != title:  # nested brackets: strip inner first
        prev, title = title, _BRACKETS.sub(" ", title)
    return " ".join(title.split()).casefold()


def hit_rate(recommendations: Sequence[Sequence[str]], truths: Sequence[str], k: int) -> float:
    if len(recommendations) != len(truths):
        raise ValueError(f"{len(recommendations)} recommendation lists for {len(truths)} users")
    if not truths:
        raise ValueError("hit rate of no users")
    hits = sum(normalize_title(t) in {normalize_title(r) for r in recs[:k]}
               for recs, t in zip(recommendations, truths))
    return hits / len(truths)


def div_ratio(recommendations: Sequence[Sequence[str]]) -> float:
    flat = [normalize_title(r) for recs in recommendations for r in recs]
    if not flat:
        raise ValueError("diversity of no recommendations")
    return len(set(flat)) / len(flat)
