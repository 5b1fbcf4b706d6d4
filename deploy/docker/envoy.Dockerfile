# syntax=docker/dockerfile:1.7
# The edge: Envoy with deploy/envoy/envoy.yaml and the descriptor set compiled from protos/.
# Build from the repository root:
#   docker build -f deploy/docker/envoy.Dockerfile -t modelrunner/envoy:0.1.0 .
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS descriptors
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "grpcio-tools==1.85.1" "googleapis-common-protos>=1.66"
WORKDIR /src
COPY protos protos
COPY scripts/gen_protos.py scripts/gen_protos.py
COPY deploy/envoy/build_descriptors.py deploy/envoy/build_descriptors.py
RUN python deploy/envoy/build_descriptors.py /out/modelrunner.pb

FROM envoyproxy/envoy:v1.40.0
COPY --from=descriptors /out/modelrunner.pb /etc/envoy/modelrunner.pb
COPY deploy/envoy/envoy.yaml /etc/envoy/envoy.yaml
USER 101:101
EXPOSE 12434 9902
# No curl in the image: ask the readiness listener with bash's /dev/tcp.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9902 && printf 'GET /ready HTTP/1.0\\r\\n\\r\\n' >&3 && grep -q LIVE <&3"]
CMD ["envoy", "-c", "/etc/envoy/envoy.yaml", "--log-level", "info"]
