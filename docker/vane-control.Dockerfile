# syntax=docker/dockerfile:1
# The control service (`vane-control`), the injector (`vane-control inject`) and the one-off
# commands (`vane-control webhook-cert`).
#   docker build -f docker/vane-control.Dockerfile -t vane-control:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vane-control --bin vane-control \
 && cp target/release/vane-control /vane-control

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /vane-control /usr/local/bin/vane-control
# distroless's nonroot user, as the Deployments' runAsUser (manifests/control, manifests/injector).
USER 65532:65532
EXPOSE 8086 9990 8443 9991
ENTRYPOINT ["/usr/local/bin/vane-control"]
