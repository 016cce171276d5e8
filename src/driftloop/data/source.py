"""Source stage: a fingerprint of the data ``ingest`` will read, so DVC reruns ingest when — and only when — it changes.

DVC tracks files it is told about. The file a user points at (``ingest.path``) lives outside the
pipeline, may be a URL, may be replaced by a query, and has no value at all for the simulator, so it
cannot be a plain ``deps:`` entry of ``dvc.yaml`` (DVC 3 fails on a templated ``${ingest.path}`` that
is null). Instead the ``source`` stage, marked ``always_changed``, runs first on every ``dvc repro`` /
``driftloop run`` and writes a small JSON fingerprint that the ingest stage depends on. DVC then
compares the fingerprint's hash with ``dvc.lock`` as for any dependency:

- **local file** (CSV/Parquet, ``ingest.path`` a path): the fingerprint holds the path, the read options
  and the file's size and MD5. The MD5 is cached by (size, mtime, inode) next to the fingerprint, so an
  unchanged file is not read again: the stage costs one ``stat``. Edit or replace the file and ingest
  reruns; the stages after it rerun only when ``data/raw.parquet``'s hash changes.
- **SQL** (``ingest.source: sql``) and **remote URLs** (``s3://``, ``https://``...): there is no cheap,
  reliable way to know whether the result changed, so the policy is *ingest always re-reads*: the
  fingerprint records the time of the read, ingest reruns on every run and writes a new snapshot, and
  the stages after it rerun only when the snapshot's hash (``data/raw.parquet`` in ``dvc.lock``)
  changes — for a query, give it an ``ORDER BY`` so the same rows give the same snapshot. ``dvc.lock``
  records each re-read (ingest's fingerprint hash changes every run).
- **simulator**: the fingerprint is constant; the simulator's settings are params of the ingest stage.

The fingerprint (``.dvc/tmp/driftloop/source.json`` in ``dvc.yaml``: not committed, ``dvc.lock`` holds its
hash) is a dependency of ingest, not an output of this stage, so ``dvc.lock`` changes only when ingest
succeeds: a source that fails to ingest leaves ``dvc.lock`` exactly as it was. The stage's declared
output is a constant stamp that only orders it before ingest. ``dvc status`` lists ``source`` as
"always changed": DVC cannot know about a file outside the pipeline without looking; ``dvc repro`` looks.

Secrets never land in the fingerprint (nor, therefore, in ``dvc.lock``): URLs are recorded without
their password and query string, and the values of ``read_options.storage_options`` are left out
(only their keys are recorded: rotating a credential is not a change of data). ``ingest.sql.url`` is
not a param of any stage.

This module imports neither pandas nor pyarrow: the stage must stay cheap on every no-op run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from driftloop.config import Params, redact_url_parts
from driftloop.errors import DataError
from driftloop.faults import fault_point, register_point

BEFORE_WRITE = register_point(
    "ingest.source_before_write", "driftloop source (run/dvc repro): fingerprint computed, before it is written"
)

ALWAYS_REREAD = "always re-read"  # the policy recorded for SQL and remote sources
STAMP = b"driftloop source stage: orders it before ingest (the fingerprint is a dependency of ingest)\n"
_CHUNK = 1 << 20


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _mask_sql_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable SQL URL>"


def _safe_options(options: dict[str, Any]) -> dict[str, Any]:
    """Read options as recorded: ``storage_options`` (credentials) by key only."""
    out = dict(options)
    if isinstance(out.get("storage_options"), dict):
        out["storage_options"] = sorted(out["storage_options"])
    return out


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _cached_md5(path: Path, cache_file: Path | None) -> str:
    """The file's MD5, computed again only when its (size, mtime, inode) changed (cache: ``cache_file``)."""
    st = path.stat()
    key = str(path.resolve())
    stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
    cache: dict[str, Any] = {}
    if cache_file is not None:
        with contextlib.suppress(OSError, ValueError):
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
    hit = cache.get(key) if isinstance(cache, dict) else None
    if isinstance(hit, dict) and hit.get("stamp") == stamp and isinstance(hit.get("md5"), str):
        return hit["md5"]
    md5 = _md5(path)
    if cache_file is not None:
        cache = cache if isinstance(cache, dict) else {}
        cache[key] = {"stamp": stamp, "md5": md5}
        with contextlib.suppress(OSError):
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(cache), encoding="utf-8")
            os.replace(tmp, cache_file)
    return md5


def fingerprint(
    params: Params, md5_cache: str | Path | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """What identifies the data ``ingest`` will read (see the module docstring); no secret in it.

    ``md5_cache``: a JSON file remembering local files' MD5 by (size, mtime, inode).
    """
    cache = Path(md5_cache) if md5_cache is not None else None
    env = dict(os.environ) if env is None else env
    ing = params.ingest
    if ing.source == "simulate":
        return {"source": "simulate"}  # the simulator's settings are params of the ingest stage
    if ing.source == "sql":
        return {
            "source": "sql",
            "url": _mask_sql_url(env.get("DRIFTLOOP_SQL_URL") or ing.sql.url),
            "query": ing.sql.query,
            "table": ing.sql.table,
            "policy": ALWAYS_REREAD,
            "read_at": dt.datetime.now(dt.UTC).isoformat(),
        }
    path = str(ing.path)
    record: dict[str, Any] = {"source": ing.source, "read_options": _safe_options(ing.read_options)}
    if _is_url(path):
        record.update(path=redact_url_parts(path), policy=ALWAYS_REREAD, read_at=dt.datetime.now(dt.UTC).isoformat())
        return record
    local = Path(path.removeprefix("file://"))
    record["path"] = path
    if not local.exists():
        raise DataError(f"{path}: file not found (ingest.path)")
    if local.is_dir():  # a partitioned Parquet dataset: every file's size and hash
        files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))
        record["files"] = {
            str(p.relative_to(local)): {"size": p.stat().st_size, "md5": _cached_md5(p, cache)} for p in files
        }
        return record
    record.update(size=local.stat().st_size, md5=_cached_md5(local, cache))
    return record


def _write_if_changed(data: bytes, out: Path) -> bool:
    if out.exists() and out.read_bytes() == data:
        return False  # unchanged bytes keep their mtime: DVC does not even hash them again
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)
    return True


def source(params: Params, fingerprint_out: str | Path, stamp_out: str | Path) -> dict[str, Any]:
    """Write the fingerprint (and the constant stamp); returns the fingerprint and whether it changed."""
    out = Path(fingerprint_out)
    record = fingerprint(params, out.with_name(f"{out.stem}-md5-cache.json"))
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode()
    fault_point(BEFORE_WRITE)
    changed = _write_if_changed(data, out)
    _write_if_changed(STAMP, Path(stamp_out))
    return {**record, "changed": changed}
