# syntax=docker/dockerfile:1.7
# The Runner on NVIDIA GPUs: llama.cpp built with GGML_CUDA on the CUDA devel image, run on the CUDA
# runtime image (same Ubuntu, so the venv's python3.12 is the same binary in both stages).
# Build from the repository root:
#   docker build -f deploy/docker/runner-cuda.Dockerfile -t modelrunner/runner:0.1.0-cuda .
ARG CUDA_VERSION=12.6.3
ARG UBUNTU=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake git \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/modelrunner
# No GPU at build time: name the architectures (Turing .. Hopper) instead of "native".
ARG CUDA_ARCHITECTURES="75;80;86;89;90"
ENV CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    CMAKE_BUILD_PARALLEL_LEVEL=8
WORKDIR /src
COPY pyproject.toml README.md ./
COPY modelrunner modelrunner
COPY protos protos
COPY services services
COPY gateway gateway
# libcuda.so comes from the driver at run time; link against the toolkit's stub here.
RUN ln -s /usr/local/cuda/lib64/stubs/libcuda.so /usr/local/cuda/lib64/stubs/libcuda.so.1 \
 && LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs:$LD_LIBRARY_PATH /opt/modelrunner/bin/pip install ".[runner]"

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/modelrunner/bin:$PATH PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    MODELRUNNER_LISTEN=0.0.0.0:12437 \
    MODELRUNNER_RUNNER_STATE_DIR=/var/lib/modelrunner/runner
RUN useradd --system --uid 10001 --home-dir /var/lib/modelrunner modelrunner \
 && mkdir -p /var/lib/modelrunner/models /var/lib/modelrunner/runner \
 && chown -R modelrunner:modelrunner /var/lib/modelrunner
COPY --from=build /opt/modelrunner /opt/modelrunner
COPY deploy/docker/healthcheck.py /opt/modelrunner/healthcheck.py
USER 10001:10001
EXPOSE 12437 9090
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "/opt/modelrunner/healthcheck.py", "127.0.0.1:12437", "modelrunner.v1.Runner"]
ENTRYPOINT ["python", "-m", "modelrunner.runner"]
