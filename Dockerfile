# syntax=docker/dockerfile:1
# One image for every bandvote role: the role is the subcommand (`docker run IMAGE grpc-gateway`, ...).
# Stages: the web app (Node), the binary (Rust, with the web app and the wasm guest embedded), and a
# slim runtime as a non-root user.
ARG RUST_VERSION=1.95
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:${RUST_VERSION}-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
COPY --from=web /web/dist /web-dist
# The web app is already built: build.rs embeds it instead of running npm.
ENV BANDVOTE_WEB_DIST=/web-dist
# BuildKit cache mounts keep the downloaded crates and the compiled dependencies (target/) from one
# build to the next, so a source change recompiles only the workspace's own crates. The binary is
# copied out of the cache mount before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --locked --release -p bandvote \
    && install -m 0755 target/release/bandvote /usr/local/bin/bandvote

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/bandvote --create-home bandvote
COPY --from=build /usr/local/bin/bandvote /usr/local/bin/bandvote
USER 10001:10001
WORKDIR /var/lib/bandvote
ENV BANDVOTE_LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["bandvote"]
# Without a role: the whole system in one process on its embedded storage.
CMD ["up", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/bandvote/data"]
