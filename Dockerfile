# syntax=docker/dockerfile:1
# `driftloop serve` in a container: the registered model behind an alias over REST (docs/serving.md).
#   docker build -t driftloop-serve .
#   docker run -p 8000:8000 -e MLFLOW_TRACKING_URI=http://mlflow:5000 -e DRIFTLOOP_SERVE_TOKEN=... \
#     -v "$PWD/params.yaml:/app/params.yaml:ro" -v "$PWD/data/predictions:/app/data/predictions" driftloop-serve
# The model is not baked in: the server loads and verifies the alias's version from the registry at start and
# follows the alias (hot swap). tests/unit/test_dockerfile.py parses this file; the same entrypoint is started as a
# process by tests/integration/test_serve_process.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /app
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# the pinned set first (a layer that changes only with the lock), then the package
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
RUN pip install -c requirements.lock . \
    && useradd --create-home --uid 10001 driftloop \
    && mkdir -p /app/data/predictions /app/reports \
    && chown -R driftloop /app/data /app/reports
COPY params.yaml ./

USER driftloop
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
# SIGTERM (docker stop): in-flight requests finish (serve.graceful_shutdown_s), the prediction log is flushed
STOPSIGNAL SIGTERM
ENTRYPOINT ["driftloop", "serve", "--host", "0.0.0.0", "--port", "8000"]
