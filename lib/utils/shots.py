"""Many / medium / few class groups by training count (docs/evaluation.md): a property of class counts,
used by data (long-tail builders, dataset stats) and evaluation alike.

Standard (default, OLTR): many n > 100, medium 20 <= n <= 100, few n < 20.
Variants exist only to replicate a table: 'ace' (few n <= 20), 'ncl' (many n >= 100, few n <= 20).
"""
from .registry import choose

GROUP_NAMES = ("many", "medium", "few")


def shot_group(n, rule="standard"):
    choose(rule, ("standard", "ace", "ncl"), "shot-group rule", ValueError)
    if rule == "standard":
        return "many" if n > 100 else ("few" if n < 20 else "medium")
    if rule == "ace":
        return "many" if n > 100 else ("few" if n <= 20 else "medium")
    return "many" if n >= 100 else ("few" if n <= 20 else "medium")


def shot_groups(counts, rule="standard"):
    """{'many': [class ids], 'medium': [...], 'few': [...]} for per-class counts."""
    groups = {g: [] for g in GROUP_NAMES}
    for c, n in enumerate(counts):
        groups[shot_group(n, rule)].append(c)
    return groups
