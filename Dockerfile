# Herald: multi-stage release build to a slim Debian image.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p herald

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/herald herald \
    && mkdir -p /var/lib/herald /etc/herald \
    && chown herald /var/lib/herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY config/herald.toml /etc/herald/herald.toml
# Secure by default: on 0.0.0.0 Herald starts only with credentials configured. Mount a
# configuration with [[auth.clients]] / [[auth.api_keys]] over /etc/herald/herald.toml (or, for a
# throw-away local container only, pass -e HERALD_INSECURE_NO_AUTH=true).
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_DATA_DIR=/var/lib/herald \
    HERALD_LOG_JSON=true
VOLUME ["/var/lib/herald"]
EXPOSE 8080
USER herald
ENTRYPOINT ["herald"]
CMD ["serve", "--config", "/etc/herald/herald.toml"]
