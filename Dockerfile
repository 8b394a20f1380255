# chatd: a small runtime image with one static-ish binary, run as a non-root user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
COPY src src
COPY config config
COPY web web
RUN cargo build --release --locked -p chatd --bin chatd

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data chatd \
    && mkdir -p /data && chown chatd /data
COPY --from=build /src/target/release/chatd /usr/local/bin/chatd
COPY config /etc/chatd
# Production settings: listens on 0.0.0.0, no dev login, and refuses to start until a real
# secret (or identity-provider keys) is given: docker run -e CHATD__AUTH__JWT_SECRET=...
ENV CHATD_CONFIG_DIR=/etc/chatd \
    CHATD_ENV=production \
    CHATD__STORE__SQLITE_PATH=/data/chatd.db
USER chatd
WORKDIR /data
EXPOSE 8080
ENTRYPOINT ["chatd"]
