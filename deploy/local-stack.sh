#!/bin/sh
# The scale-out servers without containers (MLflow server + Prefect server on PostgreSQL, a Prefect worker):
#   deploy/local-stack.sh [--pg postgresql://user@host:5432] [--project DIR] [...]   (--help lists the options)
# Runs deploy/local_stack.py with the project's virtualenv (make install creates .venv).
here=$(cd "$(dirname "$0")" && pwd)
py="${DRIFTLOOP_PYTHON:-$here/../.venv/bin/python}"
[ -x "$py" ] || py=python
exec "$py" "$here/local_stack.py" "$@"
