# syntax=docker/dockerfile:1
#
# switchyard in a container: `docker build -t switchyard .`, then
#   docker run -v switchyard-data:/var/lib/switchyard -v ./switchyard.toml:/etc/switchyard/switchyard.toml:ro \
#       -e SWITCHYARD_ADMIN_TOKEN=… -p 8080:8080 switchyard
# The config must listen on 0.0.0.0:8080 with tokens set (see docs/deploy.md).

# ── build ──────────────────────────────────────────────────────────────────────────────
FROM rust:1.95-bookworm AS builder
# The Kafka client's TLS links the system OpenSSL; librdkafka is built from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist -p switchyard-cli \
 && install -D -m 0755 target/dist/switchyard /out/switchyard

# ── run ────────────────────────────────────────────────────────────────────────────────
FROM debian:bookworm-slim
# libssl3: the Kafka client's TLS; ca-certificates: HTTPS webhooks and TLS brokers;
# curl: the HEALTHCHECK.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 switchyard \
 && useradd --system --uid 10001 --gid switchyard --home-dir /var/lib/switchyard \
        --shell /usr/sbin/nologin switchyard \
 && install -d -o switchyard -g switchyard -m 0700 /var/lib/switchyard \
 && install -d -m 0755 /etc/switchyard
COPY --from=builder /out/switchyard /usr/local/bin/switchyard

USER switchyard:switchyard
WORKDIR /var/lib/switchyard
# Logs as one JSON object per line for the container runtime's collector (this
# overrides the file's log.format; `-e SWITCHYARD_LOG__FORMAT=text` for text). The config
# sets `listen = "0.0.0.0:8080"` and `data_dir = "/var/lib/switchyard/data"`: the volume
# holds the intake logs, checkpoints, queues and dead letters.
ENV SWITCHYARD_LOG__FORMAT=json
VOLUME ["/var/lib/switchyard"]
EXPOSE 8080
# /healthz: the process is up. (A postgres_cdc standby is healthy but not ready; use
# /readyz where only the leader should get traffic.)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
# SIGTERM drains in-flight deliveries for server.shutdown_timeout (30 s): give
# `docker stop` longer, e.g. `docker stop -t 45`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["run", "-c", "/etc/switchyard/switchyard.toml"]
