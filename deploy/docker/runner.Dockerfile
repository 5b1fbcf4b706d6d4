# syntax=docker/dockerfile:1.7
# The Runner on CPU: llama.cpp (llama-cpp-python) built for any x86-64/arm64 host, not the build host.
# Build from the repository root:
#   docker build -f deploy/docker/runner.Dockerfile -t modelrunner/runner:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/modelrunner
# GGML_NATIVE=OFF: portable code, not -march=native of whichever machine builds the image.
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
ENV CMAKE_ARGS=${CMAKE_ARGS} CMAKE_BUILD_PARALLEL_LEVEL=8
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modelrunner modelrunner
COPY protos protos
COPY services services
COPY gateway gateway
RUN /opt/modelrunner/bin/pip install ".[runner]"

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/modelrunner/bin:$PATH PYTHONUNBUFFERED=1 \
    MODELRUNNER_LISTEN=0.0.0.0:12437 \
    MODELRUNNER_RUNNER_STATE_DIR=/var/lib/modelrunner/runner
# The models' directory exists only as the mount point of the Store's volume (read-only here).
RUN useradd --system --uid 10001 --home-dir /var/lib/modelrunner modelrunner \
 && mkdir -p /var/lib/modelrunner/models /var/lib/modelrunner/runner \
 && chown -R modelrunner:modelrunner /var/lib/modelrunner
COPY --from=build /opt/modelrunner /opt/modelrunner
COPY deploy/docker/healthcheck.py /opt/modelrunner/healthcheck.py
USER 10001:10001
EXPOSE 12437 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "/opt/modelrunner/healthcheck.py", "127.0.0.1:12437", "modelrunner.v1.Runner"]
ENTRYPOINT ["python", "-m", "modelrunner.runner"]
