"""Drift alerts: a local JSON-lines log for every alert, plus Apprise notifications.

Every call to :func:`send_alert` appends exactly one line to ``params.log_path``. Statuses
listed in ``params.notify_on`` are also sent to every Apprise URL (``params.urls`` plus the
comma-separated ``DRIFTLOOP_ALERT_URLS``). A bad URL or a failed delivery never raises: it is
recorded in ``AlertOutcome.errors`` and in the log line, so monitoring cannot crash on a broken
webhook. Targets are logged in Apprise's privacy form; URLs Apprise cannot parse are logged as
``scheme://***``, so secrets never reach the log.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import apprise

from driftloop.config import AlertsParams

ENV_URLS = "DRIFTLOOP_ALERT_URLS"

NOTIFY_TYPES: dict[str, apprise.NotifyType] = {
    "ok": apprise.NotifyType.INFO,
    "warn": apprise.NotifyType.WARNING,
    "insufficient_data": apprise.NotifyType.WARNING,  # too few rows to judge: logged, not notified by default
    "retrain": apprise.NotifyType.FAILURE,
    "schema_violation": apprise.NotifyType.FAILURE,
    "error": apprise.NotifyType.FAILURE,
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Alert:
    status: str  # ok | warn | insufficient_data | retrain | schema_violation | error
    title: str
    message: str  # human-readable summary (markdown ok)
    batch_id: str
    details: dict = field(default_factory=dict)  # JSON-serializable evidence
    created_at: str = field(default_factory=_now)  # ISO-8601 UTC

    def __post_init__(self) -> None:
        if self.status not in NOTIFY_TYPES:
            raise ValueError(f"unknown alert status {self.status!r}; expected one of {sorted(NOTIFY_TYPES)}")


@dataclass(frozen=True)
class AlertOutcome:
    sent: bool  # at least one URL was notified successfully
    logged_to: str  # path of the JSON-lines log
    urls: int  # number of targets a notification was attempted for (0 when the status is not in `on`)
    errors: list[str] = field(default_factory=list)


def alert_urls(params: AlertsParams, env: Mapping[str, str] | None = None) -> list[str]:
    """Configured Apprise URLs plus those in ``DRIFTLOOP_ALERT_URLS``, stripped and de-duplicated."""
    env = os.environ if env is None else env
    extra = (env.get(ENV_URLS) or "").split(",")
    urls = (u.strip() for u in [*params.urls, *extra])
    return list(dict.fromkeys(u for u in urls if u))


def _redacted(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://***" if sep else "***"


def _notify(url: str, alert: Alert) -> tuple[str, bool, str | None]:
    """Send ``alert`` to one URL; return (loggable target, delivered, error). Never raises."""
    target = _redacted(url)
    try:
        client = apprise.Apprise()
        if not client.add(url) or not len(client):
            return target, False, f"{target}: invalid or unsupported Apprise URL"
        target = ", ".join(client.urls(privacy=True))
        with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            ok = client.notify(
                body=alert.message,
                title=alert.title,
                notify_type=NOTIFY_TYPES[alert.status],
                body_format=apprise.NotifyFormat.MARKDOWN,
            )
        if ok:
            return target, True, None
        reason = " ".join(captured.getvalue().split()) or "delivery failed"
        return target, False, f"{target}: {reason}"
    except Exception as exc:  # a broken webhook must never crash monitoring
        return target, False, f"{target}: {type(exc).__name__}"


def send_alert(alert: Alert, params: AlertsParams, env: Mapping[str, str] | None = None) -> AlertOutcome:
    """Log ``alert`` (always) and notify every URL when its status is in ``params.notify_on``.

    Delivery problems are returned in ``errors``; only a failure to write the local log raises.
    """
    notified = alert.status in params.notify_on
    results = [_notify(url, alert) for url in alert_urls(params, env)] if notified else []
    errors = [err for _, _, err in results if err]
    sent = any(ok for _, ok, _ in results)
    record = {
        **asdict(alert),
        "notified": notified,
        "delivered": sent,
        "targets": [target for target, _, _ in results],
        "errors": errors,
    }
    path = Path(params.log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    return AlertOutcome(sent=sent, logged_to=str(path), urls=len(results), errors=errors)
