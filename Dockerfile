# syntax=docker/dockerfile:1
# tailgate's container image: both binaries, `tailgate` (the entrypoint:
# `lb`, `sampler`, `local`, `policy ...`) and `tailgate-loadtest`, on a
# distroless base (glibc and CA certificates, no shell), running as the
# unprivileged user 65532 (`nonroot`).
#
#   docker build -t tailgate:dev .
#   docker run --rm tailgate:dev policy check /etc/tailgate/policy.yaml
#
# Kubernetes manifests that run it: deploy/kubernetes/.

# The builder: the toolchain this repository is built and tested with
# (edition 2024; rust-version in Cargo.toml is the minimum).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target directory between
# builds; the binaries are copied out of the cached target in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --package tailgate --package loadtest \
        --bin tailgate --bin tailgate-loadtest \
    && mkdir -p /out \
    && cp target/release/tailgate target/release/tailgate-loadtest /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="tailgate" \
      org.opencontainers.image.description="Tail-sampling cluster for OpenTelemetry traces" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/tailgate /out/tailgate-loadtest /usr/local/bin/
# The default policy, so `tailgate local` and `policy check` work out of the
# box; Kubernetes mounts its own under /etc/tailgate/policy/.
COPY examples/policy.yaml /etc/tailgate/policy.yaml
# OTLP/gRPC, OTLP/HTTP, admin (/metrics, /healthz, /readyz).
EXPOSE 4317 4318 8888
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tailgate"]
CMD ["--help"]
