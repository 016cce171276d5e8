"""The served model and its hot swap: a registry alias followed by a background thread.

``ModelHolder.current`` is one immutable :class:`Served` (model, version, contract, tags). A request reads it once
and scores with it to the end, so a swap never changes the model under a request in flight; the swap itself is
one reference assignment. A moved alias is loaded and verified (``driftloop.artifacts.load_model``: every file's
SHA-256) *before* it replaces anything: a version that fails to load or verify is never switched to, is alerted
once (``driftloop.alerts``) and is not retried until the alias moves again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from driftloop.config import Params
from driftloop.errors import DriftloopError, RegistryError

_log = logging.getLogger("driftloop.serve")

LINEAGE_PREFIXES = ("driftloop.", "mlflow.source.git.commit")
_HIDDEN_TAGS = ("driftloop.manifest",)
_NOT_FOUND = (
    "RESOURCE_DOES_NOT_EXIST",
    "INVALID_PARAMETER_VALUE",
    "NOT_FOUND",
)  # long and of no use to a client (the digest is shown)


@dataclass(frozen=True)
class Served:
    name: str
    alias: str
    version: str
    run_id: str
    model: Any  # driftloop.model.DriftloopModel
    contract: dict
    tags: dict[str, str]
    loaded_at: str

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "version": self.version,
            "alias": self.alias,
            "run_id": self.run_id,
            "task": self.model.task,
            "classes": [str(c) for c in self.model.encoder.classes],
            "loaded_at": self.loaded_at,
            "lineage": self.tags,
        }


def load_served(client, name: str, alias: str, version: str | None = None) -> Served:
    """The version behind ``alias`` (or ``version``), verified; ``RegistryError``/``IntegrityError`` otherwise."""
    from mlflow.exceptions import MlflowException

    from driftloop import artifacts

    ref = version or alias
    try:
        mv = client.get_model_version(name, ref) if ref.isdigit() else client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND:
            kind = "version" if ref.isdigit() else "alias"
            raise RegistryError(f"model '{name}' has no {kind} '{ref}' ({exc.error_code})") from None
        raise RegistryError(f"model '{name}' @{alias}: the registry failed ({exc.error_code})") from None
    except Exception as exc:  # noqa: BLE001 - connection errors of every kind
        raise RegistryError(f"model '{name}' @{alias}: the registry failed ({type(exc).__name__})") from None
    try:
        model = artifacts.load_model(name, mv.version, client)  # SHA-256 of every file checked before reading
    except MlflowException as exc:
        raise RegistryError(f"model '{name}' v{mv.version}: the registry failed ({exc.error_code})") from None
    tags = {
        k: v for k, v in (mv.tags or {}).items() if k.startswith(LINEAGE_PREFIXES) and not k.startswith(_HIDDEN_TAGS)
    }
    loaded_at = datetime.now(UTC).isoformat(timespec="seconds")
    return Served(name, alias, str(mv.version), mv.run_id, model, model.contract(), tags, loaded_at)


@dataclass
class SwapStats:
    swaps: int = 0
    failures: int = 0
    registry_errors: int = 0
    last_error: str | None = None
    failed_versions: set[str] = field(default_factory=set)


class ModelHolder:
    """Holds the served version and follows the alias (``start`` runs :meth:`poll` every ``interval`` seconds)."""

    def __init__(
        self,
        client,
        params: Params,
        alias: str,
        *,
        on_swap: Callable[[Served, Served], None] | None = None,
        alert: Callable[[str, str, dict], None] | None = None,
    ):
        self.client = client
        self.params = params
        self.name = params.base.model_name
        self.alias = alias
        self.stats = SwapStats()
        self._current: Served | None = None
        self._on_swap = on_swap
        self._alert = alert or self._send_alert
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll_lock = threading.Lock()

    @property
    def current(self) -> Served:
        served = self._current
        if served is None:
            raise DriftloopError("no model loaded")
        return served

    @property
    def ready(self) -> bool:
        return self._current is not None

    def load_initial(self) -> Served:
        """At start-up: a missing alias, an unreachable registry or a failed verification is an error."""
        self._current = load_served(self.client, self.name, self.alias)
        return self._current

    def poll(self) -> str:
        """Read the alias once; load, verify and swap in a new version. Returns what happened (for logs/tests)."""
        from mlflow.exceptions import MlflowException

        with self._poll_lock:
            old = self._current
            try:
                mv = self.client.get_model_version_by_alias(self.name, self.alias)
            except MlflowException as exc:
                return self._registry_failed(f"reading @{self.alias} failed ({exc.error_code})")
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind: keep serving
                return self._registry_failed(f"reading @{self.alias} failed ({type(exc).__name__})")
            version = str(mv.version)
            if old is not None and version == old.version:
                return "unchanged"
            if version in self.stats.failed_versions:
                return "refused-before"
            try:
                new = load_served(self.client, self.name, self.alias, version)
            except Exception as exc:  # noqa: BLE001 - never switch to a version that did not load and verify
                self.stats.failures += 1
                self.stats.failed_versions.add(version)
                self.stats.last_error = str(exc)
                _log.error("hot swap to version %s refused: %s", version, exc)
                self._alert(
                    f"driftloop serve: version {version} not served",
                    f"@{self.alias} moved to version {version}, which failed to load or verify; still serving "
                    f"version {old.version if old else 'none'}. {exc}",
                    {"version": version, "serving": old.version if old else None, "error": str(exc)},
                )
                return "refused"
            self._current = new  # one assignment: a request holds the Served it started with
            self.stats.swaps += 1
            _log.info("hot swap: %s @%s %s -> %s", self.name, self.alias, old.version if old else None, version)
            if self._on_swap is not None and old is not None:
                self._on_swap(old, new)
            return "swapped"

    def _registry_failed(self, message: str) -> str:
        self.stats.registry_errors += 1
        if self.stats.registry_errors == 1 or self.stats.last_error != message:
            _log.warning("registry unreachable: %s; still serving", message)
        self.stats.last_error = message
        return "registry-error"

    def _send_alert(self, title: str, message: str, details: dict) -> None:
        from driftloop.alerts import Alert, send_alert

        try:
            send_alert(Alert("error", title, message, f"serve-{self.alias}", details), self.params.alerts)
        except Exception as exc:  # noqa: BLE001 - the alert log unwritable must not stop serving
            _log.error("alert not recorded: %s", exc)

    # ------------------------------------------------------------------ background polling
    def start(self, interval: float) -> None:
        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.poll()
                except Exception:  # noqa: BLE001 - the poller never dies
                    _log.exception("alias poll failed")

        self._thread = threading.Thread(target=loop, name="driftloop-alias-poll", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
