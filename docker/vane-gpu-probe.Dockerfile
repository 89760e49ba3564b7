# syntax=docker/dockerfile:1
# The load probe. It loads the GPU driver's libraries (NVML, CUDA) at run time, as the NVIDIA
# container toolkit mounts them; without them it serves the model server's figures alone.
#   docker build -f docker/vane-gpu-probe.Dockerfile -t vane-gpu-probe:0.1.0 .
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p vane-gpu-probe --bin vane-gpu-probe \
 && cp target/release/vane-gpu-probe /vane-gpu-probe

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /vane-gpu-probe /usr/local/bin/vane-gpu-probe
# The injector runs the probe as the proxy's UID (control/src/inject/settings.rs); the image
# says the same.
USER 2102:2102
EXPOSE 4192
ENTRYPOINT ["/usr/local/bin/vane-gpu-probe"]
