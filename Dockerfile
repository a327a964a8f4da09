# mcsd's production image: the binary of .ci/static-binary (release, without the sandbox feature,
# statically linked, stripped) alone on an empty base, run as non-root. Without Docker,
# `.ci/image` builds the same image with no daemon (README, "Installing into real clusters").
#   docker build -t <registry>/mcsd:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN .ci/static-binary /out/mcsd

FROM scratch
COPY --from=build /out/mcsd /mcsd
USER 65532:65532
ENTRYPOINT ["/mcsd"]
CMD ["run"]
