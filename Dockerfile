# syntax=docker/dockerfile:1
# liveslice-server (and the liveslice client) in a small image:
#   docker build -t liveslice-server:0.1.0 .
#   docker run --rm -p 50051:50051 -p 8080:8080 liveslice-server:0.1.0 --demo demo
#   docker run --rm --network host --entrypoint liveslice liveslice-server:0.1.0 --help
# The tag is the one deploy/kubernetes/deployment.yaml runs.
# Settings: flags after the image name, LIVESLICE_* variables (-e), or a
# TOML file mounted and passed with --config.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches make rebuilds incremental (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p liveslice-server -p liveslice \
 && install -m 0755 target/release/liveslice-server /usr/local/bin/liveslice-server \
 && install -m 0755 target/release/liveslice /usr/local/bin/liveslice

FROM debian:bookworm-slim
# CA roots: HTTPS to object storage (--record, jobs, `liveslice package s3://`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 liveslice \
 && useradd --system --uid 10001 --gid liveslice --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin liveslice
COPY --from=build /usr/local/bin/liveslice-server /usr/local/bin/liveslice-server
COPY --from=build /usr/local/bin/liveslice /usr/local/bin/liveslice
# Inside a container, listen on every interface (the defaults are loopback).
ENV LIVESLICE_GRPC_ADDR=0.0.0.0:50051 \
    LIVESLICE_HTTP_ADDR=0.0.0.0:8080
EXPOSE 50051 8080
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/liveslice-server"]
