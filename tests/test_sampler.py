import pytest

from pfo.sampler import BalancedBatches


def test_balanced_deterministic_and_rank_slices_cover_batch():
    labels = [i % 3 == 0 for i in range(60)]  # 20 desirable, 40 undesirable
    s = BalancedBatches(labels, batch_size=8, seed=1)
    assert s.steps_per_epoch == 5
    for step in range(12):
        b = s.batch(step)
        assert b == BalancedBatches(labels, 8, 1).batch(step)
        assert sum(labels[i] for i in b) == 4 and len(set(b)) == 8
        slices = [BalancedBatches.rank_slice(b, r, 2) for r in range(2)]
        assert slices[0] + slices[1] == b
        assert all(any(labels[i] for i in sl) and not all(labels[i] for i in sl) for sl in slices)
    # an epoch visits every desirable example once
    assert sorted(i for st in range(5) for i in s.batch(st) if labels[i]) == [i for i in range(60) if labels[i]]


def test_too_few_of_one_class():
    with pytest.raises(ValueError, match="needs 4 examples of each class"):
        BalancedBatches([True] * 10 + [False] * 3, batch_size=8)
