"""Tests for the Learning-to-Execute programs, curricula and characters (structnets.sequences.programs)."""

import ast
import collections
import itertools
import random

import pytest
import torch

from structnets.sequences.programs import (
    MAX_NESTING,
    TREE_VOCABULARY,
    VOCABULARY,
    Curriculum,
    CurriculumSchedule,
    Level,
    Operation,
    Split,
    encode_batch,
    generate_program,
    next_level,
    program_tree,
    run_program,
    sample_program,
)

LEVELS = list(itertools.product(range(1, 5), range(1, 5)))
SEEDS = range(40)


def _programs(length, nesting, seeds=SEEDS):
    # check=False: the test runs each program itself.
    return [generate_program(random.Random(seed), length, nesting, check=False) for seed in seeds]


@pytest.mark.parametrize(("length", "nesting"), LEVELS)
def test_python_prints_what_the_generator_says(length, nesting):
    for program in _programs(length, nesting):
        assert run_program(program.code) == program.target == str(program.output)
        assert program.code.splitlines()[-1].startswith("print(")


def _count(tree, kind, op=None):
    return sum(isinstance(node, kind) and (op is None or isinstance(node.op, op)) for node in ast.walk(tree))


@pytest.mark.parametrize(("length", "nesting"), LEVELS)
def test_programs_use_the_grammar_and_compose_nesting_operations(length, nesting):
    allowed = (
        ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.For, ast.Call, ast.Name, ast.Load, ast.Store,
        ast.Constant, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.IfExp, ast.Compare, ast.Lt, ast.Gt,
    )  # fmt: skip
    for program in _programs(length, nesting):
        tree = ast.parse(program.code)
        assert all(isinstance(node, allowed) for node in ast.walk(tree)), program.code
        assert program.nesting == len(program.operations) == nesting
        ops = collections.Counter(program.operations)
        # Each operation leaves its own construct in the text (OPERAND none), and nothing else does.
        assert _count(tree, ast.For) == _count(tree, ast.AugAssign) == ops[Operation.LOOP]
        assert _count(tree, ast.Assign) == ops[Operation.LOOP] + ops[Operation.ASSIGN]
        assert _count(tree, ast.IfExp) == _count(tree, ast.Compare) == ops[Operation.IF]
        assert _count(tree, ast.BinOp, ast.Mult) == ops[Operation.SMALL_MULTIPLY]
        assert _count(tree, ast.BinOp, (ast.Add, ast.Sub)) == ops[Operation.ADD_SUBTRACT] + ops[Operation.ASSIGN]
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert names <= set("abcdefghijx") | {"print", "range"}


@pytest.mark.parametrize(("length", "nesting"), LEVELS)
def test_literals_lie_in_range_and_small_numbers_below_four_times_the_length(length, nesting):
    for program in _programs(length, nesting):
        tree = ast.parse(program.code)
        constants = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)]
        assert constants and all(1 <= value <= 10**length for value in constants)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and node.func.id == "range":
                assert 1 <= node.args[0].value <= 4 * length
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
                sides = [side.value for side in (node.left, node.right) if isinstance(side, ast.Constant)]
                assert any(1 <= value <= 4 * length for value in sides), program.code


def test_literals_cover_their_range():
    # Uniform in [1, 10]: every value appears among a few hundred operand-only programs.
    values = {generate_program(random.Random(seed), 1, 1).output for seed in range(400)}
    assert values >= set(range(1, 11)) and min(values) >= -100


def test_the_same_seed_gives_the_same_programs():
    first = [sample_program(random.Random(7), 3, 3, Split.TRAIN) for _ in range(3)]
    again = [sample_program(random.Random(7), 3, 3, Split.TRAIN) for _ in range(3)]
    assert first == again
    rng_a, rng_b = random.Random(11), random.Random(11)
    assert [generate_program(rng_a, 2, 4) for _ in range(20)] == [generate_program(rng_b, 2, 4) for _ in range(20)]
    assert len({generate_program(random.Random(seed), 2, 4).code for seed in range(20)}) == 20


