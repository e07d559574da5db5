"""The programs of Zaremba & Sutskever's *Learning to Execute* (2014), their curricula and their characters.

A program is ``nesting`` operations composed one into the next, each of the grammar of the
authors' generator (``wojciechz/learning_to_execute``, ``utils/operations.lua`` and
``data.lua``, read to learn; this is our own code):

=================  =========================================  =====================================
operation          text                                       value
=================  =========================================  =====================================
``ADD_SUBTRACT``   ``(a+b)`` / ``(a-b)``                      a ± b
``SMALL_MULTIPLY`` ``(a*k)`` / ``(k*a)``, k in [1, 4 length]  a k
``OPERAND``        ``a`` (the operand alone)                  a
``ASSIGN``         ``v=a`` then ``(v+b)`` / ``(v-b)``         a ± b
``LOOP``           ``v=a``, ``for x in range(n):v+=b`` (or    a ± n b
                   ``-=``), n in [1, 4 length]; then ``v``
``IF``             ``(c if a<b else d)`` (or ``>``)           c or d
=================  =========================================  =====================================

Each operation's operands are fresh literals drawn uniformly from [1, 10^length], except
one, at a random place, which is the previous operation's expression (the first operation
has only literals). Variables are distinct letters of ``a..j`` in a random order, one per
``ASSIGN`` or ``LOOP``, so a program composes at most ten operations; the loop variable is
``x``. The last line prints the final expression, and the target is the printed integer.
Three details differ from the authors' code: no ``;`` after an assignment (a newline ends
it); under ``mix`` and ``blend`` one program has one length (theirs draws a new length for
every literal); and ``blend`` takes exactly its fraction of each batch from ``mix`` (theirs
draws each program from ``mix`` with probability 1/5).

Every generated program is run by Python itself (:func:`run_program`: its syntax tree is
checked against the grammar's node types first, then it runs with only ``print`` and
``range`` in its namespace) and its output compared with the generator's own value.

As in the authors' code, a program belongs to the training, validation or test split by a
hash of its text (:class:`Split`), so the three never share a program, which matters at
small levels, where the programs are few.

The curricula (:class:`Curriculum`, the names of the authors' code) choose each training
program's level: ``baseline`` the target (L, N) only; ``naive`` a current level that starts
at (1, 1) and moves up when the model's accuracy at it passes a threshold (length first;
past L, nesting up by one and length back to 1); ``mix`` length and nesting uniform over
1..L and 1..N; ``blend`` (the paper's "combined") a fraction of each batch from ``mix`` and
the rest from ``naive``'s current level (the authors' fraction: 1/5).
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import random
import zlib
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from ..graphs.trees import Tree, TreeBatch, Vocabulary, batch_trees

__all__ = [
    "MAX_NESTING", "Operation", "Program", "Split", "Level", "Curriculum", "CurriculumSchedule", "generate_program",
    "sample_program", "run_program", "check_grammar", "next_level", "ProgramVocabulary", "VOCABULARY",
    "ProgramBatch", "encode_batch", "program_tree", "TREE_VOCABULARY",
]  # fmt: skip

_VARIABLES = "abcdefghij"
#: Each ASSIGN or LOOP takes a fresh variable of ``a..j``: at most ten operations a program.
MAX_NESTING = len(_VARIABLES)


class Operation(enum.Enum):
    """The operations of the grammar, composed ``nesting`` times into a program."""

    ADD_SUBTRACT = "add_subtract"
    SMALL_MULTIPLY = "small_multiply"
    OPERAND = "operand"
    ASSIGN = "assign"
    LOOP = "loop"
    IF = "if"


class Split(enum.Enum):
    """Which set a program belongs to, by a hash of its text (the authors' ``str_hash % 3``)."""

    TRAIN = 0
    VALIDATION = 1
    TEST = 2

    @classmethod
    def of(cls, code: str) -> Split:
        return cls(zlib.crc32(code.encode()) % 3)


@dataclasses.dataclass(frozen=True)
class Program:
    """One generated program.

    Attributes:
        code: the program's lines, joined by newlines; the last prints the result.
        output: the printed integer.
        length: literals lie in [1, 10^length].
        nesting: the number of composed operations.
        operations: the operations, first (innermost) to last.
    """

    code: str
    output: int
    length: int
    nesting: int
    operations: tuple[Operation, ...]

    @property
    def target(self) -> str:
        """What the program prints, without the newline."""
        return str(self.output)


class _Term(NamedTuple):
    expr: str
    value: int


class _Composer:
    """The state of one program while it is composed: its random source, lines and unused variables."""

    def __init__(self, rng: random.Random, length: int) -> None:
        self.rng, self.length = rng, length
        self.lines: list[str] = []
        self.variables = rng.sample(_VARIABLES, len(_VARIABLES))

    def operands(self, previous: _Term | None, count: int) -> list[_Term]:
        terms = [self.literal() for _ in range(count)]
        if previous is not None:
            terms[self.rng.randrange(count)] = previous
        return terms

    def literal(self) -> _Term:
        value = self.rng.randint(1, 10**self.length)
        return _Term(str(value), value)

    def small(self) -> int:
        return self.rng.randint(1, 4 * self.length)

    def sign(self) -> int:
        return 1 if self.rng.random() < 0.5 else -1


def _add_subtract(c: _Composer, previous: _Term | None) -> _Term:
    a, b = c.operands(previous, 2)
    sign = c.sign()
    return _Term(f"({a.expr}{'+-'[sign < 0]}{b.expr})", a.value + sign * b.value)


def _small_multiply(c: _Composer, previous: _Term | None) -> _Term:
    (a,), k = c.operands(previous, 1), c.small()
    expr = f"({a.expr}*{k})" if c.rng.random() < 0.5 else f"({k}*{a.expr})"
    return _Term(expr, a.value * k)


def _operand(c: _Composer, previous: _Term | None) -> _Term:
    return c.operands(previous, 1)[0]


def _assign(c: _Composer, previous: _Term | None) -> _Term:
    variable, (a, b), sign = c.variables.pop(), c.operands(previous, 2), c.sign()
    c.lines.append(f"{variable}={a.expr}")
    return _Term(f"({variable}{'+-'[sign < 0]}{b.expr})", a.value + sign * b.value)


def _loop(c: _Composer, previous: _Term | None) -> _Term:
    variable, (a, b), times, sign = c.variables.pop(), c.operands(previous, 2), c.small(), c.sign()
    c.lines += [f"{variable}={a.expr}", f"for x in range({times}):{variable}{'+-'[sign < 0]}={b.expr}"]
    return _Term(variable, a.value + sign * times * b.value)


def _if(c: _Composer, previous: _Term | None) -> _Term:
    a, b, then, otherwise = c.operands(previous, 4)
    if c.rng.random() < 0.5:
        expr, taken = f"({then.expr} if {a.expr}<{b.expr} else {otherwise.expr})", a.value < b.value
    else:
        expr, taken = f"({then.expr} if {a.expr}>{b.expr} else {otherwise.expr})", a.value > b.value
    return _Term(expr, then.value if taken else otherwise.value)


_OPERATIONS = {
    Operation.ADD_SUBTRACT: _add_subtract,
    Operation.SMALL_MULTIPLY: _small_multiply,
    Operation.OPERAND: _operand,
    Operation.ASSIGN: _assign,
    Operation.LOOP: _loop,
    Operation.IF: _if,
}
_KINDS = tuple(Operation)


def _check_level(length: int, nesting: int) -> None:
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    if not 1 <= nesting <= MAX_NESTING:
        raise ValueError(f"nesting must lie in 1..{MAX_NESTING} (one variable of a..j per operation), got {nesting}")


def generate_program(rng: random.Random, length: int, nesting: int, *, check: bool = True) -> Program:
    """A program of ``nesting`` operations with literals in [1, 10^length], drawn from ``rng`` alone.

    With ``check`` (the default) the program is run by Python (:func:`run_program`) and a
    RuntimeError raised if what it prints is not the generator's value.
    """
    _check_level(length, nesting)
    composer, term = _Composer(rng, length), None
    operations = tuple(rng.choice(_KINDS) for _ in range(nesting))
    for operation in operations:
        term = _OPERATIONS[operation](composer, term)
    code = "\n".join([*composer.lines, f"print({term.expr})"])
    program = Program(code, term.value, length, nesting, operations)
    return _checked(program) if check else program


def sample_program(rng: random.Random, length: int, nesting: int, split: Split) -> Program:
    """A checked program of the given level from ``split``: programs are drawn until one hashes into it."""
    while True:
        program = generate_program(rng, length, nesting, check=False)
        if Split.of(program.code) is split:
            break
    return _checked(program)


def _checked(program: Program) -> Program:
    printed = run_program(program.code)
    if printed != program.target:
        raise RuntimeError(
            f"the generator's value {program.target} is not what Python prints, {printed}:\n{program.code}"
        )
    return program


# The node types of the grammar's programs; anything else is refused before the code runs.
_NODES = (
    ast.Module, ast.Expr, ast.Assign, ast.AugAssign, ast.For, ast.Call, ast.Name, ast.Load, ast.Store,
    ast.Constant, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.IfExp, ast.Compare, ast.Lt, ast.Gt,
)  # fmt: skip
_CALLS = {"print", "range"}


def check_grammar(code: str) -> ast.Module:
    """The program's syntax tree; a ValueError if it has any construct the grammar does not.

    Allowed: assignments and ``+=``/``-=`` to names, ``for x in range(n)``, calls of ``print``
    and ``range``, integer constants, ``+ - *``, conditional expressions comparing by ``<``/``>``.
    """
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ValueError(f"{type(node).__name__} is not in the grammar (line {getattr(node, 'lineno', '?')})")
        if isinstance(node, ast.Constant) and type(node.value) is not int:
            raise ValueError(f"constant {node.value!r} is not an integer")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _CALLS):
            raise ValueError(f"only {sorted(_CALLS)} are called in the grammar (line {node.lineno})")
    return tree


