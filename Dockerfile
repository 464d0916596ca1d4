# Multi-stage build: compile in the Rust image, run from a slim Debian as a non-root user.
FROM rust:1.95-slim-bookworm AS build
# The packages scripts/setup.sh installs: librdkafka (with zstd) is compiled from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
# There is no .git in the build context: `--build-arg PAIL_COMMIT=$(git rev-parse --short=12 HEAD)`
# names the commit in `pail --version` and pail_build_info.
ARG PAIL_COMMIT=unknown
RUN cargo build --release --locked --bin pail

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pail
COPY --from=build /src/target/release/pail /usr/local/bin/pail
COPY config/kafka-s3.example.toml /etc/pail/pail.example.toml
USER 10001
ENV PAIL_LOG_FORMAT=json
EXPOSE 9464
# Docker's health check (Kubernetes ignores it and uses deploy/kubernetes/'s probes): the binary
# itself asks http://127.0.0.1:9464/livez, so the image needs no curl or wget. It needs
# [telemetry] listen on port 9464, as the example config has.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["pail", "healthcheck"]
ENTRYPOINT ["pail"]
CMD ["run", "--config", "/etc/pail/pail.toml"]
