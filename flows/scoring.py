"""The scoring flow: predictions of @champion for a batch, with the model version that made them."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

try:
    from flows.monitoring import read_batch
    from flows.training import RETRY_DELAYS, load_project_params, retry_unless_bad_input
except ModuleNotFoundError:  # loaded by file path (a Prefect entrypoint) from outside the project root
    from monitoring import read_batch
    from training import RETRY_DELAYS, load_project_params, retry_unless_bad_input


@task(
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=retry_unless_bad_input,
    cache_policy=NO_CACHE,
)
def score(params, df, out: str) -> dict[str, Any]:
    from driftloop import loop

    return loop.score_batch(params, df, out)


@flow(name="driftloop-scoring", log_prints=True)
def scoring_flow(batch: str, out: str, params_path: str = "params.yaml", project: str = ".") -> dict[str, Any]:
    """Score ``batch`` (file/glob, ``sql:...``, ``sim://...``) with @champion into the Parquet file ``out``."""
    from prefect.artifacts import create_markdown_artifact

    root = Path(project).resolve()
    with contextlib.chdir(root):
        params = load_project_params(root, params_path)
        batch_id, df = read_batch(batch, params)
        result = {**score(params, df, out), "batch_id": batch_id}
        create_markdown_artifact(
            key="driftloop-scoring",
            description=f"batch {batch_id} scored",
            markdown=(
                f"# driftloop scoring\n\n| | |\n|---|---|\n| Batch | {batch_id} |\n| Rows | {result['rows']} |\n"
                f"| Model | {result['model']} version {result['version']} (@champion) |\n"
                f"| Predictions | `{result['out']}` |\n"
            ),
        )
        get_run_logger().info(
            "%s rows scored by %s v%s -> %s", result["rows"], result["model"], result["version"], result["out"]
        )
        return result


if __name__ == "__main__":  # pragma: no cover
    import sys

    scoring_flow(sys.argv[1], sys.argv[2])