def run_program(code: str) -> str:
    """What Python prints running ``code`` (without the last newline), with only ``print`` and ``range`` defined.

    The code is first checked against the grammar (:func:`check_grammar`): this runs the
    generator's own programs, not arbitrary text.
    """
    tree = check_grammar(code)
    printed: list[str] = []

    def capture(*values: object) -> None:
        printed.append(" ".join(str(value) for value in values))

    exec(compile(tree, "<program>", "exec"), {"__builtins__": {}, "print": capture, "range": range})
    return "\n".join(printed)


class Level(NamedTuple):
    """A program difficulty: literals of up to ``length`` digits, ``nesting`` composed operations."""

    length: int
    nesting: int


class Curriculum(enum.Enum):
    """How training programs' levels are chosen (the names of the authors' code; the paper's in brackets)."""

    BASELINE = "baseline"  # (no curriculum) the target level only
    NAIVE = "naive"  # (naive) a current level, raised as the accuracy at it passes a threshold
    MIX = "mix"  # (mixed) length and nesting uniform up to the target
    BLEND = "blend"  # (combined) part of each batch from mix, the rest from naive's current level


def next_level(level: Level, target: Level) -> Level | None:
    """The naive curriculum's next level: length up to the target's, then nesting up with length 1; None at the end."""
    if level.length < target.length:
        return Level(level.length + 1, level.nesting)
    if level.nesting < target.nesting:
        return Level(1, level.nesting + 1)
    return None


