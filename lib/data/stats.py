"""Statistics of per-class counts (docs/data.md): images, classes, max / min, imbalance factor and the
many / medium / few groups (standard rule) by the training counts; tools/dataset_stats.py and
tools/build_json_from_folders.py print them."""
from ..utils.shots import GROUP_NAMES, shot_groups


def compute_stats(counts, train_counts=None):
    """Statistics dict; the groups come from `train_counts` (default: `counts`)."""
    n_max, n_min = max(counts), min(counts)
    groups = shot_groups(counts if train_counts is None else train_counts)
    return {
        "images": sum(counts),
        "classes": len(counts),
        "empty_classes": sum(1 for n in counts if n == 0),
        "max_per_class": n_max,
        "min_per_class": n_min,
        "imbalance_factor": (n_max / n_min) if n_min > 0 else None,  # None: a class has no image
        "groups_from": "self" if train_counts is None else "train_json",
        "group_classes": {g: len(groups[g]) for g in GROUP_NAMES},
        "group_images": {g: sum(counts[c] for c in groups[g]) for g in GROUP_NAMES},
    }


def format_table(path, s, train_source="--train-json"):
    """Small aligned key/value table; `train_source` names where the training counts come from."""
    IF = s["imbalance_factor"]
    if_text = "n/a (a class has 0 images)" if IF is None else (f"{IF:g}" if IF == int(IF) else f"{IF:.2f}")
    source = f"training counts of {train_source}" if s["groups_from"] == "train_json" else "counts of this file"
    rows = [
        ("file", path),
        ("images", f"{s['images']:,}"),
        ("classes", f"{s['classes']:,}" + (f" ({s['empty_classes']} empty)" if s["empty_classes"] else "")),
        ("max / min per class", f"{s['max_per_class']:,} / {s['min_per_class']:,}"),
        ("imbalance factor", if_text),
    ]
    for g, rule in zip(GROUP_NAMES, ("n > 100", "20 <= n <= 100", "n < 20")):
        k = s["group_classes"][g]
        rows.append((f"{g} ({rule})", f"{k} classes, {s['group_images'][g]:,} images" if k else "n/a (0 classes)"))
    rows.append(("groups by", source))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
