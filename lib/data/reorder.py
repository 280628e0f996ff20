"""Rank classes by training count (docs/data.md; ACE precondition).

With n_c the training count of class c, the new id of class c is its rank in the order
"n_c descending, ties by original id ascending": new id 0 is the largest class. This replaces
ACE's fixed permutation files; CIFAR-LT is already in this order (the mapping is the identity).
"""


def rank_classes_by_count(counts):
    """Return `new_id_of_old`: a list where new_id_of_old[c] is the rank of class c.

    Rank r = position of c in the classes sorted by (-n_c, c).
    """
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))  # old ids, new-id order
    new_id_of_old = [0] * len(counts)
    for new_id, old_id in enumerate(order):
        new_id_of_old[old_id] = new_id
    return new_id_of_old


def invert(mapping):
    """Inverse permutation: invert(new_id_of_old) is old_id_of_new (and vice versa).

    Raises ValueError if `mapping` is not a permutation of 0..len(mapping)-1.
    """
    inverse = [None] * len(mapping)
    for i, j in enumerate(mapping):
        ok = not isinstance(j, bool) and hasattr(j, "__index__") and 0 <= j < len(mapping)
        if not ok or inverse[int(j)] is not None:
            raise ValueError(f"not a permutation of 0..{len(mapping) - 1}: entry {i} is {j!r}")
        inverse[int(j)] = i
    return inverse
