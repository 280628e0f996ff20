"""lib/data/reorder.py: classes ranked by training count, descending, ties by original id (docs/data.md)."""
import pytest

from lib.data.longtail import exponential_counts
from lib.data.reorder import invert, rank_classes_by_count


def test_classes_are_ranked_by_count_descending():
    counts = [5, 50, 20, 7]
    new_id_of_old = rank_classes_by_count(counts)
    assert new_id_of_old == [3, 0, 1, 2]
    old_id_of_new = invert(new_id_of_old)
    assert old_id_of_new == [1, 2, 3, 0]
    assert [counts[o] for o in old_id_of_new] == [50, 20, 7, 5]


def test_ties_are_broken_by_original_id():
    assert rank_classes_by_count([3, 9, 3, 9, 3]) == [2, 0, 3, 1, 4]


def test_cifar_lt_profile_is_already_in_order():
    counts = exponential_counts(500, 100, 100)  # has ties (e.g. 15 15, 6 6 6 6)
    assert rank_classes_by_count(counts) == list(range(100))


def test_invert_is_an_involution_and_rejects_non_permutations():
    m = rank_classes_by_count([1, 4, 2, 4, 0, 9])
    assert invert(invert(m)) == m
    for bad in ([0, 0, 1], [0, 3, 1], [0, -1, 1]):
        with pytest.raises(ValueError):
            invert(bad)
