# logsub's container image, for those who build with a container engine:
#   docker build -t <your registry>/logsub:0.1.0 .
# `make image` writes the same image (same files, user, entrypoint and labels)
# as an OCI archive without an engine; tests/image.rs checks the two agree.

# Alpine's toolchain is musl, so the binary is static and needs nothing at run time.
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
# The manifest names the benches, so cargo wants their files.
COPY benches benches
RUN cargo build --release --locked --bin logsub && cp target/release/logsub /logsub

FROM scratch
COPY --from=build /logsub /logsub
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY hack/image/rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /
# The numeric non-root user of hack/image/rootfs/etc/passwd; runAsNonRoot needs a number.
USER 65532:65532
ENTRYPOINT ["/logsub"]
LABEL org.opencontainers.image.title="logsub" \
      org.opencontainers.image.description="Kubernetes operator that streams CloudWatch Logs through Kinesis into Elasticsearch/OpenSearch or S3" \
      org.opencontainers.image.licenses="Apache-2.0"
