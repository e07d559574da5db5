"""One process: the helpers are plain (the two-process case is tested through the engine)."""

import torch

from structnets.train.distributed import decide, distributed, shard, world


def test_one_process_is_its_own_world():
    with distributed("cpu") as here:
        assert here == world() and here.main and here.world_size == 1
        assert decide(True) and not decide(False)


def test_shard_is_a_seeded_permutation_per_epoch():
    first, again, other = shard(50, 0, 7), shard(50, 0, 7), shard(50, 1, 7)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert sorted(first.tolist()) == list(range(50))
    assert shard(5, 0, 0, shuffle=False).tolist() == [0, 1, 2, 3, 4]


def test_shuffled_gives_every_batch_once_per_epoch_in_a_seeded_order():
    from structnets.train.distributed import shuffled

    batches = ["a", "b", "c", "d", "e"]
    epochs = shuffled(batches, seed=3)
    assert sorted(epochs(0)) == batches and epochs(0) == shuffled(batches, seed=3)(0)
    assert epochs(0) != epochs(1) or epochs(1) != epochs(2)
