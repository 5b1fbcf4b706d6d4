# syntax=docker/dockerfile:1.7
# The Store: the only writer of the models' volume. Build from the repository root:
#   docker build -f deploy/docker/store.Dockerfile -t modelrunner/store:0.1.0 .
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
RUN /opt/modelrunner/bin/pip install .

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/modelrunner/bin:$PATH PYTHONUNBUFFERED=1 \
    MODELRUNNER_LISTEN=0.0.0.0:12435 \
    MODELRUNNER_DATA_DIR=/var/lib/modelrunner \
    MODELRUNNER_MODELS_DIR=/var/lib/modelrunner/models
RUN useradd --system --uid 10001 --home-dir /var/lib/modelrunner modelrunner \
 && mkdir -p /var/lib/modelrunner/models && chown -R modelrunner:modelrunner /var/lib/modelrunner
COPY --from=build /opt/modelrunner /opt/modelrunner
COPY deploy/docker/healthcheck.py /opt/modelrunner/healthcheck.py
USER 10001:10001
VOLUME ["/var/lib/modelrunner/models"]
EXPOSE 12435
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "/opt/modelrunner/healthcheck.py", "127.0.0.1:12435", "modelrunner.v1.Store"]
ENTRYPOINT ["python", "-m", "modelrunner.store"]
