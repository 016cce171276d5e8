"""The prediction log: every served row with its prediction, model version, request id and time, as partitioned
Parquet (``<serve.log_dir>/date=YYYY-MM-DD/part-*.parquet``), plus delayed ground truth (``labels/``).

Requests only append a ready frame to an in-memory buffer (a lock and a list append); a writer thread flushes it
every ``log_flush_s`` seconds or ``log_flush_rows`` rows, one file per day per flush, each written to a temporary
name and renamed into place (``driftloop.io.write_parquet_atomic``): a reader never sees half a file. Beyond
``log_max_buffered_rows`` unwritten rows, new rows are dropped and counted rather than slowing requests down.

:func:`read_period` gives monitoring the rows served in a time window with their labels joined by key.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from driftloop.contract import Columns
from driftloop.errors import DataError

_log = logging.getLogger("driftloop.serve")

SERVED_AT = "served_at"
META_COLUMNS = ("model_name", "model_version", "request_id", "row", SERVED_AT)
LABELS_DIR = "labels"
WATERMARK_FILE = "_monitored.json"


@dataclass(frozen=True)
class Entry:
    """One scored request, as the request handed it over (no conversion on the request path); turned into log rows
    on the writer thread."""

    rows: Columns  # the raw rows (they passed the contract)
    predictions: dict[str, np.ndarray]  # DriftloopModel.outputs
    contract: dict
    model_name: str
    model_version: str
    request_id: str
    served_at: datetime  # UTC

    def __len__(self) -> int:
        return len(self.rows)


def to_frame(entries: list[Entry]) -> pd.DataFrame:
    """Log rows of many requests: the requests of one version are converted together (one ``typed_frame`` per
    run of entries, not one per request, so the writer thread holds the GIL briefly)."""
    from driftloop.contract import typed_frame
    from driftloop.monitor import _norm_value

    frames = []
    i = 0
    while i < len(entries):
        j = i + 1
        while j < len(entries) and entries[j].contract is entries[i].contract:
            j += 1
        group = entries[i:j]
        contract = group[0].contract
        ids = [c for c in contract.get("ignored") or [] if any(c in e.rows.data for e in group)]
        names = [*contract["columns"], *ids]
        data = {c: list(chain.from_iterable(e.rows.data.get(c) or [None] * len(e) for e in group)) for c in names}
        sizes = [len(e) for e in group]
        typed = typed_frame(contract, Columns(names, data, sum(sizes)))
        extra: dict[str, object] = {}
        for col in ids:  # ids travel with their predictions (the labels' key)
            extra[col] = pd.array([_norm_value(v) for v in data[col]], dtype="string")  # 7, 7.0, "7": "7"
        for col in group[0].predictions:
            extra[col] = np.concatenate([e.predictions[col] for e in group])
        extra["model_name"] = np.repeat([e.model_name for e in group], sizes)
        extra["model_version"] = np.repeat([e.model_version for e in group], sizes)
        extra["request_id"] = np.repeat([e.request_id for e in group], sizes)
        extra["row"] = np.concatenate([np.arange(n) for n in sizes])
        served = pd.DatetimeIndex([e.served_at for e in group]).tz_convert("UTC").tz_localize(None)
        extra[SERVED_AT] = np.repeat(served.to_numpy(), sizes)
        frames.append(pd.concat([typed, pd.DataFrame(extra, index=typed.index)], axis=1))
        i = j
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


class PredictionLog:
    def __init__(self, directory: str | Path, *, flush_rows: int, flush_s: float, max_buffered_rows: int):
        self.directory = Path(directory)
        self.flush_rows, self.flush_s, self.max_buffered = flush_rows, flush_s, max_buffered_rows
        self._buffer: list[Entry] = []
        self._buffered = 0
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()  # one writer at a time (the thread, close(), tests)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written_rows = 0
        self.dropped_rows = 0
        self.files = 0
        self.errors = 0

    @property
    def buffered(self) -> int:
        return self._buffered

    def append(self, entry: Entry) -> bool:
        """Queue a scored request (no conversion here); False when it was dropped (buffer full)."""
        with self._lock:
            if self._buffered + len(entry) > self.max_buffered:
                self.dropped_rows += len(entry)
                return False
            self._buffer.append(entry)
            self._buffered += len(entry)
            full = self._buffered >= self.flush_rows
        if full:
            self._wake.set()
        return True

    def flush(self) -> int:
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        with self._lock:
            entries, self._buffer, self._buffered = self._buffer, [], 0
        if not entries:
            return 0
        from driftloop.io import write_parquet_atomic

        try:
            frame = to_frame(entries)
        except Exception as exc:  # noqa: BLE001 - never lose the writer thread
            self.errors += 1
            self.dropped_rows += sum(len(e) for e in entries)
            _log.error("prediction log: %d rows could not be converted: %s", sum(len(e) for e in entries), exc)
            return 0
        days = frame[SERVED_AT].dt.strftime("%Y-%m-%d")
        written = 0
        for day, part in frame.groupby(days, sort=True):
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            path = self.directory / f"date={day}" / f"part-{stamp}-{uuid.uuid4().hex[:8]}.parquet"
            try:
                write_parquet_atomic(part.reset_index(drop=True), path)
            except Exception as exc:  # noqa: BLE001 - a full disk must not stop serving: counted, logged
                self.errors += 1
                self.dropped_rows += len(part)
                _log.error("prediction log: %d rows not written to %s: %s", len(part), path, exc)
                continue
            written += len(part)
            self.files += 1
        self.written_rows += written
        return written

    def start(self) -> None:
        # what the first flush needs, imported now: an import holds the GIL, so at the first flush it would stall
        # every request in flight for as long as pyarrow takes to import
        import pyarrow.parquet  # noqa: F401

        from driftloop import io  # noqa: F401
        from driftloop.contract import typed_frame  # noqa: F401

        def loop() -> None:
            while not self._stop.is_set():
                self._wake.wait(self.flush_s)
                self._wake.clear()
                self.flush()

        self._thread = threading.Thread(target=loop, name="driftloop-prediction-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write what is buffered (graceful shutdown)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.flush()


# --------------------------------------------------------------------------- reading the log back
def _files(directory: Path, since: datetime | None, until: datetime | None) -> list[Path]:
    out = []
    for part in sorted(directory.glob("date=*")):
        day = part.name.removeprefix("date=")
        if since is not None and day < since.strftime("%Y-%m-%d"):
            continue
        if until is not None and day > until.strftime("%Y-%m-%d"):
            continue
        out += sorted(part.glob("part-*.parquet"))
    return out


def _naive_utc(ts: datetime | None) -> pd.Timestamp | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def read_log(directory: str | Path, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """Rows served in ``(since, until]`` (UTC), oldest first."""
    directory = Path(directory)
    files = _files(directory, since, until)
    if not files:
        return pd.DataFrame()
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    served = frame[SERVED_AT]
    served = served.dt.tz_convert("UTC").dt.tz_localize(None) if served.dt.tz is not None else served
    keep = pd.Series(True, index=frame.index)
    if since is not None:
        keep &= served > _naive_utc(since)
    if until is not None:
        keep &= served <= _naive_utc(until)
    return frame[keep].sort_values([SERVED_AT, "request_id", "row"], kind="stable").reset_index(drop=True)


def add_labels(directory: str | Path, labels: pd.DataFrame, key: str, target: str, where: str) -> dict:
    """Record delayed ground truth: ``labels[key] -> labels[target]`` under ``<log>/labels/`` (atomic)."""
    from driftloop.io import write_parquet_atomic

    for col in (key, target):
        if col not in labels.columns:
            raise DataError(f"{where}: no column {col!r} (columns: {', '.join(map(str, labels.columns[:20]))})")
    if labels.empty:
        raise DataError(f"{where}: no rows")
    from driftloop.monitor import _norm_value  # 1331, 1331.0 and "1331" are one key

    keys = labels[key]
    if keys.isna().any():
        raise DataError(f"{where}: column {key!r} has missing keys (row {int(keys.isna().to_numpy().argmax())})")
    keys = keys.map(_norm_value)
    dup = keys.duplicated()
    if dup.any():
        raise DataError(f"{where}: key column {key!r} repeats a key (row {int(dup.to_numpy().argmax())})")
    if labels[target].isna().any():
        raise DataError(f"{where}: column {target!r} has missing labels (row {int(labels[target].isna().argmax())})")
    now = datetime.now(UTC)
    frame = pd.DataFrame(
        {
            "key_column": key,
            "key": keys.to_numpy(dtype=object),
            "label": labels[target].astype(str).to_numpy(),
            "labeled_at": pd.Timestamp(now),
        }
    )
    path = Path(directory) / LABELS_DIR / f"part-{now.strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
    write_parquet_atomic(frame, path)
    logged = read_log(directory)
    matched = 0
    if not logged.empty and key in logged.columns:
        matched = int(logged[key].map(_norm_value).isin(set(frame["key"])).sum())
    return {"labels": len(frame), "matched_rows": matched, "file": str(path)}


def join_labels(directory: str | Path, frame: pd.DataFrame, target: str, classes: list | None = None) -> pd.DataFrame:
    """``frame`` with a ``target`` column from the labels recorded so far (the latest label of a key wins)."""
    from driftloop.monitor import _norm_value

    files = sorted((Path(directory) / LABELS_DIR).glob("part-*.parquet"))
    if frame.empty or not files:
        return frame
    labels = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    labels = labels.sort_values("labeled_at", kind="stable").drop_duplicates(["key_column", "key"], keep="last")
    out = frame.copy()
    values = pd.Series(pd.NA, index=out.index, dtype=object)
    for key_column, group in labels.groupby("key_column"):
        if key_column not in out.columns:
            continue
        mapped = out[key_column].map(_norm_value).map(dict(zip(group["key"], group["label"], strict=True)))
        values = values.where(values.notna(), mapped)
    if values.notna().any():
        by_text = {str(c): c for c in classes or []}  # labels are stored as text: back to the model's class values
        out[target] = values.map(lambda v: by_text.get(v, v) if isinstance(v, str) else v)
    return out


def _watermark(directory: str | Path) -> dict:
    path = Path(directory) / WATERMARK_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data["until"] = datetime.fromisoformat(data["until"])
        return data
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: unreadable watermark ({exc}); delete it to monitor the whole log") from None


def read_watermark(directory: str | Path) -> datetime | None:
    """The end of the last monitored period (None before the first)."""
    return _watermark(directory).get("until")


def write_watermark(directory: str | Path, until: datetime, batch_id: str, files: list[str] | None = None) -> None:
    """Record a monitored period: its end and the log files read for it (``files``: see :func:`read_period`)."""
    from driftloop.io import write_bytes_atomic

    data = {
        "until": until.isoformat(),
        "batch_id": batch_id,
        "written_at": datetime.now(UTC).isoformat(),
        "files": sorted(files or []),
    }
    write_bytes_atomic(json.dumps(data).encode(), Path(directory) / WATERMARK_FILE)


def _day(ts: datetime) -> str:
    t = pd.Timestamp(ts)
    return (t.tz_convert("UTC") if t.tzinfo is not None else t).strftime("%Y-%m-%d")


def read_rows(
    directory: str | Path, since: datetime | None, until: datetime, seen: set[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The rows of a monitoring period, each row of the log in exactly one period: rows served in ``(since, until]``,
    plus rows served at or before ``since`` that are in a file no earlier period read (a flush that landed after
    that period was read: late, never skipped). Files of the day before ``since`` and later are considered.
    Returns the rows (oldest first) and the files to remember for the next period (those of the day before
    ``until`` and later: the next period considers no older file)."""
    from datetime import timedelta

    directory = Path(directory)
    floor = None if since is None else since - timedelta(days=1)
    files = _files(directory, floor, until)
    lo, hi = _naive_utc(since), _naive_utc(until)
    frames = []
    for f in files:
        frame = pd.read_parquet(f)
        served = frame[SERVED_AT]
        served = served.dt.tz_convert("UTC").dt.tz_localize(None) if served.dt.tz is not None else served
        keep = served <= hi
        if lo is not None:
            late = f.relative_to(directory).as_posix() not in seen
            keep &= (served > lo) | late
        frames.append(frame[keep])
    keep_from = _day(until - timedelta(days=1))
    remember = [f.relative_to(directory).as_posix() for f in files if f.parent.name.removeprefix("date=") >= keep_from]
    if not frames:
        return pd.DataFrame(), remember
    frame = pd.concat(frames, ignore_index=True)
    return frame.sort_values([SERVED_AT, "request_id", "row"], kind="stable").reset_index(drop=True), remember


def read_period(params, until: datetime | None = None) -> tuple[datetime | None, datetime, pd.DataFrame, list[str]]:
    """The next monitoring batch of the log: the rows served after the watermark up to ``until`` (default: now minus
    twice the flush interval and a second, so rows served before ``until`` are normally written by then; a later
    flush is picked up by the next period, see :func:`read_rows`), as the model's input columns, ids and the labels
    joined so far (predictions and request metadata dropped). Also returns the files for :func:`write_watermark`."""
    from datetime import timedelta

    cfg = params.serve
    mark = _watermark(cfg.log_dir)
    since = mark.get("until")
    until = until or datetime.now(UTC) - timedelta(seconds=2 * cfg.log_flush_s + 1)
    frame, files = read_rows(cfg.log_dir, since, until, set(mark.get("files") or []))
    if frame.empty:
        return since, until, frame, files
    meta = [c for c in frame.columns if c in META_COLUMNS or c == "prediction" or str(c).startswith("proba_")]
    classes = sorted(pd.unique(frame["prediction"].dropna()).tolist(), key=str) if "prediction" in frame else []
    batch = join_labels(cfg.log_dir, frame.drop(columns=meta), params.base.target, classes)
    return since, until, batch, files
