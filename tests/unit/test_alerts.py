"""Alerts: JSON-lines log + Apprise delivery to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from driftloop.alerts import Alert, alert_urls, send_alert
from driftloop.config import AlertsParams

FAST = "cto=1&rto=1"


class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("DRIFTLOOP_ALERT_URLS", raising=False)


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alert(status: str = "warn", **kw) -> Alert:
    defaults = {
        "title": f"driftloop: {status} on batch 2024-07",
        "message": "Drift share 0.45 over 9 columns",
        "batch_id": "2024-07",
        "details": {"drift_share": 0.45, "drifted_columns": ["income", "age"]},
    }
    return Alert(status=status, **{**defaults, **kw})


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_payload_reaches_json_webhook_and_is_logged(receiver, tmp_path):
    port = receiver.server_address[1]
    log = tmp_path / "nested" / "alerts.jsonl"
    params = AlertsParams(urls=[f"json://127.0.0.1:{port}/hook?{FAST}"], log_path=str(log))

    outcome = send_alert(_alert("retrain"), params, env={})

    assert outcome.sent and outcome.urls == 1 and outcome.errors == []
    assert outcome.logged_to == str(log)
    [req] = receiver.received
    payload = json.loads(req["body"])
    assert req["path"] == "/hook"
    assert payload["title"] == "driftloop: retrain on batch 2024-07"
    assert "Drift share 0.45 over 9 columns" in payload["message"]
    assert payload["type"] == "failure"
    [line] = _lines(log)
    assert line["delivered"] is True and line["notified"] is True
    assert line["details"]["drifted_columns"] == ["income", "age"]


def test_warn_maps_to_warning(receiver, tmp_path):
    params = AlertsParams(urls=[f"json://127.0.0.1:{receiver.server_address[1]}/?{FAST}"], log_path=str(tmp_path / "a"))
    assert send_alert(_alert("warn"), params, env={}).sent
    assert json.loads(receiver.received[0]["body"])["type"] == "warning"


def test_log_is_append_only(tmp_path):
    log = tmp_path / "alerts.jsonl"
    params = AlertsParams(urls=[], log_path=str(log))
    send_alert(_alert("warn", batch_id="b1"), params, env={})
    send_alert(_alert("retrain", batch_id="b2"), params, env={})
    lines = _lines(log)
    assert [(x["batch_id"], x["status"]) for x in lines] == [("b1", "warn"), ("b2", "retrain")]
    assert all(x["created_at"].endswith("+00:00") and x["delivered"] is False for x in lines)


def test_status_not_in_on_is_logged_not_sent(receiver, tmp_path):
    log = tmp_path / "alerts.jsonl"
    url = f"json://127.0.0.1:{receiver.server_address[1]}/?{FAST}"
    params = AlertsParams(urls=[url], log_path=str(log), notify_on=["retrain"])

    for status in ("warn", "ok"):
        outcome = send_alert(_alert(status), params, env={})
        assert not outcome.sent and outcome.urls == 0 and outcome.errors == []

    assert receiver.received == []
    assert [(x["status"], x["notified"], x["delivered"]) for x in _lines(log)] == [
        ("warn", False, False),
        ("ok", False, False),
    ]


def test_unreachable_url_does_not_raise(closed_port, tmp_path):
    log = tmp_path / "alerts.jsonl"
    params = AlertsParams(urls=[f"json://127.0.0.1:{closed_port}/?{FAST}"], log_path=str(log))

    outcome = send_alert(_alert("error"), params, env={})

    assert outcome.sent is False and outcome.urls == 1
    assert len(outcome.errors) == 1 and "127.0.0.1" in outcome.errors[0]
    [line] = _lines(log)
    assert line["delivered"] is False and line["errors"] == outcome.errors


@pytest.mark.parametrize("bad", ["not a url", "nosuchscheme://host/x", "json://"])
def test_invalid_url_does_not_raise(bad, receiver, tmp_path):
    good = f"json://127.0.0.1:{receiver.server_address[1]}/?{FAST}"
    params = AlertsParams(urls=[bad, good], log_path=str(tmp_path / "alerts.jsonl"))

    outcome = send_alert(_alert("warn"), params, env={})

    assert outcome.sent is True and outcome.urls == 2  # the good target still gets it
    assert len(outcome.errors) == 1 and "invalid" in outcome.errors[0]
    assert len(receiver.received) == 1
    assert _lines(tmp_path / "alerts.jsonl")[0]["errors"] == outcome.errors


def test_env_urls_are_added(receiver, tmp_path, monkeypatch):
    port = receiver.server_address[1]
    params = AlertsParams(urls=[f"json://127.0.0.1:{port}/a?{FAST}"], log_path=str(tmp_path / "alerts.jsonl"))
    env = {"DRIFTLOOP_ALERT_URLS": f" json://127.0.0.1:{port}/b?{FAST} ,, json://127.0.0.1:{port}/a?{FAST}"}

    assert alert_urls(params, env) == [f"json://127.0.0.1:{port}/a?{FAST}", f"json://127.0.0.1:{port}/b?{FAST}"]
    assert alert_urls(params, {}) == params.urls
    monkeypatch.setenv("DRIFTLOOP_ALERT_URLS", env["DRIFTLOOP_ALERT_URLS"])
    assert alert_urls(params) == alert_urls(params, env)  # default: os.environ

    outcome = send_alert(_alert("retrain"), params)
    assert outcome.sent and outcome.urls == 2
    assert sorted(r["path"] for r in receiver.received) == ["/a", "/b"]


def test_no_secret_in_log(receiver, closed_port, tmp_path):
    log = tmp_path / "alerts.jsonl"
    urls = [
        f"json://user:s3cret@127.0.0.1:{receiver.server_address[1]}/?{FAST}",
        f"json://user:s3cret@127.0.0.1:{closed_port}/?{FAST}",
        "nosuchscheme://user:s3cret@127.0.0.1/",
    ]
    outcome = send_alert(_alert("retrain"), AlertsParams(urls=urls, log_path=str(log)), env={})

    assert outcome.sent and len(outcome.errors) == 2
    assert receiver.received[0]["auth"].startswith("Basic ")  # credentials were used for delivery
    text = log.read_text(encoding="utf-8")
    assert "s3cret" not in text and "s3cret" not in " ".join(outcome.errors)
    assert len(_lines(log)[0]["targets"]) == 3


def test_unknown_status_rejected():
    with pytest.raises(ValueError, match="unknown alert status"):
        _alert("panic")