class CurriculumSchedule:
    """The level of every training program under a curriculum, and the naive curriculum's current level.

    :meth:`levels` gives a batch's levels; :meth:`update` takes the model's accuracy at the
    current level (on held-out programs of that level) and moves the level up when it
    exceeds ``threshold`` or when it has stalled: lower than it was ``stall`` updates ago,
    the authors' second rule (theirs on the training accuracy).

    Args:
        curriculum: which curriculum.
        target: the level (L, N) trained for.
        threshold: the accuracy above which the naive level moves up (the authors' 0.95).
        stall: updates at one level after which a lower accuracy than then moves up too; None or 0 never.
        mix_fraction: blend: the share of each batch drawn as mix draws (rounded to whole programs).
        level: the naive curriculum's starting level.
    """

    def __init__(
        self,
        curriculum: Curriculum,
        target: Level,
        *,
        threshold: float = 0.95,
        stall: int | None = 5,
        mix_fraction: float = 0.2,
        level: tuple[int, int] = (1, 1),
    ) -> None:
        if not isinstance(curriculum, Curriculum):
            raise TypeError(f"curriculum must be a Curriculum, got {curriculum!r}")
        target, level = Level(*target), Level(*level)
        _check_level(*target)
        if not (1 <= level.length <= target.length and 1 <= level.nesting <= target.nesting):
            raise ValueError(f"the starting level {tuple(level)} must lie within the target {tuple(target)}")
        if not 0 <= mix_fraction <= 1 or (stall is not None and stall < 0):
            raise ValueError(f"mix_fraction must lie in [0, 1] and stall be >= 0 or None, got {mix_fraction}, {stall}")
        self.curriculum, self.target, self.threshold = curriculum, target, threshold
        self.stall, self.mix_fraction = stall, mix_fraction
        self.level = level
        self._accuracies: list[float] = []

    @property
    def uses_level(self) -> bool:
        """Whether the current level decides any program's level (naive and blend)."""
        return self.curriculum in (Curriculum.NAIVE, Curriculum.BLEND)

    def update(self, accuracy: float) -> bool:
        """Records the accuracy at the current level; True when the level moved up."""
        history = self._accuracies
        stalled = bool(self.stall) and len(history) >= self.stall and history[-self.stall] > accuracy
        if (accuracy > self.threshold or stalled) and (following := next_level(self.level, self.target)):
            self.level, self._accuracies = following, []
            return True
        history.append(accuracy)
        return False

    def _mixed(self, rng: random.Random) -> Level:
        return Level(rng.randint(1, self.target.length), rng.randint(1, self.target.nesting))

    def levels(self, rng: random.Random, count: int) -> list[Level]:
        """The levels of ``count`` training programs, drawn from ``rng``."""
        if self.curriculum is Curriculum.BASELINE:
            return [self.target] * count
        if self.curriculum is Curriculum.NAIVE:
            return [self.level] * count
        if self.curriculum is Curriculum.MIX:
            return [self._mixed(rng) for _ in range(count)]
        mixed = round(self.mix_fraction * count)
        return [self._mixed(rng) for _ in range(mixed)] + [self.level] * (count - mixed)


