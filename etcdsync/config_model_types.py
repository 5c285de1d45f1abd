"""Typed config: the keys of a snapshot, nested, turned into a model instance; pure.

``client.config(prefix, model=Settings)`` builds one ``Settings`` per snapshot
with :func:`resolve_model`.  The keys (relative to the prefix) are split on
``/`` into nested mappings - ``db/host`` becomes ``{"db": {"host": ...}}`` - by
:func:`nest`, then:

* a **dataclass** is built field by field, nested dataclasses included, by this
  module (no dependency).  Values are checked against the field types; the only
  conversions are the safe ones listed in :func:`build_dataclass`;
* any class with a ``model_validate`` classmethod (a pydantic v2 model) is
  handed the nested mapping: ``Settings.model_validate(nested)``.  Its rules
  (coercion, extra keys, validators) apply; pydantic is not a dependency.

A state that does not fit raises :class:`ModelError` (a ``ValueError`` listing
every problem with its key) or the model's own exception; the config watcher
rejects that state and keeps the last good instance.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from .errors import InvalidRequest

__all__ = ["ModelError", "build_dataclass", "error_keys", "nest", "resolve_model"]

ModelBuilder = Callable[[Mapping[str, Any]], Any]
"""Builds the model instance from a snapshot's flat keys; raises on a bad state."""

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_MISSING = object()


