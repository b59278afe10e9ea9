# caching-proxy container image.
#
#   docker build -t caching-proxy .
#   docker run --rm -p 3000:3000 -e PROXY_ORIGIN=http://origin.example:8080 caching-proxy
#
# Configuration: the image reads /etc/caching-proxy/caching-proxy.yaml (conf/caching-proxy.yaml);
# mount your own file there, or override single settings with PROXY_* variables or flags
# appended to `docker run ... caching-proxy --origin ...` (flag > env > file).
#
# Stopping: SIGTERM is Pingora's graceful shutdown (server.grace_period, then
# server.graceful_shutdown_timeout; 5 s + 5 s by default). `docker stop` waits 10 s before
# SIGKILL, so give it more: `docker stop -t 30`, or `stop_grace_period: 30s` in Compose.

# --- build ------------------------------------------------------------------------------
# Same Debian release as the runtime stage, so the binary links against the same glibc.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build

# pingora-core builds zlib-ng with cmake.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependencies in their own layer, rebuilt only when Cargo.toml or Cargo.lock change: stub
# targets stand in for the sources (the manifest names src/lib.rs, src/main.rs and
# benches/cache.rs, so all three must exist).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/cache.rs \
 && cargo build --release --locked \
 && rm -rf src benches

# The real sources. COPY keeps their modification times, which can be older than the stub
# build; touching the crate roots makes cargo rebuild the crate instead of shipping the stub.
# build.rs records the git commit; .git is not in the build context, so the image reports
# "unknown".
COPY build.rs ./
COPY src ./src
COPY benches ./benches
RUN touch src/lib.rs src/main.rs \
 && cargo build --release --locked

# --- runtime ----------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: https origins are verified against the system roots.
# curl: the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

# A fixed UID/GID: conf/kubernetes/deployment.yaml runs the container as 10001, and host
# volumes can be owned by it.
RUN groupadd --system --gid 10001 caching-proxy \
 && useradd --system --uid 10001 --gid caching-proxy --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin caching-proxy

COPY --from=build /build/target/release/caching-proxy /usr/local/bin/caching-proxy
COPY conf/caching-proxy.yaml /etc/caching-proxy/caching-proxy.yaml

# The proxy listens on 0.0.0.0 (listen.host's default and the example config's value). The
# admin service defaults to 127.0.0.1, which nothing outside the container can reach, so it
# is moved to all interfaces for health probes. This env var beats admin.host in a mounted
# config file. Off loopback, DELETE /cache and POST /cache/purge are refused (403) until a
# token is set: pass PROXY_ADMIN_TOKEN (docker run -e, or a Kubernetes Secret), never
# --admin-token (flags show in the process list), and publish port 9091 only to trusted
# networks.
ENV PROXY_ADMIN_HOST=0.0.0.0

# The pid file and the upgrade socket default to /tmp (server.pid_file, server.upgrade_sock),
# which this user can write; under a read-only root filesystem, mount a tmpfs/emptyDir there.
# Pingora's socket-handover upgrade (-u) is for bare metal: containers are replaced instead.

# caching-proxy, by number: Kubernetes' runAsNonRoot can only verify a numeric USER.
USER 10001:10001

EXPOSE 3000 9091

STOPSIGNAL SIGTERM

# Liveness only: /health/ready also turns 503 while the process drains on shutdown.
# Assumes the default admin port.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl --fail --silent --show-error --max-time 2 http://127.0.0.1:9091/health/live || exit 1

ENTRYPOINT ["/usr/local/bin/caching-proxy", "-c", "/etc/caching-proxy/caching-proxy.yaml"]
