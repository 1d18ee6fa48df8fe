# One image for both services: `producer` (the default command) and `consumer`.
#
#   docker build -t pushpull .                         # compiles in a Rust container (default)
#   cargo build --release --locked -p pushpull-producer -p pushpull-consumer \
#     && docker build --target prebuilt -t pushpull .  # takes the binaries built on this host
#
# The `prebuilt` target is for machines whose containers cannot download crates (CI here): the
# host builds, the image only receives the two binaries. They must be linked against a glibc no
# newer than the runtime image's (Debian bookworm: 2.36).
#
# Build args: RUST_IMAGE (builder), RUNTIME_IMAGE (runtime base). Both must be Debian bookworm
# (or compatible): the runtime needs only glibc and libgcc_s, which every Debian image has.
#
# Stage order matters: the classic builder (Compose 1.29, `docker build` without BuildKit) builds
# every stage up to the target in file order, so `prebuilt` comes before `builder` and never
# needs the Rust image. The last stage, `runtime`, is the default target. No BuildKit-only
# syntax (RUN --mount, COPY --chmod) is used, so both builders work.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# What both final images share: the base, an unprivileged user, the checkpoint directory.
FROM ${RUNTIME_IMAGE} AS runtime-base
# A fixed uid/gid, so a volume's ownership means the same thing in every image built from here.
# /var/lib/pushpull belongs to that user: Docker copies its ownership into a new named volume
# mounted there, which is where the consumers keep their checkpoints.
RUN groupadd --system --gid 10001 pushpull \
    && useradd --system --uid 10001 --gid pushpull --home-dir /var/lib/pushpull \
        --no-create-home --shell /usr/sbin/nologin pushpull \
    && install -d -o pushpull -g pushpull -m 0750 /var/lib/pushpull
WORKDIR /var/lib/pushpull
USER pushpull:pushpull
# Producer gRPC, and the consumers' own ports (GetStats, health) as docker-compose.yml uses them.
EXPOSE 50051 50061 50062 50063
CMD ["producer"]

# Binaries built on the host: `cargo build --release --locked -p pushpull-producer -p
# pushpull-consumer` first. .dockerignore lets exactly these two files of target/ through.
FROM runtime-base AS prebuilt
COPY target/release/producer target/release/consumer /usr/local/bin/

# Compiles both binaries from source.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# Stripped: symbols are a third of the binary and nobody debugs inside this image.
ENV CARGO_PROFILE_RELEASE_STRIP=true
RUN cargo build --release --locked -p pushpull-producer -p pushpull-consumer \
    && mkdir /out && cp target/release/producer target/release/consumer /out/

# The default target: the runtime base plus the binaries compiled above.
FROM runtime-base AS runtime
COPY --from=builder /out/producer /out/consumer /usr/local/bin/
