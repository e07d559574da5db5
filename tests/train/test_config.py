"""Configs <-> command-line flags <-> JSON: one generic mapping."""

import argparse
import dataclasses
import enum
from pathlib import Path

import pytest

from structnets.train.config import add_arguments, field_help, from_args, from_dict, to_dict
from structnets.train.engine import LRSchedule, TrainConfig


class Colour(enum.Enum):
    RED = "red"
    DARK_BLUE = "dark-blue"


@dataclasses.dataclass(frozen=True)
class Example:
    """An example config.

    Attributes:
        name: what the run is called,
            on two lines.
        size: how big.
        colour: which colour.
        rate: a rate, or none.
        shade: a colour, or none.
        tags: any number of tags.
        path: where.
        flag: a switch.
        train: the engine's settings.
    """

    name: str = "x"
    size: int = 3
    colour: Colour = Colour.RED
    rate: float | None = None
    shade: Colour | None = Colour.RED
    tags: tuple[str, ...] = ("a", "b")
    path: Path = Path("out")
    flag: bool = True
    hidden: int = dataclasses.field(default=1, metadata={"cli": False})
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(steps=10, lr=0.5))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Example)
    return parser


def test_defaults_round_trip_through_the_parser():
    assert from_args(Example, _parser().parse_args([])) == Example()


def test_every_kind_of_flag_parses():
    args = _parser().parse_args(
        "--name y --size 5 --colour dark-blue --rate 0.1 --tags p q r --path /tmp/z --no-flag "
        "--steps 7 --schedule cosine --max-train-seconds 30 --no-progress".split()
    )
    config = from_args(Example, args)
    assert config == Example(
        name="y",
        size=5,
        colour=Colour.DARK_BLUE,
        rate=0.1,
        tags=("p", "q", "r"),
        path=Path("/tmp/z"),
        flag=False,
        train=TrainConfig(steps=7, lr=0.5, schedule=LRSchedule.COSINE, max_seconds=30.0, progress=False),
    )


def test_help_comes_from_the_docstring_with_defaults():
    text = _parser().format_help()
    assert "what the run is called, on two lines (default: x)" in " ".join(text.split())
    assert "--hidden" not in text
    assert "(default: 0.5)" in text  # the task's own default for the engine's lr
    help_of = field_help(TrainConfig)
    assert all(help_of.get(f.name) for f in dataclasses.fields(TrainConfig)), "every engine field documented"


def test_an_optional_field_takes_none_on_the_command_line(capsys):
    config = from_args(Example, _parser().parse_args("--rate 0.2 --rate none --shade none".split()))
    assert config.rate is None and config.shade is None
    assert from_args(Example, _parser().parse_args(["--shade", "dark-blue"])).shade is Colour.DARK_BLUE
    assert "{red,dark-blue,none}" in _parser().format_help()
    with pytest.raises(SystemExit):
        _parser().parse_args(["--colour", "none"])  # not optional: none is no colour
    assert "red, dark-blue" in capsys.readouterr().err


def test_a_bad_enum_value_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--colour", "green"])
    assert "red, dark-blue" in capsys.readouterr().err


def test_json_round_trip_and_unknown_keys():
    config = Example(colour=Colour.DARK_BLUE, tags=("z",), train=TrainConfig(epochs=2, schedule=LRSchedule.PLATEAU))
    data = to_dict(config)
    assert data["colour"] == "dark-blue" and data["train"]["schedule"] == "plateau" and data["tags"] == ["z"]
    assert from_dict(Example, data) == config
    with pytest.raises(ValueError, match="no field"):
        from_dict(Example, {**data, "surprise": 1})


def test_fields_without_a_flag_keep_the_given_defaults():
    parser = argparse.ArgumentParser()
    defaults = Example(size=9, train=TrainConfig(steps=3, lr=0.2))
    add_arguments(parser, Example, defaults=defaults, exclude=("size", "lr"))
    config = from_args(Example, parser.parse_args([]), defaults=defaults)
    assert config.size == 9 and config.train.lr == 0.2 and config.train.steps == 3


def test_shared_fields_builds_a_model_config_from_a_task_config():
    from structnets.train.config import shared_fields

    @dataclasses.dataclass(frozen=True)
    class Model:
        size: int
        colour: Colour = Colour.RED
        depth: int = 2

    assert shared_fields(Model, Example(size=7, colour=Colour.DARK_BLUE)) == Model(7, Colour.DARK_BLUE, 2)
    assert shared_fields(Model, Example(size=7), size=1, depth=5) == Model(1, Colour.RED, 5)
