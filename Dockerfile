# syntax=docker/dockerfile:1.7
#
# The custops image: the four service binaries (custops-profiles, custops-segmentation,
# custops-loyalty, custops-feedback) and the operator binary `custops` (for `custops migrate`),
# built in release mode, on a distroless runtime: glibc and CA certificates, no shell, no
# package manager, running as the non-root `nonroot` user (65532). Kubernetes names the binary
# in each container's `command` (k8s/base/<service>/deployment.yaml).
#
#   docker build -t custops:0.1.0 .                  (BuildKit, the default since Docker 23)
#   docker tag custops:0.1.0 REGISTRY/custops/custops:0.1.0
#   docker push REGISTRY/custops/custops:0.1.0       (then pin the pushed digest in the overlay)
#
# Dependency caching without cargo-chef: the cargo registry, git checkouts and target/ live in
# BuildKit cache mounts, so a rebuild after a source change recompiles only the crates that
# changed. A dummy-source layer would have to list every workspace member by hand and go stale
# as members are added.

ARG RUST_VERSION=1.95
# The build image's Debian release must match the runtime's (cc-debian12 below), so the
# binaries link against the glibc they run with.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Only the workspace (see .dockerignore). protoc comes from a crate; ring needs the image's gcc.
COPY . .
RUN --mount=type=cache,id=custops-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=custops-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=custops-target,target=/src/target,sharing=locked \
    cargo build --release --locked \
        --bin custops \
        --bin custops-profiles \
        --bin custops-segmentation \
        --bin custops-loyalty \
        --bin custops-feedback \
 && mkdir -p /out \
 && cp target/release/custops \
       target/release/custops-profiles \
       target/release/custops-segmentation \
       target/release/custops-loyalty \
       target/release/custops-feedback \
       /out/

# Kubernetes probes the pods itself (k8s/README.md); a Docker HEALTHCHECK would
# need a shell or a client binary in the image, and Kubernetes ignores it.
# checkov:skip=CKV_DOCKER_2: Kubernetes probes the pods itself; the image has no shell for a HEALTHCHECK
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="custops" \
      org.opencontainers.image.description="custops customer-operations gRPC services: profiles, segmentation, loyalty, feedback, and the custops operator binary" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 --chmod=0555 /out/ /usr/local/bin/
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
# profiles, segmentation, loyalty, feedback: one gRPC port each (health and reflection included).
EXPOSE 50051 50052 50053 50054
# No default service: each container names its binary. Run bare, the image prints the usage.
ENTRYPOINT []
CMD ["/usr/local/bin/custops", "help"]
