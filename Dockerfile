# syntax=docker/dockerfile:1
#
# droplet-operator container image.
#
#   docker build -t ghcr.io/droplet-operator/droplet-operator:0.1.0 .
#
# One binary: `run` is the controller (the Deployment's args start with it). The image is built with
# `--no-default-features`: the `sandbox` and `demo` subcommands and the test world they need (the DigitalOcean
# simulator and the Kubernetes emulator in crates/) are not compiled in.

# Builder: the toolchain the project is tested with (MSRV is 1.89, edition 2024). Debian bookworm, so the glibc
# the binary links against matches the runtime image's.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# --locked: exactly Cargo.lock. The cache mounts keep the registry and target/ between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p droplet-operator --no-default-features --bin droplet-operator \
    && install -D -m 0755 target/release/droplet-operator /out/droplet-operator

# Runtime: glibc, libgcc, CA certificates (for api.digitalocean.com) and nothing else: no shell, no package
# manager. The :nonroot tag runs as UID/GID 65532, which the Deployment's securityContext also sets.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/droplet-operator /droplet-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/droplet-operator"]
CMD ["run"]
