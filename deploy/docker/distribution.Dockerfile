# syntax=docker/dockerfile:1.7
# The Distribution: registry <-> Store transfers; holds no state. Build from the repository root:
#   docker build -f deploy/docker/distribution.Dockerfile -t modelrunner/distribution:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelrunner
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modelrunner modelrunner
COPY protos protos
COPY services services
COPY gateway gateway
RUN /opt/modelrunner/bin/pip install ".[distribution]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelrunner/bin:$PATH PYTHONUNBUFFERED=1 \
    MODELRUNNER_LISTEN=0.0.0.0:12436
RUN useradd --system --uid 10001 --home-dir /var/lib/modelrunner --create-home modelrunner
COPY --from=build /opt/modelrunner /opt/modelrunner
COPY deploy/docker/healthcheck.py /opt/modelrunner/healthcheck.py
USER 10001:10001
EXPOSE 12436
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "/opt/modelrunner/healthcheck.py", "127.0.0.1:12436", "modelrunner.v1.Distribution"]
ENTRYPOINT ["python", "-m", "modelrunner.distribution"]
