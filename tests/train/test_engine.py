"""The training engine: schedules, clipping, best-weight keeping, EMA, time budget, resume and DDP."""

import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from structnets.train.engine import (
    LRSchedule,
    StopReason,
    TrainConfig,
    clip_gradients,
    fit,
    lr_factor,
    seed_everything,
)

X = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


def _loss(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _epochs(epoch):
    order = torch.randperm(256, generator=torch.Generator().manual_seed(epoch))
    return [(X[i], Y[i]) for i in order.split(32)]


def _validate(model):
    return {"val_loss": float(((model(X) - Y) ** 2).mean().detach())}


def _quiet(**kwargs) -> TrainConfig:
    return TrainConfig(progress=False, **kwargs)


def test_training_lowers_the_loss_by_epochs_and_by_steps():
    seed_everything(0)
    model = nn.Linear(4, 1)
    before = _validate(model)["val_loss"]
    result = fit(model, _loss, _epochs, _quiet(epochs=20, lr=0.05), validate=_validate)
    assert result.steps == 20 * 8 and result.epochs == 20 and result.stop is StopReason.DONE
    assert result.best["val_loss"] < before * 1e-3
    endless = fit(nn.Linear(4, 1), _loss, lambda e: iter(lambda: (X, Y), None), _quiet(steps=30, lr=0.05))
    assert endless.steps == 30 and endless.train_history[-1]["train_loss"] < endless.train_history[0]["train_loss"]


def test_the_best_validation_is_kept_and_patience_stops_early():
    seed_everything(0)
    model = nn.Linear(4, 1)
    scripted = iter([3.0, 1.0, 2.0, 4.0, 5.0, 0.5])
    snapshots = []

    def validate(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return {"val_loss": next(scripted)}

    result = fit(model, _loss, _epochs, _quiet(epochs=10, lr=0.01, patience=3), validate=validate)
    assert result.stop is StopReason.EARLY and result.epochs == 5  # validations 3, 1, 2, 4, 5: three without gain
    assert result.best["val_loss"] == 1.0 and result.best["epoch"] == 2  # epochs completed
    for key, value in model.state_dict().items():
        assert_close(value, snapshots[1][key])


def test_maximize_keeps_the_highest():
    scripted = iter([0.1, 0.9, 0.3])
    result = fit(
        nn.Linear(4, 1),
        _loss,
        _epochs,
        _quiet(epochs=3),
        validate=lambda m: {"acc": next(scripted)},
        monitor="acc",
        maximize=True,
    )
    assert result.best["acc"] == 0.9


def test_the_learning_rate_follows_warm_up_then_cosine():
    config = _quiet(steps=100, lr=0.1, schedule=LRSchedule.COSINE, warmup_steps=10, min_lr_ratio=0.1, log_every=1)
    result = fit(nn.Linear(4, 1), _loss, lambda e: iter(lambda: (X, Y), None), config)
    lrs = [h["lr"] for h in result.train_history]
    for step, lr in enumerate(lrs, start=1):  # the rate in force for the next step
        if step < 10:
            expected = (step + 1) / 10
        else:
            expected = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 10) / 90))
        assert lr == pytest.approx(0.1 * expected, rel=1e-6), step
    assert lr_factor(config, 0.0, 0) == pytest.approx(0.1)


def test_exponential_decays_to_the_final_ratio():
    config = _quiet(steps=50, schedule=LRSchedule.EXPONENTIAL, warmup_steps=5, min_lr_ratio=0.01)
    assert lr_factor(config, 0.0, 0) == pytest.approx(0.01 + 0.99 / 5)
    assert lr_factor(config, 0.5, 20) == pytest.approx(0.1)
    assert lr_factor(config, 1.0, 50) == pytest.approx(0.01)


def test_clipping_counts_and_bounds_the_step():
    seed_everything(0)
    model = nn.Linear(4, 1)
    result = fit(model, lambda m, b: _loss(m, b) * 1e4, _epochs, _quiet(epochs=1, clip_grad_norm=1.0, lr=0.01))
    assert result.clipped_steps == 8
    assert all(h["grad_norm"] > 1.0 for h in result.history)  # measured before clipping


