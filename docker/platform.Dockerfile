# syntax=docker/dockerfile:1.7
# The platform image: flows, gateway, live page, CLI (`eddyline ...`). Build from the repository root:
#   docker buildx build --platform linux/amd64,linux/arm64 -f docker/platform.Dockerfile -t eddyline/platform:0.1.0 .
ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/eddyline
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY models ./models
COPY streams ./streams
COPY edge_agent ./edge_agent
COPY benchmarks ./benchmarks
RUN /opt/eddyline/bin/pip install '.[platform,edge]'

FROM python:${PYTHON}-slim-bookworm
# libgomp: numba and scikit-learn wheels use OpenMP. A new named volume takes the owner of the image folder it
# mounts on, else root's: the flows' state volumes mount on state/, which the user must own.
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/eddyline --create-home eddyline \
    && install -d -o eddyline -g eddyline /var/lib/eddyline/state
COPY --from=build /opt/eddyline /opt/eddyline
ENV PATH=/opt/eddyline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    EDDYLINE_RUNTIME_STATE_DIR=/var/lib/eddyline/state \
    NUMBA_CACHE_DIR=/var/lib/eddyline/numba
USER eddyline
WORKDIR /var/lib/eddyline
VOLUME ["/var/lib/eddyline"]
ENTRYPOINT ["tini", "--", "eddyline"]
CMD ["--help"]
