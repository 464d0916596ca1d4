# Multi-stage build: compile in the Rust image, run from a slim Debian as a non-root user.
FROM rust:1.95-slim-bookworm AS build
# The packages scripts/setup.sh installs: librdkafka (with zstd) is compiled from source.
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
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
ENTRYPOINT ["pail"]
CMD ["run", "--config", "/etc/pail/pail.toml"]
