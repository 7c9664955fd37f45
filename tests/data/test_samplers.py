"""Class-balanced samplers: balance, determinism, epochs, disjoint equal shards."""

from __future__ import annotations

import numpy as np
import pytest

from mitoscope.data.samplers import (
    ClassBalancedSampler,
    DistributedClassBalancedSampler,
    EpochTaggedSampler,
    ShardedSequentialSampler,
    class_balanced_weights,
)

LABELS = np.array([0] * 950 + [1] * 50)


def test_weights_give_each_class_equal_mass():
    w = class_balanced_weights(LABELS)
    assert w[LABELS == 0].sum() == pytest.approx(0.5) and w[LABELS == 1].sum() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        class_balanced_weights([])


def test_sampler_balances_classes():
    s = ClassBalancedSampler(LABELS, num_samples=4000, seed=1)
    idx = np.array(list(s))
    assert len(idx) == len(s) == 4000
    frac = (LABELS[idx] == 1).mean()
    assert 0.46 < frac < 0.54
    # the rare class is drawn with replacement, the common one spread out
    assert len(set(idx[LABELS[idx] == 1])) == 50


def test_sampler_is_deterministic_and_epoch_settable():
    a, b = ClassBalancedSampler(LABELS, seed=3), ClassBalancedSampler(LABELS, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(ClassBalancedSampler(LABELS, seed=4)) != first


def test_distributed_shards_are_disjoint_positions_of_one_draw_and_equal_length():
    world = 3
    shards = [
        list(ClassBalancedSampler(LABELS, num_samples=1000, seed=0, rank=r, world_size=world))
        for r in range(3)
    ]
    assert {len(s) for s in shards} == {334}
    single = list(ClassBalancedSampler(LABELS, num_samples=1002, seed=0))
    interleaved = [shards[r][i] for i in range(334) for r in range(world)]
    assert interleaved == single
    d = DistributedClassBalancedSampler(LABELS, num_samples=1000, rank=1, world_size=3)
    assert list(d) == shards[1]
    with pytest.raises(ValueError):
        ClassBalancedSampler(LABELS, rank=3, world_size=3)


def test_sharded_sequential_covers_everything_once():
    parts = [list(ShardedSequentialSampler(10, rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for part in parts for i in part) == list(range(10))


def test_epoch_tagged_sampler_forwards_set_epoch():
    inner = ClassBalancedSampler(LABELS, num_samples=10, seed=2)
    tagged = EpochTaggedSampler(inner)
    tagged.set_epoch(3)
    items = list(tagged)
    assert len(tagged) == 10 and {e for _, e in items} == {3}
    inner_ref = ClassBalancedSampler(LABELS, num_samples=10, seed=2)
    inner_ref.set_epoch(3)
    assert [i for i, _ in items] == list(inner_ref)
