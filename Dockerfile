# syntax=docker/dockerfile:1
#
# The image of `holdfast`. Dependencies are compiled into BuildKit cache
# mounts (the cargo registry and the target directory), so that an edit of
# Holdfast's own sources rebuilds only its crates, not every dependency. It
# ships the `dist` profile's binary (no debug info, stripped, thin LTO) on
# distroless/cc: glibc and CA certificates, no shell, no package manager,
# nothing to pin. It runs as the numeric user 10001, so that Kubernetes'
# runAsNonRoot can check it. CI lints this file with hadolint; the machines
# CI runs on have no Docker engine, so CI does not build it.
#
#   DOCKER_BUILDKIT=1 docker build -t holdfast .
#   docker run -p 8080:8080 holdfast

ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked --bin holdfast \
 && cp target/dist/holdfast /usr/local/bin/holdfast \
 && mkdir -p /state/data

FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="holdfast" \
      org.opencontainers.image.description="A resilient, actor-based realtime server" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /usr/local/bin/holdfast /usr/local/bin/holdfast
# The working directory holds the embedded SQLite database (./data): the
# only path the server writes. Mount a volume there to keep it.
COPY --from=build --chown=10001:10001 /state /var/lib/holdfast
USER 10001:10001
WORKDIR /var/lib/holdfast
ENV HOLDFAST__SERVER__HOST=0.0.0.0
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/holdfast", "check"]
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["serve"]
