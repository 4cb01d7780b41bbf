"""Which feedback store ids are accounted for (merged into the labels, or held in a quarantine)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmchain.artifacts import read_json, write_json
from lmchain.home import Home


@dataclass
class Watermark:
    """Which store ids are accounted for: merged into the labels, or held in a quarantine.

    ``last_id``: every id up to it. ``spans``: ``(after, last]`` ranges beyond it that a merge has
    accounted for too; there are any only when two merges finished out of order (two runs on one
    home), and they fold into ``last_id`` once the gap below them is merged. Only merge writes it,
    under the labels lock; export only reads it.
    """

    last_id: int = 0
    spans: list[list[int]] = field(default_factory=list)
    run_id: str | None = None
    counts: dict[str, int] | None = None

    @classmethod
    def read(cls, home: Home | Path) -> "Watermark":
        data = read_json(Home.of(home).watermark, {})
        return cls(
            int(data.get("last_id", 0)),
            [list(s) for s in data.get("spans", [])],
            data.get("run_id"),
            data.get("counts"),
        )

    def write(self, home: Home | Path) -> None:
        write_json(Home.of(home).watermark, {**dataclasses.asdict(self), "at": time.time()})

    def covers(self, store_id: int) -> bool:
        return store_id <= self.last_id or any(a < store_id <= b for a, b in self.spans)

    def add(self, after: int, last: int) -> None:
        if last > after:
            self.spans.append([after, last])
        spans: list[list[int]] = []
        for a, b in sorted(self.spans):
            if b <= self.last_id:
                continue
            if a <= self.last_id:
                self.last_id = b
            elif spans and a <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], b)
            else:
                spans.append([a, b])
        # A span that reached last_id may now touch the next one: fold until there is a gap.
        while spans and spans[0][0] <= self.last_id:
            self.last_id = max(self.last_id, spans.pop(0)[1])
        self.spans = spans
