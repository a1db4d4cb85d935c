# tierwise service image: serve-only dependencies from the lock, non-root, the default model baked in.
#   docker build -t tierwise .
#   docker run -p 8000:8000 tierwise
#   docker run -p 8000:8000 -v /path/to/model:/models/default:ro tierwise   # serve another model folder
# Settings are TIERWISE_* environment variables (serving/tierwise/service/settings.py). SIGTERM
# drains: uvicorn stops accepting, lets in-flight requests finish for TIERWISE_GRACEFUL_SHUTDOWN_SECONDS, then exits.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY tests/requirements-lock.txt tests/requirements-lock.txt
COPY serving serving
# Versions come from the lock (pip constraints); extras: the service, its decision log, PostgreSQL.
RUN /opt/venv/bin/pip install --no-compile -c tests/requirements-lock.txt ".[serve,feedback,postgres]"

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /home/tierwise --create-home tierwise \
    && mkdir /data && chown tierwise /data
COPY --from=build /opt/venv /opt/venv
COPY models/default /models/default
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TIERWISE_HOST=0.0.0.0 \
    TIERWISE_PORT=8000 \
    TIERWISE_WORKERS=2 \
    TIERWISE_MODEL_DIR=/models/default \
    TIERWISE_DECISION_DB=sqlite:////data/decisions.sqlite \
    TIERWISE_GRACEFUL_SHUTDOWN_SECONDS=25
USER 10001
WORKDIR /home/tierwise
EXPOSE 8000
VOLUME ["/data"]
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["python", "-m", "tierwise.service"]
