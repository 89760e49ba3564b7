//! What the injector puts into a pod when the pod's annotations say nothing: images, ports, the
//! proxy's user, the identity token's audience, default resources.

/// The injector's settings, fixed for the life of the webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectSettings {
    /// Recorded in the `vane.io/injected` annotation.
    pub version: String,
    /// The proxy image; also runs the capture init step (`vane-proxy init`).
    pub proxy_image: String,
    /// The load probe image.
    pub probe_image: String,
    /// `imagePullPolicy` of the injected containers (`None`: the cluster's default).
    pub pull_policy: Option<String>,
    /// The UID (and GID) the proxy and the probe run as. The capture rules let this UID's own
    /// traffic out uncaptured, so it must differ from the app's.
    pub proxy_uid: i64,
    /// The proxy's outbound listener (on 127.0.0.1).
    pub outbound_port: u16,
    /// The proxy's inbound listener (on every address).
    pub inbound_port: u16,
    /// The proxy's admin port: `/live`, `/ready`, `/metrics`. Kubelet probes it on the pod IP, so
    /// it listens on every address and is never captured.
    pub admin_port: u16,
    /// The probe's port: `/load`, `/live`, `/ready`, `/metrics`; never captured.
    pub probe_port: u16,
    /// The control service's address (discovery and certificates), given to the proxy as
    /// `VANE_CONTROL`; with it the proxy also gets the trust roots and the trust domain.
    pub control: Option<String>,
    /// The trust domain of identities (`VANE_IDENTITY_TRUST_DOMAIN`, with `control`).
    pub trust_domain: String,
    /// Audience of the projected ServiceAccount token the identity service checks.
    pub token_audience: String,
    /// Lifetime asked for that token (kubelet refreshes it at 80 %); at least 600.
    pub token_seconds: i64,
    /// The proxy's default CPU request.
    pub proxy_cpu: String,
    /// The proxy's default memory request.
    pub proxy_memory: String,
    /// The proxy's default memory limit (`vane.io/proxy-memory` sets request and limit alike).
    pub proxy_memory_limit: String,
    /// The proxy's default log filter.
    pub log_level: String,
}

impl Default for InjectSettings {
    fn default() -> Self {
        let version = env!("CARGO_PKG_VERSION").to_string();
        InjectSettings {
            proxy_image: format!("vane-proxy:{version}"),
            probe_image: format!("vane-gpu-probe:{version}"),
            version,
            pull_policy: None,
            // Internal: an unprivileged UID that no common base image uses for its app user
            // (distroless nonroot is 65532, many images use 1000 or 1001).
            proxy_uid: 2102,
            outbound_port: 4140,
            inbound_port: 4143,
            admin_port: 4191,
            probe_port: 4192,
            control: None,
            trust_domain: "cluster.local".to_string(),
            token_audience: "vane-identity".to_string(),
            // One hour: kubelet rotates it after 48 minutes, and a stolen token ages out soon.
            token_seconds: 3600,
            // Internal: a request, not a limit: a sidecar throttled by a CPU limit adds its
            // throttling to every request's latency, so the proxy gets no CPU limit at all.
            proxy_cpu: "100m".to_string(),
            proxy_memory: "64Mi".to_string(),
            proxy_memory_limit: "256Mi".to_string(),
            log_level: "info".to_string(),
        }
    }
}
