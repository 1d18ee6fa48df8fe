# One image for both services: `producer` (the default command) and `consumer`.
#
#   docker build -t pushpull .                         # compiles in a Rust container (default)
#   scripts/build-prebuilt.sh \
#     && docker build --target prebuilt -t pushpull .  # takes the binaries built on this host
#
# The `prebuilt` target is for machines whose containers cannot download crates (CI here): the
# host builds, the image only receives the two binaries (stripped copies, which
# scripts/build-prebuilt.sh puts in target/prebuilt/). They must be linked against a glibc no
# newer than the runtime image's (Debian bookworm: 2.36).
#
# No EXPOSE: the one image runs either service, so any EXPOSE here would be declared by every
# container, the producer's ports on the consumers and the other way round. docker-compose.yml
# gives each service its own (`expose:`); with `docker run`, publish what you run (-p).
#
# Build args: RUST_IMAGE (builder), RUNTIME_IMAGE (runtime base). Both must be Debian bookworm
# (or compatible): the runtime needs only glibc and libgcc_s, which every Debian image has.
#
# Stage order matters: the classic builder (no BuildKit: Docker without buildx, as here) builds
# every stage up to the target in file order, used or not. So `prebuilt` comes before `builder`
# and never needs the Rust image, and `prebuilt` copes with having no host binaries, because the
# classic builder passes through it on its way to `runtime`, the last stage and the default
# target. No BuildKit-only syntax (RUN --mount, COPY --chmod) is used, so both builders work.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# What both final images share: the base, an unprivileged user, the directories they write.
FROM ${RUNTIME_IMAGE} AS runtime-base
# A fixed uid/gid, so a volume's ownership means the same thing in every image built from here.
# /var/lib/pushpull and /data belong to that user: Docker copies a directory's ownership into a
# new named volume mounted on it. The consumers keep their checkpoints in /var/lib/pushpull, the
# producer its log in /data (docker-compose.yml mounts a volume on each).
RUN groupadd --system --gid 10001 pushpull \
    && useradd --system --uid 10001 --gid pushpull --home-dir /var/lib/pushpull \
        --no-create-home --shell /usr/sbin/nologin pushpull \
    && install -d -o pushpull -g pushpull -m 0750 /var/lib/pushpull /data
WORKDIR /var/lib/pushpull
CMD ["producer"]

# Binaries built on the host: `scripts/build-prebuilt.sh` first. .dockerignore lets exactly
# these two files of target/ through.
FROM runtime-base AS prebuilt
# Wildcards, and Cargo.lock, which always exists: with no host binaries (the classic builder on
# its way to `runtime`) this copies only Cargo.lock instead of failing. The check refuses an
# image without binaries when the prebuilt target was asked for (docker-compose.yml passes its
# target as BUILD_TARGET).
ARG BUILD_TARGET=runtime
COPY target/prebuilt/produce[r] target/prebuilt/consume[r] Cargo.lock /usr/local/bin/
RUN rm /usr/local/bin/Cargo.lock \
    && if [ "$BUILD_TARGET" = prebuilt ]; then \
        for bin in producer consumer; do \
            [ -x /usr/local/bin/$bin ] || { echo "target/prebuilt/$bin is missing: run" \
                "scripts/build-prebuilt.sh first" >&2; exit 1; }; \
        done; \
    fi
USER pushpull:pushpull

# Compiles both binaries from source.
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
COPY . .
# Stripped: symbols are about a quarter of the binary, and nobody debugs inside this image.
ENV CARGO_PROFILE_RELEASE_STRIP=true
RUN cargo build --release --locked -p pushpull-producer -p pushpull-consumer \
    && mkdir /out && cp target/release/producer target/release/consumer /out/

# The default target: the runtime base plus the binaries compiled above.
FROM runtime-base AS runtime
COPY --from=builder /out/producer /out/consumer /usr/local/bin/
USER pushpull:pushpull
