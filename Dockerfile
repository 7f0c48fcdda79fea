# whouses: one image with all three binaries (collector, sidecar, injection webhook).
#   docker build -t whouses:0.1.0 .
# Build stage: the Rust toolchain on Debian bookworm; runtime: distroless (glibc, CA
# certificates, no shell), running as the non-root user 65532.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
      -p whouses-sidecar -p whouses-collector -p whouses-cli -p whouses-webhook --bins \
 && mkdir /out \
 && cp target/release/whouses-sidecar target/release/whouses-collector \
       target/release/whouses target/release/whouses-webhook /out/

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
EXPOSE 7070 15001 15020 8443
ENTRYPOINT ["/usr/local/bin/whouses-collector"]
