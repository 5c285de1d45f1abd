"""Parse the Prometheus exposition an etcd member serves at ``/metrics``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["MetricSample", "Metrics"]


@dataclass(frozen=True)
class MetricSample:
    """One Prometheus series value."""

    name: str
    labels: Mapping[str, str]
    value: float


_LABEL_RE = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _parse_sample(line: str) -> MetricSample | None:
    brace = line.find("{")
    space = line.find(" ")
    labels: dict[str, str] = {}
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        pos = brace + 1
        while True:
            match = _LABEL_RE.match(line, pos)
            if match is None:
                break
            labels[match.group(1)] = _unescape(match.group(2))
            pos = match.end()
        end = line.find("}", pos)
        if end == -1:
            return None
        rest = line[end + 1 :].split()
    else:
        name, *rest = line.split()
    if not rest:
        return None
    try:
        value = float(rest[0])
    except ValueError:
        return None
    return MetricSample(name=name, labels=labels, value=value)


class Metrics(dict[str, float]):
    """Parsed ``/metrics``: metric name -> sum over all of its series.

    Summing is what most assertions need (``etcd_server_is_leader``, request counters).
    The individual series are in :attr:`samples` and the raw exposition in :attr:`text`.
    Histogram parts keep their suffixed names (``..._bucket``, ``..._sum``, ``..._count``).
    """

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.samples: list[MetricSample] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            sample = _parse_sample(line)
            if sample is None:
                continue
            self.samples.append(sample)
            self[sample.name] = self.get(sample.name, 0.0) + sample.value

    def series(self, name: str, **labels: str) -> list[MetricSample]:
        """Samples of ``name`` whose labels include all of ``labels``."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