class ModelError(ValueError):
    """A state that does not fit the model; ``problems`` maps each key (``db/port``,
    ``""`` for the whole state) to what is wrong with it."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__(
            "; ".join(f"{key or '(root)'}: {what}" for key, what in sorted(self.problems.items()))
        )


def nest(flat: Mapping[str, Any], *, sep: str = "/") -> dict[str, Any]:
    """Nest flat keys: ``{"db/host": "h", "db/port": 1}`` -> ``{"db": {"host": "h", "port": 1}}``.

    A key whose value is a mapping (a JSON object) is merged with the keys below
    it (``db`` = ``{"host": "h"}`` next to ``db/port``).  Raises :class:`ModelError`
    for an empty path segment (``a//b``, a leading or trailing ``/``) and for a
    key that is both a value and a parent (``db`` = ``5`` next to ``db/port``).
    """
    root: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key in sorted(flat):
        parts = key.split(sep)
        if any(not part for part in parts):
            problems[key] = "empty path segment in the key"
            continue
        try:
            _merge_into(root, parts, flat[key], key)
        except ModelError as exc:
            problems.update(exc.problems)
    if problems:
        raise ModelError(problems)
    return root


def _merge_into(node: dict[str, Any], parts: list[str], value: Any, key: str) -> None:
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part, _MISSING)
        if child is _MISSING:
            child = node[part] = {}
        elif isinstance(child, Mapping) and not isinstance(child, dict):
            child = node[part] = dict(child)
        elif not isinstance(child, dict):
            parent = "/".join(parts[: depth + 1])
            raise ModelError({key: f"{parent!r} holds a value, so it cannot have keys below it"})
        node = child
    last = parts[-1]
    existing = node.get(last, _MISSING)
    if existing is _MISSING:
        node[last] = dict(value) if isinstance(value, Mapping) else value
    elif isinstance(existing, dict) and isinstance(value, Mapping):
        for sub, item in value.items():
            _merge_into(existing, [str(sub)], item, f"{key}/{sub}")
    else:
        raise ModelError({key: "set twice (as a key and inside an object value)"})


def resolve_model(model: object) -> ModelBuilder:
    """The function that builds ``model`` from a snapshot's flat keys.

    ``model`` is a dataclass type or a class with ``model_validate`` (pydantic v2);
    anything else raises :class:`~etcdsync.errors.InvalidRequest` at once.
    """
    if isinstance(model, type) and dataclasses.is_dataclass(model):
        cls = model

        def build(flat: Mapping[str, Any]) -> Any:
            return build_dataclass(cls, nest(flat))

        return build
    validate = getattr(model, "model_validate", None)
    if isinstance(model, type) and callable(validate):

        def validate_model(flat: Mapping[str, Any]) -> Any:
            return validate(nest(flat))

        return validate_model
    raise InvalidRequest(
        f"model must be a dataclass or a class with model_validate (pydantic), got {model!r}"
    )


def error_keys(exc: BaseException) -> tuple[str, ...]:
    """The keys (``db/port``) a model error names: :class:`ModelError`'s own, or
    the ``loc`` of each entry of a pydantic ``ValidationError.errors()``."""
    if isinstance(exc, ModelError):
        return tuple(sorted(key for key in exc.problems if key))
    errors_of = getattr(exc, "errors", None)
    if not callable(errors_of):
        return ()
    try:
        entries = errors_of()
        keys = {"/".join(str(part) for part in entry["loc"]) for entry in entries}
    except Exception:
        return ()
    return tuple(sorted(key for key in keys if key))


# --- dataclasses ------------------------------------------------------------------------


def build_dataclass(cls: type[Any], data: Mapping[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from the nested mapping ``data``.

    Each field takes the value at its name (a nested dataclass takes the mapping
    below it); a field that is absent takes its default, and a required one is
    an error.  Keys that match no field are ignored (so a key added before the
    program that reads it is deployed breaks nothing).  Values are checked
    against the field's type:

    * ``str``, ``int``, ``float``, ``bool``: the value must have that type, with
      these conversions only: an ``int`` where a ``float`` is expected; a
      ``str`` holding exactly an integer / a number / ``true`` or ``false``
      (case-insensitive) where an ``int`` / ``float`` / ``bool`` is expected (for
      values read with ``decode="text"``).  Never a number to ``str`` (an
      unquoted ``1.10`` is the number 1.1), never a ``bool`` for an ``int``.
    * ``X | None`` / ``Optional[X]``: ``null`` or an ``X``; other unions: the
      first member the value fits as it is, else the first it converts to.
    * ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``set[X]``,
      ``frozenset[X]``, ``dict[str, X]`` (and their bare forms): from a JSON
      array / object, each item checked.
    * ``Literal[...]``: one of the listed values; an ``Enum``: a member, by value.
    * ``Any`` / ``object``: the value as it is; any other class: the value must
      already be an instance of it.
    """
    problems: dict[str, str] = {}
    instance = _build(cls, data, "", problems)
    if problems:
        raise ModelError(problems)
    return instance


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _hints(cls: type[Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception as exc:  # an annotation that does not resolve
        raise InvalidRequest(f"cannot read the field types of {cls.__name__}: {exc}") from exc


def _build(cls: type[Any], data: Any, path: str, problems: dict[str, str]) -> Any:
    if not isinstance(data, Mapping):
        problems[path] = f"expected an object for {cls.__name__}, got {_show(data)}"
        return None
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        where = _join(path, field.name)
        if field.name in data:
            value = _convert(hints.get(field.name, Any), data[field.name], where, problems)
            kwargs[field.name] = value
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            kind = hints.get(field.name, Any)
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                # A nested dataclass whose keys are all absent: its defaults may do.
                kwargs[field.name] = _build(kind, {}, where, problems)
            else:
                problems[where] = "missing (required)"
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except Exception as exc:  # __post_init__ may validate further
        problems[path] = f"{cls.__name__}(...) raised {exc!r}"
        return None


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _convert(kind: Any, value: Any, path: str, problems: dict[str, str]) -> Any:
    fits, converted = _fit(kind, value, path, problems, convert=True)
    if not fits and path not in problems:
        problems[path] = f"expected {_type_name(kind)}, got {_show(value)}"
    return converted


def _type_name(kind: Any) -> str:
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def _fit(
    kind: Any, value: Any, path: str, problems: dict[str, str], *, convert: bool
) -> tuple[bool, Any]:
    """(does ``value`` fit ``kind``, the value to use).  Problems inside containers
    and nested dataclasses are recorded in ``problems`` (and count as fitting, so
    the message names the innermost key)."""
    if kind is Any or kind is object:
        return True, value
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if value is None:
            return type(None) in args, None
        members = [arg for arg in args if arg is not type(None)]
        partial: tuple[Any, dict[str, str]] | None = None
        for strict in (True, False) if convert else (True,):
            for member in members:
                trial: dict[str, str] = {}
                ok, result = _fit(member, value, path, trial, convert=not strict)
                if ok and not trial:
                    return True, result
                if ok and partial is None:
                    partial = (result, trial)  # e.g. an object that almost fits a dataclass
        if partial is not None:
            problems.update(partial[1])
            return True, partial[0]
        return False, value
    if origin is typing.Literal:
        for allowed in args:
            if value == allowed and type(value) is type(allowed):
                return True, value
        return False, value
    if kind is type(None):
        return value is None, value
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        if not isinstance(value, Mapping):
            return False, value
        return True, _build(kind, value, path, problems)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if isinstance(value, kind):
            return True, value
        try:
            return True, kind(value)
        except ValueError:
            return False, value
    if kind in (bool, int, float, str):
        return _scalar(kind, value, convert)
    if origin in (list, set, frozenset) or kind in (list, set, frozenset):
        container = origin or kind
        if not isinstance(value, list):
            return False, value
        item = args[0] if args else Any
        items = [
            _convert(item, element, f"{path}/{index}", problems)
            for index, element in enumerate(value)
        ]
        try:
            return True, container(items)
        except TypeError:  # unhashable items for a set
            return False, value
    if origin is tuple or kind is tuple:
        if not isinstance(value, list):
            return False, value
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            item = args[0] if args else Any
            return True, tuple(
                _convert(item, element, f"{path}/{index}", problems)
                for index, element in enumerate(value)
            )
        if len(args) != len(value):
            return False, value
        return True, tuple(
            _convert(item, element, f"{path}/{index}", problems)
            for index, (item, element) in enumerate(zip(args, value, strict=True))
        )
    if origin is dict or kind is dict or origin is Mapping or kind is Mapping:
        if not isinstance(value, Mapping):
            return False, value
        key_kind, item = (args[0], args[1]) if args else (Any, Any)
        if key_kind not in (str, Any):
            raise InvalidRequest(f"{path}: only str keys are supported in a mapping field")
        return True, {
            str(key): _convert(item, element, _join(path, str(key)), problems)
            for key, element in value.items()
        }
    if isinstance(kind, type):
        return isinstance(value, kind), value
    raise InvalidRequest(f"{path}: unsupported field type {_type_name(kind)}")


def _scalar(kind: type, value: Any, convert: bool) -> tuple[bool, Any]:
    if kind is bool:
        if isinstance(value, bool):
            return True, value
        if convert and isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
        return False, value
    if isinstance(value, bool):
        return False, value  # True is an int in Python, never a number here
    if kind is int:
        if isinstance(value, int):
            return True, value
        if convert and isinstance(value, str) and _INT.fullmatch(value):
            return True, int(value)
        return False, value
    if kind is float:
        if isinstance(value, float):
            return True, value
        if isinstance(value, int) and convert:
            return True, float(value)
        if convert and isinstance(value, str) and _FLOAT.fullmatch(value):
            return True, float(value)
        return False, value
    return isinstance(value, str), value
