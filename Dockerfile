# syntax=docker/dockerfile:1
# The operator image: the release binary on a distroless glibc base, running as non-root.
# For your own pipeline (see .github/workflows/e2e.yaml); the repository's test command does not
# build it. The binary carries Mozilla's CA roots (webpki-roots), so the image needs no CA
# bundle, shell or package manager.
#
#   docker build -t amazon-seller-operator:dev .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cached registry and target directories keep rebuilds incremental (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin amazon-seller-operator \
 && install -D -m 0755 target/release/amazon-seller-operator /out/amazon-seller-operator

# glibc and libgcc only; user 65532 ("nonroot"), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/amazon-seller-operator /amazon-seller-operator
USER 65532:65532
ENTRYPOINT ["/amazon-seller-operator"]
CMD ["run"]
LABEL org.opencontainers.image.title="amazon-seller-operator" \
      org.opencontainers.image.description="Keeps Amazon SP-API seller credentials sealed in Kubernetes and publishes fresh LWA access tokens to a Team's gateways" \
      org.opencontainers.image.licenses="Apache-2.0"
