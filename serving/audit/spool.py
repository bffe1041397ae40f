"""Records waiting on disk while the database is down (or the queue is full), replayed later.

A JSON-lines file in the user data dir (0600): the same rows the database would hold, nothing
more; image bytes only for kept images, which the user consented to store. Appends and replays
are serialised by a lock per process and an atomic rename across processes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

Item = tuple[str, Mapping[str, Any]]


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "$dt" in value:
        return dt.datetime.fromisoformat(value["$dt"])
    if isinstance(value, dict) and "$b64" in value:
        return base64.b64decode(value["$b64"])
    return value


class Spool:
    """Append items now; :meth:`take` them all (atomically) when the database is back."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, items: Iterable[Item]) -> int:
        lines = [
            json.dumps({"kind": kind, "row": {k: _encode(v) for k, v in row.items()}}) + "\n"
            for kind, row in items
        ]
        if not lines:
            return 0
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a") as out:
                out.writelines(lines)
        return len(lines)

    def __len__(self) -> int:
        try:
            with open(self.path) as lines:
                return sum(1 for _ in lines)
        except FileNotFoundError:
            return 0

    def take(self) -> list[Item]:
        """Every spooled item, removing the file; a half-written last line is dropped."""
        with self._lock:
            claimed = self.path.with_name(f"{self.path.name}.{os.getpid()}.replay")
            try:
                os.replace(self.path, claimed)
            except FileNotFoundError:
                return []
            text = claimed.read_text()
            claimed.unlink()
        items: list[Item] = []
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            items.append((entry["kind"], {k: _decode(v) for k, v in entry["row"].items()}))
        return items
