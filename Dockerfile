# Hookyard in a container: built in a Rust image, run from a small Debian
# image as a non-root user, with its data in a volume.
#
#   docker build -t hookyard .
#   docker run -p 8080:8080 -p 127.0.0.1:8081:8081 -v hookyard-data:/var/lib/hookyard \
#       -e HOOKYARD_API_KEYS=website:hy_change_me_0123456789 hookyard
#
# Inside, the daemon listens on 0.0.0.0 (public 8080, admin 8081); publish
# the admin port on loopback only, as above. Config: mount a file at
# /etc/hookyard/hookyard.yaml, or use HOOKYARD_* environment variables.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hookyard-server -p hookyard-tui \
    && cp target/release/hookyard target/release/hookyard-tui /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/hookyard --shell /usr/sbin/nologin hookyard \
    && mkdir -p /var/lib/hookyard /etc/hookyard \
    && chown hookyard:hookyard /var/lib/hookyard \
    && chmod 0700 /var/lib/hookyard \
    && printf 'listen: 0.0.0.0:8080\nadmin_listen: 0.0.0.0:8081\ndata_dir: /var/lib/hookyard\nlog_format: json\n' \
        > /etc/hookyard/hookyard.yaml
COPY --from=build /usr/local/bin/hookyard /usr/local/bin/hookyard-tui /usr/local/bin/
USER hookyard
VOLUME ["/var/lib/hookyard"]
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/hookyard"]
CMD ["serve", "--config", "/etc/hookyard/hookyard.yaml"]
