# syntax=docker/dockerfile:1
# The proxy, and the capture step the injector runs from the same image (`vane-proxy init`).
#   docker build -f docker/vane-proxy.Dockerfile -t vane-proxy:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vane-proxy --bin vane-proxy \
 && cp target/release/vane-proxy /vane-proxy

# Not distroless: `vane-proxy init` runs iptables-save and iptables-restore (the nft and legacy
# variants both come with Debian's iptables), which a distroless image does not have.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /vane-proxy /usr/local/bin/vane-proxy
# The UID the injected capture rules let out uncaptured (the injector's proxy_uid,
# control/src/inject/settings.rs, and `vane-proxy init --proxy-uid`): running as any other UID,
# the proxy's own connections would be redirected to itself. The init step runs as root, set by
# the injector's securityContext.
USER 2102:2102
EXPOSE 4140 4143 4191
ENTRYPOINT ["/usr/local/bin/vane-proxy"]
