# syntax=docker/dockerfile:1.7
# The operator image: a release build of the `workload-key-operator` binary (no `sim` feature) on distroless.
#
#   docker build -t workload-key-operator:0.1.0 .
#
# Runtime base: gcr.io/distroless/cc-debian12 (glibc, libgcc_s, CA certificates, tzdata; no shell, no package
# manager). The builder is Debian 12 too, so the binary links against the same glibc it runs with. TLS is
# rustls with ring (no OpenSSL); system roots come from the image's /etc/ssl/certs.

ARG RUST_VERSION=1.89

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# Every target Cargo.toml declares must exist for cargo to read the manifest (benches/ included); .dockerignore
# admits exactly these paths, and a test checks that this context is complete.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY src ./src
# BuildKit cache mounts keep downloaded crates and build artefacts between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin workload-key-operator \
 && install -D -m 0755 target/release/workload-key-operator /out/workload-key-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="workload-key-operator" \
      org.opencontainers.image.description="Provisions Trend Micro Workload Security and Cisco Secure Workload API credentials into Kubernetes Secrets" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/workload-key-operator /usr/local/bin/workload-key-operator
# Numeric (distroless `nonroot`), so that the kubelet can enforce runAsNonRoot.
USER 65532:65532
EXPOSE 8080
# Kubernetes probes /healthz and /readyz over HTTP (see the chart); the image has no shell or client to run
# a Docker HEALTHCHECK with.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/workload-key-operator"]
CMD ["run"]
