"""Serve every driftloop flow from one local process: ``python flows/serve.py``.

The deployments (names, entrypoints, parameters, tags, schedules) are those of ``prefect.yaml``,
read from it, so the schedules are declared once. No work pool or worker: this process polls
Prefect for scheduled and triggered runs and runs each in a subprocess, from the project root.
Without ``PREFECT_API_URL`` Prefect starts its local (ephemeral) server; with ``prefect server
start`` running, point ``PREFECT_API_URL`` at it to get the UI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def deployment_specs(prefect_yaml: str | Path = ROOT / "prefect.yaml") -> list[dict[str, Any]]:
    import yaml

    return yaml.safe_load(Path(prefect_yaml).read_text(encoding="utf-8"))["deployments"]


def to_deployments(prefect_yaml: str | Path = ROOT / "prefect.yaml") -> list:
    """``flow.to_deployment(...)`` for every deployment of prefect.yaml (run from the project root)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.schedules import Cron

    deployments = []
    for spec in deployment_specs(prefect_yaml):
        flow = load_flow_from_entrypoint(spec["entrypoint"])
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone"), active=s.get("active", True))
            for s in spec.get("schedules") or []
        ]
        deployments.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags"),
                parameters=spec.get("parameters") or {},
                schedules=schedules,
            )
        )
    return deployments


def main() -> None:
    from prefect import serve

    os.chdir(ROOT)  # entrypoints, dvc.yaml and params.yaml are relative to the project root
    sys.path.insert(0, str(ROOT))  # `import flows.training` in the flow runs
    serve(*to_deployments())


if __name__ == "__main__":
    main()
