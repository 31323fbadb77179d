# syntax=docker/dockerfile:1

# ---- build ---------------------------------------------------------------------------
FROM rust:1.95-bookworm AS build
WORKDIR /src

# Dependencies first, against stub sources, so that this layer is reused until a manifest or
# Cargo.lock changes. The manifests declare every binary and the core library, so each stub
# path must exist.
COPY Cargo.toml Cargo.lock ./
COPY crates/core/Cargo.toml crates/core/
RUN mkdir -p src/bin/bootpay-fake crates/core/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/bootpay-fake/main.rs \
    && touch src/lib.rs crates/core/src/lib.rs \
    && cargo build --release --locked --bin receipt-verifier \
    && rm -rf src crates/core/src

# The real sources. Touch the crate roots so cargo rebuilds them over the stubs even when the
# copied files are older than the stub build.
COPY crates ./crates
COPY src ./src
RUN touch src/main.rs src/lib.rs crates/core/src/lib.rs \
    && cargo build --release --locked --bin receipt-verifier \
    && cp target/release/receipt-verifier /receipt-verifier

# ---- runtime -------------------------------------------------------------------------
# glibc and CA certificates, no shell, no package manager. TLS is rustls, so no OpenSSL.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /receipt-verifier /usr/local/bin/receipt-verifier
# distroless's "nonroot" user, numerically, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
ENV LOG_FORMAT=json \
    METRICS_ADDR=0.0.0.0:9090
# /metrics, /healthz and /readyz
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/receipt-verifier"]
CMD ["run"]
