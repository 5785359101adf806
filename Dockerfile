# Multi-stage build: compile with the full toolchain, run on a slim base as a
# non-root user. The HEALTHCHECK asks the server's own readiness endpoint.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p holdfast-server --bin holdfast

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/holdfast holdfast
COPY --from=build /src/target/release/holdfast /usr/local/bin/holdfast
USER holdfast
WORKDIR /var/lib/holdfast
ENV HOLDFAST__SERVER__HOST=0.0.0.0
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["holdfast", "check"]
ENTRYPOINT ["holdfast"]
CMD ["serve"]
