# syntax=docker/dockerfile:1
# The intake binary: one image runs any stage (`intake fetch|validate|dedup|serve|run|sim ...`).
#   docker build -t intake .
#   docker run --rm intake --help

FROM rust:1-bookworm AS build
WORKDIR /src
# rdkafka builds its bundled librdkafka with gcc and make, against OpenSSL and libcurl (OIDC for
# OAUTHBEARER): their headers are all in this image.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin intake \
    && install -D -m 0755 target/release/intake /out/intake

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libcurl4 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/intake --create-home intake
COPY --from=build /out/intake /usr/local/bin/intake
# Topic declarations and example configs (examples/demo.toml -> /etc/intake/demo.toml).
COPY topics /etc/intake/topics
COPY examples/ /etc/intake/
USER intake
WORKDIR /var/lib/intake
ENTRYPOINT ["/usr/local/bin/intake"]
CMD ["--help"]
