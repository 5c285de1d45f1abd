"""The model mapping of typed config, without etcd: nesting, dataclass building, the
safe conversions and nothing more, pydantic models, and the keys an error names."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Literal, Optional, Union

import pytest

from etcdsync import errors
from etcdsync.config_model_types import (
    ModelError,
    build_dataclass,
    error_keys,
    nest,
    resolve_model,
)


class Mode(enum.Enum):
    FAST = "fast"
    SAFE = "safe"


@dataclasses.dataclass
class Inner:
    host: str
    port: int = 5432


@dataclasses.dataclass
class Outer:
    db: Inner
    ratio: float = 1.0
    debug: bool = False
    mode: Mode = Mode.SAFE
    level: Literal["low", "high"] = "low"
    note: Optional[str] = None  # noqa: UP045 (the typing.Optional form is supported too)
    either: Union[int, str] = 0  # noqa: UP007
    ports: list[int] = dataclasses.field(default_factory=list)
    pair: tuple[str, int] = ("a", 1)
    limits: dict[str, int] = dataclasses.field(default_factory=dict)
    extra: Any = None


def test_nest_splits_keys_and_merges_object_values() -> None:
    assert nest({"db/host": "h", "db/port": 1, "x": 2}) == {"db": {"host": "h", "port": 1}, "x": 2}
    assert nest({"db": {"host": "h"}, "db/port": 1}) == {"db": {"host": "h", "port": 1}}
    with pytest.raises(ModelError) as raised:
        nest({"db": 5, "db/port": 1, "a//b": 1, "c": {"d": 1}, "c/d": 2})
    assert set(raised.value.problems) == {"db/port", "a//b", "c/d"}


def test_dataclass_with_the_safe_conversions_only() -> None:
    build = resolve_model(Outer)
    value = build(
        {
            "db/host": "h",
            "db/port": "6432",  # a str holding an integer (decode="text")
            "ratio": 2,  # an int where a float is expected
            "debug": "TRUE",
            "mode": "fast",
            "level": "high",
            "either": "x",
            "ports": [1, "2"],
            "pair": ["b", 2],
            "limits/cpu": 3,
            "extra": {"any": ["thing"]},
            "unknown/key": 1,  # no such field: ignored
        }
    )
    assert value == Outer(
        db=Inner("h", 6432),
        ratio=2.0,
        debug=True,
        mode=Mode.FAST,
        level="high",
        either="x",
        ports=[1, 2],
        pair=("b", 2),
        limits={"cpu": 3},
        extra={"any": ["thing"]},
    )
    assert isinstance(value.ratio, float)
    # Every problem, each under its key; never a number for a str, a bool for an int,
    # a float for an int.
    with pytest.raises(ModelError) as raised:
        build(
            {
                "db/port": True,
                "db/host": 1.10,
                "ratio": "1.5x",
                "mode": "slow",
                "level": "mid",
                "note": 5,
                "ports": [1.5],
                "pair": ["b"],
            }
        )
    problems = raised.value.problems
    assert set(problems) == {
        "db/port",
        "db/host",
        "ratio",
        "mode",
        "level",
        "note",
        "ports/0",
        "pair",
    }
    assert "expected str, got float 1.1" in problems["db/host"]
    assert error_keys(raised.value) == tuple(sorted(problems))


def test_missing_required_fields_and_defaults() -> None:
    with pytest.raises(ModelError) as raised:
        build_dataclass(Outer, {})
    assert raised.value.problems == {"db/host": "missing (required)"}

    @dataclasses.dataclass
    class AllDefaults:
        inner: Inner = dataclasses.field(default_factory=lambda: Inner("default"))
        size: int = 1

    assert build_dataclass(AllDefaults, {}) == AllDefaults()

    @dataclasses.dataclass
    class Checked:
        size: int

        def __post_init__(self) -> None:
            if self.size < 0:
                raise ValueError("negative")

    with pytest.raises(ModelError, match="negative"):
        build_dataclass(Checked, {"size": -1})


def test_models_that_are_refused_at_once() -> None:
    for model in (dict, Inner(host="x"), 42, "Settings"):
        with pytest.raises(errors.InvalidRequest):
            resolve_model(model)


def test_pydantic_model_validate_and_its_error_keys() -> None:
    pydantic = pytest.importorskip(
        "pydantic", reason="pydantic is not installed (pip install 'etcdsync[test]')"
    )

    class Db(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        host: str
        port: int

    class Model(pydantic.BaseModel):  # type: ignore[misc, name-defined]
        db: Db

    build = resolve_model(Model)
    assert build({"db/host": "h", "db/port": "5"}) == Model(db=Db(host="h", port=5))
    with pytest.raises(pydantic.ValidationError) as raised:
        build({"db/host": "h", "db/port": "x"})
    assert error_keys(raised.value) == ("db/port",)
