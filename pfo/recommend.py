"""Recommendation metrics of the paper's §4.2 (Table 2).

Titles are compared after removing bracketed parts ("Toy Story (1995)" -> "toy story"), quotes
and punctuation at the ends, collapsing white space and case-folding; generations are not filtered
for validity (as the paper). A recommendation list has one slot per generation, in rank order; a
slot whose title normalises to nothing (an empty generation) recommends nothing.
HitRate@K: share of users whose true next item is in one of their first K slots. DivRatio: unique
titles / all slots, over every user's list; an empty slot is a generation that failed to recommend
anything, so it lowers DivRatio instead of being filtered out (no validity filtering, as the paper).
"""
from __future__ import annotations

import re
from typing import Sequence

_BRACKETS = re.compile(r"\([^()]*\)|\[[^\[\]]*\]")


_EDGES = " \t\n\"'`“”‘’.,;:!?*-"
_NUMBER = re.compile(r"\d+(?:\s*[-–]\s*\d+)?")  # "(1996)", "(1994-1998)": a year, not a title
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s+")  # "1. ", "2) ", "- " before a listed title


def normalize_title(title: str) -> str:
    out, prev = title, None
    while prev != out:  # nested brackets: strip inner first
        prev, out = out, _BRACKETS.sub(" ", out)
    out = " ".join(out.split()).strip(_EDGES)
    groups = _BRACKETS.findall(title)
    if not out and groups:
        # A title that is all brackets ("[REC] (2007)"): its groups but the last (the year) are the
        # title; a lone group is the title ("[REC]") unless it is a bare year ("(1996)": no title).
        names = groups[:-1] if len(groups) > 1 else [g for g in groups if not _NUMBER.fullmatch(g[1:-1].strip())]
        out = normalize_title(" ".join(g[1:-1] for g in names)) if names else ""
    return out.casefold()


def hit_rate(recommendations: Sequence[Sequence[str]], truths: Sequence[str], k: int) -> float:
    if len(recommendations) != len(truths):
        raise ValueError(f"{len(recommendations)} recommendation lists for {len(truths)} users")
    if not truths:
        raise ValueError("hit rate of no users")
    hits = sum(normalize_title(t) in {normalize_title(r) for r in recs[:k]} - {""}
               for recs, t in zip(recommendations, truths))
    return hits / len(truths)


def div_ratio(recommendations: Sequence[Sequence[str]]) -> float:
    slots = [normalize_title(r) for recs in recommendations for r in recs]
    if not slots:
        raise ValueError("diversity of no recommendation lists")
    return len(set(slots) - {""}) / len(slots)


_UNCLOSED = re.compile(r"[(\[][^()\[\]]*$")
# Leading bracketed groups belong to the title ("(500) Days of Summer (2009)", "[REC] (2007)"). After
# them: title text up to and including its first bracket (the year), else title text to the end of
# the line, else (a separator such as ", " follows) the leading groups alone.
_BR = r"(?:\([^()\n]*\)|\[[^\[\]\n]*\])"
_FIRST_BRACKET = re.compile(rf"^\s*(?:{_BR}\s*)*(?:[^\s(\[,;|][^\n(\[]*?{_BR}|[^\s(\[,;|][^\n(\[]*$|(?<=[)\]]))")


def first_item(generation: str) -> str:
    """The recommended title in one generation: its first line, cut after the first bracketed
    part (the year) when there is one, so that "Fargo (1996), Heat (1995)" -> "Fargo (1996)"
    and "1. Fargo (1996)" -> "Fargo (1996)"; a first line ending in ":" leads in to the answer on
    the next line ("I predict they will watch:\n\n1. Fargo (1996)" -> "Fargo (1996)").
    A title without a bracket keeps its whole line ("Rainmaker, The" stays whole). Nothing is
    checked against the catalogue: an invented title is a miss, not a filtered row (paper §4.2)."""
    lines = [line.strip() for line in generation.split("\n") if line.strip()]
    while len(lines) > 1 and lines[0].endswith(":"):  # "... they will likely watch:" leads in to the answer
        lines.pop(0)
    line = _LIST_MARKER.sub("", lines[0]) if lines else ""  # a model answering with a numbered list
    line = _UNCLOSED.sub("", line)  # a bracket cut off by the token limit
    m = _FIRST_BRACKET.match(line)
    item = m.group(0) if m else line
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
