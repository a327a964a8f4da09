# A small static image of mcsd: built against musl, shipped on an empty base, run as non-root.
#   docker build -t <registry>/mcsd:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY . .
# Without the default `sandbox` feature: the production binary carries no sandbox API server.
RUN cargo build --release --locked -p mcsd --no-default-features \
    && strip target/release/mcsd

FROM scratch
COPY --from=build /src/target/release/mcsd /mcsd
USER 65532:65532
ENTRYPOINT ["/mcsd"]
CMD ["run"]