class ProgramVocabulary:
    """The characters of programs and outputs, one vocabulary for both, after ``<pad>``, ``<bos>``, ``<eos>``.

    Ids: ``pad`` 0, ``bos`` 1, ``eos`` (the stop symbol after an output) 2, then the symbols.
    """

    pad, bos, eos = 0, 1, 2
    #: Digits and ``-`` (outputs), the letters of variables and keywords, operators, brackets, ``:``, ``=``, ``<``, ``>``,
    #: space and newline.
    symbols = "0123456789-abcdefghijklmnopqrstuvwxyz+*()<>=: \n"

    def __init__(self) -> None:
        self._ids = {symbol: index + 3 for index, symbol in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols) + 3

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``'s characters; a ValueError naming the first character outside the vocabulary."""
        try:
            return [self._ids[character] for character in text]
        except KeyError as error:
            position = text.index(error.args[0])
            raise ValueError(
                f"character {error.args[0]!r} (position {position} of {text!r}) is not in the program vocabulary"
            ) from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The text of ``ids`` up to the first ``eos``, without ``pad`` and ``bos``."""
        characters = []
        for index in ids.tolist() if isinstance(ids, Tensor) else ids:
            if index == self.eos:
                break
            if index >= 3:
                characters.append(self.symbols[index - 3])
            elif index != self.pad and index != self.bos:
                raise ValueError(f"id {index} is not in the program vocabulary")
        return "".join(characters)


VOCABULARY = ProgramVocabulary()


# ------------------------------------------------------------------ syntax trees
_STATEMENTS = "Body"
_DIGIT = "digit:"


def program_tree(code: str) -> Tree:
    """The program's Python syntax tree (the grammar's, :func:`check_grammar`) as a :class:`~structnets.graphs.Tree`.

    As :func:`structnets.graphs.trees.tree_from_python` (the arithmetic task's reading of
    source), one node per AST node named by its type or ``Name:<identifier>``, children in
    ``ast.iter_child_nodes`` order, load/store markers left out; two changes keep every
    node's children few and the tokens a closed set:

    * a list of statements (the module's, a loop's body) is a left-nested chain of ``Body``
      nodes, ``Body(Body(Body(s1), s2), s3)``, so no node has more than 3 children (an
      N-ary Tree-LSTM's slots) however many lines a program has, and the last statement is
      read last, nearest the root;
    * an integer literal is a ``Constant`` node over a chain of its digits, the first digit
      the leaf: ``Constant <- digit:3 <- digit:2 <- digit:1`` for 123, so the cell reads the
      digits in order as an LSTM would. A literal as one token would give a vocabulary of
      10^L numbers, most of those at test time never seen in training (``<unk>``): the model
      could not read numbers at all, nor one digit longer than it was trained on.
    """
    root = check_grammar(code)
    parents: list[int | None] = []
    slots: list[int] = []
    tokens: list[str | None] = []

    def add(token: str, parent: int | None, slot: int) -> int:
        parents.append(parent)
        slots.append(slot)
        tokens.append(token)
        return len(parents) - 1

    def statements(body: list[ast.stmt], parent: int, slot: int) -> None:
        # Body(prefix, last): the prefix's chain first, so the root reads the statements in order.
        node = add(_STATEMENTS, parent, slot)
        if len(body) > 1:
            statements(body[:-1], node, 0)
            visit(body[-1], node, 1)
        else:
            visit(body[0], node, 0)

    def visit(node: ast.AST, parent: int | None, slot: int) -> None:
        if isinstance(node, ast.Constant):
            index = add("Constant", parent, slot)
            for digit in reversed(str(node.value)):
                index = add(_DIGIT + digit, index, 0)
            return
        index = add(f"Name:{node.id}" if isinstance(node, ast.Name) else type(node).__name__, parent, slot)
        if isinstance(node, ast.Module):
            statements(node.body, index, 0)
            return
        children: list[ast.AST | list[ast.stmt]] = []
        for _, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                children.append(value)
            elif isinstance(value, list):
                children.extend(v for v in value if isinstance(v, ast.AST) and not isinstance(v, ast.expr_context))
            elif isinstance(value, ast.AST) and not isinstance(value, ast.expr_context):
                children.append(value)
        for k, child in enumerate(children):
            if isinstance(child, list):
                statements(child, index, k)
            else:
                visit(child, index, k)

    visit(root, None, 0)
    return Tree(parents, slots, [None] * len(parents), tokens, "<program>")


#: Every token of :func:`program_tree`'s trees: the grammar's node types, ``Body``, the names
#: (variables ``a..j``, the loop's ``x``, ``print``, ``range``) and the ten digits; ``<unk>`` first.
TREE_VOCABULARY = Vocabulary(
    [
        "<unk>",
        _STATEMENTS,
        *(node.__name__ for node in _NODES if node not in (ast.Load, ast.Store, ast.Name)),
        *(f"Name:{name}" for name in [*_VARIABLES, "x", *sorted(_CALLS)]),
        *(f"{_DIGIT}{digit}" for digit in range(10)),
    ]
)
#: Child slots :func:`program_tree`'s nodes use (``For``: target, iterator, body).
TREE_CHILDREN = 3


@dataclasses.dataclass(frozen=True)
class ProgramBatch:
    """Programs as padded id tensors for a sequence-to-sequence model.

    Attributes:
        source: ``[B, S]`` the programs' characters, padded with ``pad``.
        source_lengths: ``[B]`` characters per program (CPU).
        target_in: ``[B, T]`` ``bos`` then the output's characters (teacher forcing's inputs).
        target_out: ``[B, T]`` the output's characters then ``eos``, padded with ``pad``.
        levels: ``[B, 2]`` each program's length and nesting (CPU).
        trees: the programs' syntax trees (:func:`program_tree`) as one forest, tree ``b`` the
            program of row ``b``; ``None`` unless asked for.
    """

    source: Tensor
    source_lengths: Tensor
    target_in: Tensor
    target_out: Tensor
    levels: Tensor
    trees: TreeBatch | None = None

    def to(self, device: torch.device | str) -> ProgramBatch:
        """The batch with its id tensors on ``device`` (lengths and levels stay on the CPU)."""
        return dataclasses.replace(
            self,
            source=self.source.to(device),
            target_in=self.target_in.to(device),
            target_out=self.target_out.to(device),
            trees=None if self.trees is None else self.trees.to(device),
        )


def _padded(rows: Sequence[Sequence[int]], pad: int) -> Tensor:
    return pad_sequence([torch.tensor(row, dtype=torch.long) for row in rows], batch_first=True, padding_value=pad)


def encode_batch(
    programs: Sequence[Program], vocabulary: ProgramVocabulary = VOCABULARY, *, trees: bool = False
) -> ProgramBatch:
    """The programs' characters in, their outputs' characters out (with the stop symbol), padded.

    With ``trees``, also the programs' syntax trees (:func:`program_tree`, :data:`TREE_VOCABULARY`).
    """
    if not programs:
        raise ValueError("encode_batch needs at least one program")
    sources = [vocabulary.encode(program.code) for program in programs]
    targets = [vocabulary.encode(program.target) for program in programs]
    return ProgramBatch(
        source=_padded(sources, vocabulary.pad),
        source_lengths=torch.tensor([len(source) for source in sources]),
        target_in=_padded([[vocabulary.bos, *target] for target in targets], vocabulary.pad),
        target_out=_padded([[*target, vocabulary.eos] for target in targets], vocabulary.pad),
        levels=torch.tensor([[program.length, program.nesting] for program in programs]),
        trees=batch_trees([program_tree(program.code) for program in programs], TREE_VOCABULARY) if trees else None,
    )
