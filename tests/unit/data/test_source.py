"""The source stage's fingerprint: a changed local file changes it, an unchanged one is not re-read, SQL and
remote sources are always re-read, and no secret is ever written."""

from __future__ import annotations

import json
import time

import pytest

from driftloop.config import Params
from driftloop.data import source as src


def params(**ingest) -> Params:
    return Params.model_validate({"ingest": ingest})


def test_local_file_fingerprint_follows_the_content(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,0\n")
    fp, stamp = tmp_path / "fp" / "source.json", tmp_path / "source.stamp"
    p = params(source="csv", path=str(data), read_options={"sep": ","})
    first = src.source(p, fp, stamp)
    assert first["changed"] and first["size"] == data.stat().st_size and len(first["md5"]) == 32
    assert first["read_options"] == {"sep": ","}
    mtime = fp.stat().st_mtime_ns
    assert not src.source(p, fp, stamp)["changed"]
    assert fp.stat().st_mtime_ns == mtime  # unchanged bytes are not rewritten
    stamp_bytes = stamp.read_bytes()
    data.write_text("a,y\n2,1\n")  # same size, new content
    second = src.source(p, fp, stamp)
    assert second["changed"] and second["md5"] != first["md5"]
    assert stamp.read_bytes() == stamp_bytes  # the stage's own output never changes


def test_unchanged_file_is_not_hashed_again(tmp_path, monkeypatch):
    data = tmp_path / "d.parquet"
    data.write_bytes(b"x" * 1000)
    fp = tmp_path / "source.json"
    p = params(source="parquet", path=str(data))
    calls = []
    real = src._md5
    monkeypatch.setattr(src, "_md5", lambda path: calls.append(path) or real(path))
    src.source(p, fp, tmp_path / "stamp")
    src.source(p, fp, tmp_path / "stamp")
    assert len(calls) == 1  # the (size, mtime, inode) cache answered the second time
    time.sleep(0.01)
    data.write_bytes(b"y" * 1000)
    src.source(p, fp, tmp_path / "stamp")
    assert len(calls) == 2


def test_simulator_fingerprint_is_constant(tmp_path):
    assert src.fingerprint(params()) == {"source": "simulate"}


def test_sql_and_remote_are_always_reread_and_never_hold_secrets(tmp_path):
    p = params(source="sql", sql={"url": "postgresql://bob:s3cret@db.example/prod", "query": "select 1"})
    a = src.fingerprint(p, env={})
    time.sleep(0.002)
    b = src.fingerprint(p, env={})
    assert a["policy"] == b["policy"] == src.ALWAYS_REREAD and a["read_at"] != b["read_at"]
    assert "s3cret" not in json.dumps(a) and "db.example/prod" in a["url"]
    env = {"DRIFTLOOP_SQL_URL": "postgresql://eve:topsecret@other/db"}
    assert "topsecret" not in json.dumps(src.fingerprint(p, env=env))
    remote = params(
        source="csv",
        path="https://u:pw@host.example/data.csv?X-Amz-Signature=abc",
        read_options={"storage_options": {"key": "AKIA", "secret": "hush"}},
    )
    rec = src.fingerprint(remote)
    text = json.dumps(rec)
    assert rec["policy"] == src.ALWAYS_REREAD
    for secret in ("pw", "abc", "AKIA", "hush"):
        assert f'"{secret}' not in text and f":{secret}@" not in text and f"={secret}" not in text
    assert rec["read_options"] == {"storage_options": ["key", "secret"]}


def test_missing_local_source_is_named(tmp_path):
    from driftloop.errors import DataError

    with pytest.raises(DataError, match="nope.csv: file not found"):
        src.fingerprint(params(source="csv", path=str(tmp_path / "nope.csv")))


def test_source_module_does_not_import_pandas():
    import subprocess
    import sys

    code = "import sys, driftloop.data.source; print('pandas' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
