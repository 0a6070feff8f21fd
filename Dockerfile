# corekv in a container. Build: docker build -t corekv .
#
# Run (io_uring and locked memory must be allowed; see README "Running in a container"):
#   docker run --rm -p 7878:7878 \
#     --security-opt seccomp=unconfined \   # or a profile that allows io_uring_setup/enter/register
#     --ulimit memlock=67108864 \           # 64 MiB; glommio's io_uring buffers are locked memory
#     corekv
# Docker's default seccomp profile blocks io_uring: corekv then exits at once with a message
# naming the cause instead of running.

FROM rust:1.95-bookworm AS build
WORKDIR /src
# glommio's build script runs git and a C compiler; both are in the rust image.
COPY Cargo.toml Cargo.lock ./
# glommio 0.9 with corekv's one patch (vendor/glommio/CHANGES-corekv.md).
COPY vendor ./vendor
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin corekv

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 corekv
COPY --from=build /src/target/release/corekv /usr/local/bin/corekv
USER corekv
EXPOSE 7878
HEALTHCHECK --interval=10s --timeout=2s CMD curl -fsS http://127.0.0.1:7878/v1/readiness || exit 1
# One shard per CPU the container may use (cgroup cpuset / --cpuset-cpus are respected).
ENTRYPOINT ["corekv", "serve", "--addr", "0.0.0.0:7878"]