def test_every_operation_and_both_signs_occur():
    programs = [p for level in LEVELS for p in _programs(*level, seeds=range(10))]
    assert set(itertools.chain.from_iterable(p.operations for p in programs)) == set(Operation)
    assert any(p.output < 0 for p in programs) and any(p.output > 0 for p in programs)
    text = "\n".join(p.code for p in programs)
    for piece in ("+=", "-=", "<", ">", " if ", " else ", "for x in range("):
        assert piece in text


def test_splits_are_disjoint_even_at_the_smallest_level():
    rng = random.Random(0)
    drawn = {split: {sample_program(rng, 1, 1, split).code for _ in range(200)} for split in Split}
    for split, codes in drawn.items():
        assert all(Split.of(code) is split for code in codes)
    assert not drawn[Split.TRAIN] & drawn[Split.VALIDATION]
    assert not drawn[Split.TRAIN] & drawn[Split.TEST]


def test_levels_outside_the_grammar_are_refused():
    with pytest.raises(ValueError, match="length must be at least 1"):
        generate_program(random.Random(0), 0, 1)
    with pytest.raises(ValueError, match="nesting must lie in 1..10"):
        generate_program(random.Random(0), 2, MAX_NESTING + 1)
    program = generate_program(random.Random(0), 2, MAX_NESTING)  # ten operations fit the ten variables
    assert run_program(program.code) == program.target


@pytest.mark.parametrize(
    "code",
    ["import os", "print(open('x'))", "print(len([1]))", "a.b=1", "print('text')", "while 1:\n  a=1", "print(2**9)"],
)
def test_code_outside_the_grammar_is_refused_before_it_runs(code):
    with pytest.raises(ValueError):
        run_program(code)


def test_run_program_captures_every_print():
    assert run_program("a=3\nfor x in range(4):a-=2\nprint(a)\nprint((7 if a<1 else 8))") == "-5\n7"


# Curricula.


def _draw(curriculum, count=2000, level=(1, 1), target=(3, 2)):
    schedule = CurriculumSchedule(curriculum, target, level=level)
    return schedule.levels(random.Random(0), count)


def test_baseline_draws_the_target_only_and_naive_the_current_level():
    assert set(_draw(Curriculum.BASELINE)) == {Level(3, 2)}
    assert set(_draw(Curriculum.NAIVE, level=Level(2, 1))) == {Level(2, 1)}


def test_mix_draws_length_and_nesting_uniformly_up_to_the_target():
    counts = collections.Counter(_draw(Curriculum.MIX, count=6000))
    assert set(counts) == {Level(length, nesting) for length in (1, 2, 3) for nesting in (1, 2)}
    assert all(abs(count - 1000) < 150 for count in counts.values()), counts


def test_blend_takes_a_fifth_of_each_batch_from_mix_and_the_rest_from_the_current_level():
    levels = _draw(Curriculum.BLEND, count=100, level=Level(2, 1), target=Level(4, 4))
    mixed, current = levels[:20], levels[20:]
    assert current == [Level(2, 1)] * 80
    assert len(set(mixed)) > 5 and all(1 <= level.length <= 4 and 1 <= level.nesting <= 4 for level in mixed)
    schedule = CurriculumSchedule(Curriculum.BLEND, Level(4, 4), mix_fraction=0.5)
    assert len(schedule.levels(random.Random(0), 10)) == 10


def test_naive_moves_up_length_first_then_nesting_as_accuracy_passes_the_threshold():
    schedule = CurriculumSchedule(Curriculum.NAIVE, Level(3, 2), threshold=0.9, stall=None)
    seen = [schedule.level]
    for accuracy in (0.5, 0.95, 0.2, 0.91, 0.99, 0.3, 0.3, 0.97, 0.99, 0.99, 0.99):
        moved = schedule.update(accuracy)
        assert moved == (seen[-1] != schedule.level)
        if moved:
            seen.append(schedule.level)
    assert seen == [Level(1, 1), Level(2, 1), Level(3, 1), Level(1, 2), Level(2, 2), Level(3, 2)]
    assert not schedule.update(1.0) and schedule.level == Level(3, 2)  # the target is the last level
    assert next_level(Level(3, 2), Level(3, 2)) is None


