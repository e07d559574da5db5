"""Tests for the Learning-to-Execute task (structnets.sequences.execute)."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from structnets.cli import main
from structnets.models import Seq2Seq, Tree2Seq
from structnets.models.seq2seq import sequence_loss
from structnets.sequences.execute import (
    ExecuteConfig,
    ExecuteEncoder,
    ExecuteOptimizer,
    build_model,
    held_out,
    load_model,
    run,
    score,
    train,
    training_batch,
)
from structnets.sequences.programs import VOCABULARY, Curriculum, CurriculumSchedule, Level, Split
from structnets.train.engine import TrainConfig, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ExecuteConfig(
    length=2,
    nesting=2,
    hidden_size=16,
    embedding_size=8,
    num_layers=1,
    val_programs=16,
    eval_programs=8,
    beam_width=2,
    train=TrainConfig(steps=4, batch_size=8, eval_every=2, log_every=2, progress=False, clip_grad_norm=5.0),
)


def _tiny(**changes):
    train_changes = {key: changes.pop(key) for key in list(changes) if hasattr(TINY.train, key)}
    return dataclasses.replace(TINY, **changes, train=dataclasses.replace(TINY.train, **train_changes))


def test_the_cli_runs_end_to_end_and_writes_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        ["sequences", "execute", "--length", "2", "--nesting", "2", "--curriculum", "blend", "--steps", "20",
         "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1", "--batch-size", "8",
         "--val-programs", "16", "--eval-programs", "8", "--beam-width", "2", "--eval-every", "10", "--no-progress",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "per-character accuracy (teacher forced)" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for measure in ("char_accuracy", "greedy_exact", "beam_exact"):
        table = metrics[measure]
        assert list(table) == ["1", "2", "3"]  # lengths 1..L, and L + 1
        assert all(list(row) == ["1", "2", "3"] for row in table.values())  # nesting 1..N, and N + 1
        assert all(0 <= value <= 1 for row in table.values() for value in row.values())
        assert metrics["at_target"][measure] == table["2"]["2"]
    assert metrics["curriculum"] == "blend" and metrics["train_steps"] == 20
    assert metrics["target"] == {"length": 2, "nesting": 2} and set(metrics["final_level"]) == {"length", "nesting"}
    assert (out / "accuracy.png").stat().st_size > 0 and (out / "model.pt").is_file()
    assert json.loads((out / "run.json").read_text())["status"] == "complete"
    model, config = load_model(out)
    assert isinstance(model, Seq2Seq) and config.curriculum is Curriculum.BLEND and config.hidden_size == 16


def test_the_same_seed_writes_the_same_metrics(tmp_path):
    run(TINY, tmp_path / "a")
    run(TINY, tmp_path / "b")
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()


def test_training_lowers_the_loss():
    config = _tiny(hidden_size=32, embedding_size=16, steps=60, batch_size=16, lr=1e-2, log_every=20, eval_every=60)
    result, _ = train(config)
    losses = [entry["train_loss"] for entry in result.train_history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_training_batches_follow_the_schedule_and_depend_on_seed_and_step_only():
    schedule = CurriculumSchedule(Curriculum.NAIVE, Level(3, 3))
    first = training_batch(schedule, 0, 5, 6)
    assert first.levels.tolist() == [[1, 1]] * 6
    assert torch.equal(training_batch(schedule, 0, 5, 6).source, first.source)
    assert not torch.equal(training_batch(schedule, 0, 6, 6).source[:, :4], first.source[:, :4])
    schedule.level = Level(2, 3)
    assert training_batch(schedule, 0, 5, 6).levels.tolist() == [[2, 3]] * 6
    baseline = CurriculumSchedule(Curriculum.BASELINE, Level(3, 3))
    assert training_batch(baseline, 0, 0, 4).levels.tolist() == [[3, 3]] * 4
    for row in range(4):  # from the training split, as decoded text
        code = VOCABULARY.decode(training_batch(baseline, 0, 0, 4).source[row])
        assert Split.of(code) is Split.TRAIN


def test_naive_moves_up_at_validations_and_the_history_says_where():
    # A threshold below any accuracy moves the level at every validation (one per step here).
    config = _tiny(curriculum=Curriculum.NAIVE, threshold=-1.0, steps=3, eval_every=1)
    result, schedule = train(config)
    levels = [(entry["level_length"], entry["level_nesting"]) for entry in result.validation_history]
    assert levels == [(2, 1), (1, 2), (2, 2)]
    assert schedule.level == Level(2, 2)
    baseline, _ = train(_tiny(curriculum=Curriculum.BASELINE, steps=2))
    assert all("level_length" not in entry for entry in baseline.validation_history)


def test_a_resumed_run_continues_the_curriculum_and_the_stream(tmp_path):
    config = _tiny(curriculum=Curriculum.NAIVE, threshold=-1.0, steps=4, eval_every=2)
    whole, _ = train(config)
    train(_tiny(curriculum=Curriculum.NAIVE, threshold=-1.0, steps=2, eval_every=2), run_dir=tmp_path)
    resumed, schedule = train(dataclasses.replace(config, train=dataclasses.replace(config.train, resume=tmp_path)))
    assert schedule.level == Level(1, 2)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value)


class _Oracle(nn.Module):
    """Knows the answers: teacher-forced logits put all mass on the targets; decoding returns them, or a wrong digit."""

    def __init__(self, batch, wrong_decoding=False):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.batch, self.wrong = batch, wrong_decoding

    def forward(self, source, source_lengths, target_in):
        return nn.functional.one_hot(self.batch.target_out, len(VOCABULARY)).float() * 10

    def greedy(self, source, source_lengths, max_length):
        tokens = self.batch.target_out.clone()
        if self.wrong:  # every first character changed to another symbol
            tokens[:, 0] = torch.where(tokens[:, 0] == VOCABULARY.eos + 1, VOCABULARY.eos + 2, VOCABULARY.eos + 1)
        return tokens

    def beam_search(self, source, source_lengths, max_length, width, length_penalty):
        return self.greedy(source, source_lengths, max_length)


def test_scores_count_characters_with_the_stop_symbol_and_whole_outputs():
    (batch,) = held_out(Level(2, 2), Split.TEST, 12, seed=0)
    perfect = score(_Oracle(batch), [batch], decode=True, beam_width=3)
    assert perfect.char_accuracy == perfect.greedy_exact == perfect.beam_exact == 1.0
    wrong = score(_Oracle(batch, wrong_decoding=True), [batch], decode=True, beam_width=3)
    assert wrong.char_accuracy == 1.0 and wrong.greedy_exact == 0.0 and wrong.beam_exact == 0.0
    assert score(_Oracle(batch), [batch]).greedy_exact is None


def test_held_out_sets_are_fixed_by_the_seed_and_come_from_their_split():
    first = held_out(Level(1, 2), Split.VALIDATION, 5, seed=3)[0]
    assert torch.equal(first.source, held_out(Level(1, 2), Split.VALIDATION, 5, seed=3)[0].source)
    codes = [VOCABULARY.decode(row) for row in first.source]
    assert all(Split.of(code) is Split.VALIDATION for code in codes)
    assert len(held_out(Level(1, 1), Split.TEST, 600, seed=0)) == 3  # batches of at most 250


def test_the_cli_runs_end_to_end_with_the_tree_encoder_and_writes_the_same_metrics(tmp_path):
    args = ["sequences", "execute", "--length", "2", "--nesting", "2", "--curriculum", "blend", "--steps", "20",
            "--hidden-size", "16", "--embedding-size", "8", "--num-layers", "1", "--batch-size", "8",
            "--val-programs", "16", "--eval-programs", "8", "--beam-width", "2", "--eval-every", "10", "--no-progress"]  # fmt: skip
    assert main([*args, "--encoder", "tree", "--out", str(tmp_path / "tree")]) == 0
    assert main([*args, "--out", str(tmp_path / "sequence")]) == 0
    tree, sequence = (json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("tree", "sequence"))
    assert set(tree) == set(sequence) and tree["encoder"] == "tree" and sequence["encoder"] == "sequence"
    for measure in ("char_accuracy", "greedy_exact", "beam_exact"):
        assert list(tree[measure]) == ["1", "2", "3"]
        assert all(0 <= value <= 1 for row in tree[measure].values() for value in row.values())
    assert tree["train_steps"] == 20
    model, config = load_model(tmp_path / "tree")
    assert isinstance(model, Tree2Seq) and config.encoder is ExecuteEncoder.TREE


def test_tree_batches_hold_each_programs_tree_and_the_same_characters():
    schedule = CurriculumSchedule(Curriculum.MIX, Level(3, 3))
    plain, with_trees = training_batch(schedule, 0, 3, 6), training_batch(schedule, 0, 3, 6, trees=True)
    assert plain.trees is None and torch.equal(plain.source, with_trees.source)
    assert with_trees.trees.num_graphs == 6 and int(with_trees.trees.x.min()) > 0  # no <unk>
    (held,) = held_out(Level(2, 2), Split.TEST, 5, seed=0, trees=True)
    assert held.trees.num_graphs == 5


def test_a_tree_model_trains_and_scores():
    config = _tiny(encoder=ExecuteEncoder.TREE)
    result, _ = train(config)
    (batch,) = held_out(Level(2, 2), Split.TEST, 6, seed=0, trees=True)
    scores = score(result.model, [batch], decode=True, beam_width=2)
    assert 0 <= scores.char_accuracy <= 1 and 0 <= scores.greedy_exact <= 1 and 0 <= scores.beam_exact <= 1


def test_the_authors_configuration_runs_from_the_cli_and_round_trips(tmp_path):
    """No attention, a unidirectional encoder, SGD and the uniform initialisation, as in the authors' main.lua."""
    out = tmp_path / "authors"
    code = main(
        ["sequences", "execute", "--length", "1", "--nesting", "1", "--curriculum", "baseline", "--steps", "4",
         "--attention", "none", "--no-input-feeding", "--no-bidirectional", "--optimizer", "sgd", "--lr", "0.5",
         "--init-range", "0.08", "--hidden-size", "16", "--embedding-size", "16", "--num-layers", "2",
         "--batch-size", "8", "--val-programs", "8", "--eval-programs", "4", "--beam-width", "2",
         "--eval-every", "2", "--no-progress", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    model, config = load_model(out)
    assert model.attention is None and config.attention is None and config.init_range == 0.08
    assert config.optimizer.value == "sgd" and not model.config.bidirectional
    assert json.loads((out / "metrics.json").read_text())["train_steps"] == 4


def test_the_uniform_initialisation_bounds_every_parameter_and_keeps_padding_zero():
    model = build_model(_tiny(init_range=0.08, attention=None, input_feeding=False))
    for name, parameter in model.named_parameters():
        assert parameter.abs().max() <= 0.08, name
    assert torch.all(model.source_embedding.weight[VOCABULARY.pad] == 0)
    assert model.generator.weight.std() > 0.03  # uniform on [-0.08, 0.08] has std 0.046, not the layer's own


def test_sgd_is_plain_gradient_descent_at_the_given_rate():
    config = _tiny(optimizer=ExecuteOptimizer.SGD, lr=0.5, steps=1, clip_grad_norm=None, eval_every=None)
    seed_everything(config.train.seed)
    reference = build_model(config)
    batch = training_batch(config.schedule(), config.train.seed, 0, config.train.batch_size)
    loss = sequence_loss(reference(batch.source, batch.source_lengths, batch.target_in), batch.target_out, 0)
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    result, _ = train(config)
    for (name, after), before, grad in zip(result.model.named_parameters(), reference.parameters(), grads):
        torch.testing.assert_close(after, before - 0.5 * grad, msg=name)