def test_ema_weights_are_torch_averaged_model_weights():
    seed_everything(0)
    model = nn.Linear(4, 1)
    reference = nn.Linear(4, 1)
    reference.load_state_dict(model.state_dict())
    fit(model, _loss, _epochs, _quiet(epochs=2, lr=0.05, ema_decay=0.9))
    # the same steps by hand: plain Adam, then the average (AveragedModel starts from the first step's weights)
    average = None
    opt = torch.optim.Adam(reference.parameters(), lr=0.05)
    for epoch in range(2):
        for batch in _epochs(epoch):
            opt.zero_grad()
            _loss(reference, batch).backward()
            opt.step()
            current = {k: v.detach().clone() for k, v in reference.state_dict().items()}
            average = current if average is None else {k: 0.9 * average[k] + 0.1 * current[k] for k in current}
    for key, value in model.state_dict().items():
        assert_close(value, average[key])


def test_the_time_budget_stops_training():
    result = fit(nn.Linear(4, 1), _loss, _epochs, _quiet(epochs=1000, max_seconds=1e-6))
    assert result.stop is StopReason.TIME and result.steps == 1


def test_resume_continues_exactly(tmp_path):
    class Interrupted(Exception):
        pass

    def run(validations_allowed=None, **kwargs):
        seed_everything(0)
        model = nn.Linear(4, 1)
        calls = []

        def batches(epoch):  # draws from the global generator: resume must restore it
            order = torch.randperm(256)
            return [(X[i] + 0.01 * torch.randn(len(i), 4), Y[i]) for i in order.split(64)]

        def validate(m):
            calls.append(1)
            if validations_allowed is not None and len(calls) > validations_allowed:
                raise Interrupted  # as if killed: the state saved at the last validation stays
            return _validate(m)

        config = _quiet(epochs=6, lr=0.05, schedule=LRSchedule.COSINE, warmup_steps=3, ema_decay=0.5, **kwargs)
        return model, fit(model, _loss, batches, config, validate=validate, run_dir=tmp_path)

    straight, whole = run()
    with pytest.raises(Interrupted):
        run(validations_allowed=3)
    resumed, second = run(resume=tmp_path)
    assert second.steps == whole.steps and second.epochs == 6
    for key, value in straight.state_dict().items():
        assert_close(resumed.state_dict()[key], value)
    assert [h["val_loss"] for h in second.validation_history] == pytest.approx(
        [h["val_loss"] for h in whole.validation_history]
    )


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="epochs or steps"):
        TrainConfig()
    with pytest.raises(ValueError, match="clip_grad_norm"):
        TrainConfig(steps=1, clip_grad_norm=0.0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(steps=1, ema_decay=1.0)
    with pytest.raises(ValueError, match="decaying schedule"):
        fit(nn.Linear(4, 1), _loss, lambda e: iter(()), _quiet(epochs=1, schedule=LRSchedule.COSINE))


_WORKER = """
import sys, torch
from torch import nn
from structnets.train.distributed import distributed, shard
from structnets.train.engine import TrainConfig, fit, seed_everything

torch.set_num_threads(1)
X = torch.load(sys.argv[1], weights_only=True)
Y = X @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
with distributed("cpu") as world:
    seed_everything(0)
    model = nn.Linear(4, 1)
    rank = world.rank

    def batches(epoch):  # this rank's half of each full batch
        return [(X[i][rank::2], Y[i][rank::2]) for i in torch.arange(256).split(64)]

    def loss(m, b):
        return ((m(b[0]) - b[1]) ** 2).mean()

    # rank 1 alone would stop at once on its own clock; rank 0's decision (keep going) holds for both
    budget = 1e-9 if rank == 1 else 1e9
    result = fit(model, loss, batches, TrainConfig(epochs=2, lr=0.05, max_seconds=budget, progress=False))
    torch.save({"state": model.state_dict(), "steps": result.steps, "shard": shard(10, 0, 0)}, f"{sys.argv[2]}.{rank}")
"""


def test_two_processes_under_torchrun_train_like_one_on_the_full_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    torch.save(X, tmp_path / "x.pt")
    port = str(29500 + os.getpid() % 1000)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    done = subprocess.run(
        [*command, str(script), str(tmp_path / "x.pt"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [torch.load(tmp_path / f"out.{r}", weights_only=True) for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 8
    seed_everything(0)
    single = nn.Linear(4, 1)
    fit(single, _loss, lambda e: [(X[i], Y[i]) for i in torch.arange(256).split(64)], _quiet(epochs=2, lr=0.05))
    for key, value in single.state_dict().items():
        assert_close(ranks[0]["state"][key], value)
        assert_close(ranks[1]["state"][key], value)
    shards = torch.cat([r["shard"] for r in ranks])
    assert sorted(shards.tolist()) == list(range(10))


def test_clip_gradients_rescales_to_max_norm_and_leaves_small_ones():
    model = nn.Linear(4, 3)
    (model(torch.randn(8, 4)).sum() * 1000).backward()
    before = clip_gradients(model, None)
    assert clip_gradients(model, 1.0) == pytest.approx(before)
    assert clip_gradients(model, None) == pytest.approx(1.0, rel=1e-5)
    small = nn.Linear(4, 3)
    small(torch.randn(2, 4)).sum().mul(1e-3).backward()
    grads = [p.grad.clone() for p in small.parameters()]
    clip_gradients(small, 10.0)
    for g, p in zip(grads, small.parameters()):
        assert_close(p.grad, g)
    with pytest.raises(ValueError, match="positive"):
        clip_gradients(small, 0.0)


def test_a_non_finite_loss_stops_training_with_the_step_named():
    from structnets.train.engine import NonFiniteLossError

    losses = iter([1.0, float("nan")])

    def loss(model, batch):
        return _loss(model, batch) * 0 + next(losses)

    with pytest.raises(NonFiniteLossError, match="nan at step 2; nothing was saved.*diverged.*--lr"):
        fit(nn.Linear(4, 1), loss, _epochs, _quiet(epochs=1))


def test_a_non_finite_loss_at_the_first_step_points_at_the_data():
    from structnets.train.engine import NonFiniteLossError

    def loss(model, batch):
        x, y = batch
        return _loss(model, (x, y * float("inf")))

    with pytest.raises(NonFiniteLossError, match=r"(inf|nan) at step 1.*NaN or infinity in the inputs or targets"):
        fit(nn.Linear(4, 1), loss, _epochs, _quiet(epochs=1))


def test_a_non_finite_gradient_with_a_finite_loss_stops_training():
    from structnets.train.engine import NonFiniteLossError

    calls = iter(range(100))

    def loss(model, batch):
        # sqrt at 0 has an infinite derivative: finite loss, infinite gradient at the 3rd step
        shift = 0.0 if next(calls) == 2 else 1.0
        return (model(batch[0]).sum() * 0 + shift).sqrt()

    with pytest.raises(NonFiniteLossError, match=r"gradient norm is (inf|nan) at step 3.*derivative is infinite"):
        fit(nn.Linear(4, 1), loss, _epochs, _quiet(epochs=1))


def test_resumed_step_reads_the_engines_state(tmp_path):
    from structnets.train.engine import resumed_step

    assert resumed_step(None) == 0 and resumed_step(tmp_path) == 0
    fit(nn.Linear(4, 1), _loss, _epochs, _quiet(epochs=1), run_dir=tmp_path)
    assert resumed_step(tmp_path) == 8


def test_timing_is_kept_apart_from_results():
    result = fit(nn.Linear(4, 1), _loss, _epochs, _quiet(epochs=2))
    timing = result.timing()
    assert timing["steps"] == 16 and timing["epochs"] == 2 and timing["stop"] == "done"
    assert timing["steps_per_second"] > 0 and timing["train_seconds"] == result.seconds


def test_ema_decay_zero_means_no_average():
    assert TrainConfig(steps=1, ema_decay=0.0).ema_decay is None
