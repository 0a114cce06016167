# syntax=docker/dockerfile:1.7
# The edge agent (`eddyline-edge`) for Raspberry Pi (arm64) and x86 gateways (amd64): the light install only,
# no numpy/numba/torch. Build and push both architectures from the repository root:
#   docker buildx create --use --name eddyline   # once; arm64 on an amd64 host also needs QEMU binfmt
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/edge.Dockerfile -t REGISTRY/eddyline-edge:0.1.0 --push .
# confluent-kafka and fastavro publish manylinux wheels for aarch64, so neither architecture compiles.
ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eddyline-edge
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY edge_agent ./edge_agent
# setuptools' package discovery lists these; the edge install never imports them
COPY streams/__init__.py ./streams/__init__.py
COPY models/__init__.py ./models/__init__.py
COPY benchmarks/__init__.py ./benchmarks/__init__.py
RUN /opt/eddyline-edge/bin/pip install '.[edge]'

FROM python:${PYTHON}-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/eddyline-edge --create-home eddyline
COPY --from=build /opt/eddyline-edge /opt/eddyline-edge
ENV PATH=/opt/eddyline-edge/bin:$PATH PYTHONUNBUFFERED=1 \
    EDDYLINE_EDGE_BUFFER_PATH=/var/lib/eddyline-edge/buffer.sqlite
USER eddyline
WORKDIR /var/lib/eddyline-edge
# the disk buffer must outlive the container: readings taken while offline wait here
VOLUME ["/var/lib/eddyline-edge"]
ENTRYPOINT ["eddyline-edge"]
CMD ["run"]
