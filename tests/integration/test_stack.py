"""The production stack on real servers, as processes: ``deploy/local_stack.py`` starts ``mlflow server`` (backend
store on PostgreSQL, proxied artifacts) and ``prefect server start`` on PostgreSQL; Optuna's study lives on
PostgreSQL too. Through them: the training flow with 2 ``driftloop tune-worker`` processes joining its tune stage,
then the monitoring flow on a drifted batch, which retrains through the training subflow, then a guarded promote
and a rollback serialized by the PostgreSQL advisory lock.

Every database is created for this test (a random prefix) and dropped at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from conftest import BIN, PG_URL, ROOT, copy_project_files, pg_database, small_params, write_params

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

MODEL = "driftloop"
N_TRIALS = 6
DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from flows import monitoring, training
step = sys.argv[2]
if step == "train":
    out = training.training_flow()
else:
    out = monitoring.monitoring_flow("sim://2025-08?rows=3000&seed=5&covariate_shift=2&concept_drift=2")
print("RESULT " + json.dumps(out, default=str))
"""


def _server_url() -> str:
    import sqlalchemy as sa

    pg_database("postgres")  # skips with a reason when the server is unreachable
    return sa.engine.make_url(PG_URL).set(drivername="postgresql", database=None).render_as_string(False)


def _result(res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_training_monitoring_retraining_and_promotion_through_real_servers(tmp_path):
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        from local_stack import Stack
    finally:
        sys.path.remove(str(ROOT / "deploy"))
    import optuna
    from mlflow.tracking import MlflowClient

    proj = tmp_path / "proj"
    proj.mkdir()
    copy_project_files(proj)
    params = small_params(proj, **{"tune.n_trials": N_TRIALS, "tune.study_name": "stack"})
    params["base"]["tracking_uri"] = "sqlite:///unused.db"  # the environment's server wins (connection setting)
    write_params(proj / "params.yaml", params)
    stack = Stack(
        pg=_server_url(),
        prefix=f"dlstack_{uuid.uuid4().hex[:8]}",
        dir=tmp_path / "stack",
        project=proj,
        mlflow_port=0,
        prefect_port=0,
        worker=False,
        drop_on_exit=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "DRIFTLOOP_"))}
    env.update(PATH=BIN + os.pathsep + env.get("PATH", ""), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    try:
        stack.start(timeout=240)
        env.update(stack.client_env())
        assert env["MLFLOW_TRACKING_URI"].startswith("http://")

        def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
            res = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True, timeout=600)
            assert not check or res.returncode == 0, f"{cmd}: {res.returncode}\n{res.stdout[-3000:]}\n{res.stderr}"
            return res

        for cmd in (
            ("git", "init", "-q"),
            ("git", "config", "user.email", "ci@example.invalid"),
            ("git", "config", "user.name", "ci"),
            ("dvc", "init", "-q"),
            ("dvc", "config", "core.analytics", "false"),
            ("driftloop", "run", "split"),  # the data stages, so the workers have split files to tune on
        ):
            sh(*cmd)

        # training: the Prefect flow (reporting to the server) while two workers join its Optuna study
        workers = [
            subprocess.Popen(
                ["driftloop", "tune-worker", "--split-dir", "data/split"],
                cwd=proj,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        first = _result(sh(sys.executable, "-c", DRIVER, str(ROOT), "train", check=False))
        outs = [w.communicate(timeout=600) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outs
        assert (first["registered"], first["version"], first["alias"]) == (True, "1", "champion")

        study = optuna.load_study(study_name="stack", storage=stack.optuna_storage)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        assert states.count("COMPLETE") + states.count("PRUNED") == N_TRIALS and "RUNNING" not in states
        assert study.user_attrs["driftloop.workers"] >= 2  # each process that asked for trials took its own seed

        client = MlflowClient(stack.tracking_uri)
        mv = client.get_model_version_by_alias(MODEL, "champion")
        assert str(mv.version) == "1"
        # proxied artifacts: the clients never touch the store's files; the server wrote them
        run = client.get_run(first["run_id"])
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        assert any((tmp_path / "stack" / "mlartifacts").rglob("booster.txt"))
        assert not (proj / "mlartifacts").exists() and not (proj / "unused.db").exists()

        # monitoring through the server: drift -> retrain (the training subflow) -> the gate
        result = _result(sh(sys.executable, "-c", DRIVER, str(ROOT), "monitor", check=False))
        assert result["status"] == "retrain", result["decision"]
        assert result["retrain"]["registered"], result["retrain"]
        new = result["retrain"]["version"]
        assert client.get_model_version(MODEL, new).tags["driftloop.trigger.batch_id"] == result["batch_id"]

        # the Prefect server holds both flow runs, the retraining as a subflow of the monitoring run
        import httpx

        for run_id, parent in (
            (first["pipeline"]["flow_run_id"], False),
            (result["retrain"]["training_flow_run_id"], True),
        ):
            fr = httpx.get(f"{stack.prefect_api_url}/flow_runs/{run_id}", timeout=30).json()
            assert fr["state"]["type"] == "COMPLETED", fr["state"]
            assert (fr["parent_task_run_id"] is not None) == parent

        # alias moves on the server, serialized by the PostgreSQL advisory lock (DRIFTLOOP_REGISTRY_LOCK_URL)
        champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
        other = "1" if champion != "1" else new
        refused = sh("driftloop", "promote", other, "--expect-current", "99", check=False)
        assert refused.returncode == 1 and "nothing changed" in " ".join(refused.stderr.split())
        sh("driftloop", "promote", other, "--expect-current", champion, "--reason", "stack test")
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == other
        sh("driftloop", "rollback", "--expect-current", other)
        assert str(client.get_model_version_by_alias(MODEL, "champion").version) == champion
        history = sh("driftloop", "history").stdout
        assert "rollback" in history and "stack test" in history

        # the verified load works against the server too (every file's SHA-256 checked after the download)
        from driftloop import artifacts

        assert artifacts.load_model(MODEL, "champion", client).task == "binary"
    finally:
        stack.stop()
        print("\n".join(stack.tail(n, 20) for n in ("mlflow", "prefect-server")))