def test_naive_also_moves_up_when_accuracy_stalls():
    schedule = CurriculumSchedule(Curriculum.NAIVE, Level(2, 2), threshold=0.95, stall=3)
    for accuracy in (0.5, 0.6, 0.7):
        assert not schedule.update(accuracy)
    assert not schedule.update(0.55)  # above the 0.5 of three updates ago
    assert schedule.update(0.59)  # below the 0.6 of three updates ago
    assert schedule.level == Level(2, 1)
    never = CurriculumSchedule(Curriculum.NAIVE, Level(2, 2), stall=None)
    assert not any(never.update(accuracy) for accuracy in (0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0))


def test_curriculum_arguments_are_checked():
    with pytest.raises(TypeError, match="must be a Curriculum"):
        CurriculumSchedule("mix", Level(2, 2))
    with pytest.raises(ValueError, match="within the target"):
        CurriculumSchedule(Curriculum.NAIVE, Level(2, 2), level=Level(3, 1))
    with pytest.raises(ValueError, match="mix_fraction"):
        CurriculumSchedule(Curriculum.BLEND, Level(2, 2), mix_fraction=1.5)


# Characters.


def test_encoding_round_trips_and_batches_pad_with_the_right_lengths():
    programs = [generate_program(random.Random(seed), 3, nesting) for seed, nesting in ((0, 1), (1, 4), (2, 2))]
    for program in programs:
        assert VOCABULARY.decode(VOCABULARY.encode(program.code)) == program.code
    batch = encode_batch(programs)
    assert batch.source.dtype == torch.long and batch.levels.tolist() == [[3, 1], [3, 4], [3, 2]]
    for row, program in enumerate(programs):
        length, width = len(program.code), len(program.target)
        assert batch.source_lengths[row] == length
        assert VOCABULARY.decode(batch.source[row, :length]) == program.code
        assert (batch.source[row, length:] == VOCABULARY.pad).all()
        assert batch.target_in[row, 0] == VOCABULARY.bos
        assert VOCABULARY.decode(batch.target_in[row, 1:]) == program.target
        assert batch.target_out[row, width] == VOCABULARY.eos and (batch.target_out[row, width + 1 :] == 0).all()
        assert VOCABULARY.decode(batch.target_out[row]) == program.target
        assert torch.equal(batch.target_in[row, 1 : width + 1], batch.target_out[row, :width])
    assert batch.source.shape == (3, max(len(p.code) for p in programs))
    assert batch.target_in.shape == batch.target_out.shape == (3, max(len(p.target) for p in programs) + 1)


def test_one_vocabulary_covers_programs_and_outputs():
    assert VOCABULARY.decode(VOCABULARY.encode("-1234567890")) == "-1234567890"
    assert (VOCABULARY.pad, VOCABULARY.bos, VOCABULARY.eos) == (0, 1, 2)
    assert len(VOCABULARY) == len(set(VOCABULARY.symbols)) + 3


def test_an_unknown_character_is_a_clear_error():
    with pytest.raises(ValueError, match=r"character ';' \(position 3 of 'a=1;'\) is not in the program vocabulary"):
        VOCABULARY.encode("a=1;")
    with pytest.raises(ValueError, match="needs at least one program"):
        encode_batch([])


def test_program_trees_have_few_children_known_tokens_and_digit_leaves():
    from structnets.sequences.programs import TREE_CHILDREN

    for length, nesting in [(1, 1), (3, 4), (7, 10)]:
        for program in _programs(length, nesting, range(10)):
            tree = program_tree(program.code)
            assert tree.parents[0] is None and tree.parents.count(None) == 1
            assert tree.max_children <= TREE_CHILDREN
            assert all(token in TREE_VOCABULARY for token in tree.tokens), tree.tokens


def test_a_literal_is_a_chain_of_its_digits_read_first_to_last():
    tree = program_tree("a=120\nprint((a+7))")
    constant = tree.tokens.index("Constant")
    chain, node = [], constant
    while node in tree.parents:  # each digit's one child is the digit before it
        node = tree.parents.index(node)
        chain.append(tree.tokens[node])
    assert chain == ["digit:0", "digit:2", "digit:1"]  # the leaf, read first, is the first digit
    body = [token for token in tree.tokens if token == "Body"]
    assert len(body) == 2 and tree.tokens[:2] == ["Module", "Body"]
