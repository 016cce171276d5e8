-- Run once by the postgres image on an empty volume (docker-entrypoint-initdb.d): one database per store.
-- MLflow and Optuna both keep an alembic_version table, so they never share a database.
CREATE DATABASE driftloop_mlflow;
CREATE DATABASE driftloop_prefect;
CREATE DATABASE driftloop_optuna;
