//! The containers and the volume the injector adds, built from the settings, the pod's
//! annotations and what the pod itself declares.

use super::overrides::{ModelServer, Overrides, Toggle};
use super::settings::InjectSettings;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext,
    ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;

/// The capture init container.
pub const INIT_NAME: &str = "vane-init";
/// The proxy (a native sidecar).
pub const PROXY_NAME: &str = "vane-proxy";
/// The load probe (a native sidecar).
pub const PROBE_NAME: &str = "vane-gpu-probe";
/// The projected ServiceAccount token volume.
pub const TOKEN_VOLUME: &str = "vane-identity-token";
/// Where that token is mounted in the proxy (the file is `token`).
pub const TOKEN_DIR: &str = "/var/run/secrets/vane.io/identity";
/// The trust roots volume: the ConfigMap `vane-control identity init` prints, optional so that a
/// pod whose namespace lacks it still starts (its proxy then runs without mTLS).
pub const ROOTS_VOLUME: &str = crate::identity::init::ROOTS_CONFIGMAP;
/// Where the trust roots are mounted in the proxy (the file is `ca.crt`).
pub const ROOTS_DIR: &str = "/var/run/vane/roots";
/// The extended resource whose request makes a pod a GPU model server.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";

/// What is decided about one pod before its containers are built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Where the model server listens (the inbound target).
    pub model_port: u16,
    /// Its kind, when annotated or recognised from the image.
    pub model_server: Option<ModelServer>,
    /// Where its Prometheus page is.
    pub metrics_port: u16,
    /// Whether the load probe is added.
    pub probe: bool,
}

// === impl Plan ===

impl Plan {
    /// The model port: the annotation, else the first port the first container declares, else
    /// the kind's default, else 8000. The kind: the annotation, else recognised from the first
    /// container's image. The probe: the annotation, else whether any container asks for a GPU.
    pub fn of(spec: &PodSpec, o: &Overrides) -> Plan {
        let app = spec.containers.first();
        let model_server = o.model_server.or_else(|| app.and_then(|c| c.image.as_deref()).and_then(guess_server));
        let declared =
            app.and_then(|c| c.ports.as_ref()).and_then(|ports| ports.first()).and_then(|p| port_u16(p.container_port));
        let model_port = o.model_port.or(declared).or(model_server.map(ModelServer::default_port)).unwrap_or(8000);
        let named_metrics = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| matches!(p.name.as_deref(), Some("metrics" | "http-metrics" | "prometheus")));
        let metrics_port = named_metrics
            .and_then(|p| port_u16(p.container_port))
            .or(model_server.map(|m| m.metrics_port(model_port)))
            .unwrap_or(model_port);
        let probe = match o.probe {
            Some(t) => t == Toggle::Enabled,
            None => wants_gpu(spec),
        };
        Plan { model_port, model_server, metrics_port, probe }
    }
}

fn port_u16(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The kind, from the image's repository name, for the usual images of each server.
fn guess_server(image: &str) -> Option<ModelServer> {
    let image = image.to_ascii_lowercase();
    let repo = image.split(['@', ':']).next().unwrap_or(&image);
    [
        ("vllm", ModelServer::Vllm),
        ("sglang", ModelServer::Sglang),
        ("tritonserver", ModelServer::Triton),
        ("text-generation-inference", ModelServer::Tgi),
    ]
    .into_iter()
    .find_map(|(needle, kind)| repo.contains(needle).then_some(kind))
}

/// Whether any container (init containers included) asks for `nvidia.com/gpu` in its limits or
/// requests, with a quantity other than 0.
pub fn wants_gpu(spec: &PodSpec) -> bool {
    let all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
    all.filter_map(|c| c.resources.as_ref()).any(|r| {
        [&r.limits, &r.requests].into_iter().flatten().filter_map(|m| m.get(GPU_RESOURCE)).any(|q| {
            q.0.trim().chars().take_while(|c| c.is_ascii_digit() || *c == '.').any(|c| ('1'..='9').contains(&c))
        })
    })
}

/// The capture step: `vane-proxy init`, root with NET_ADMIN and NET_RAW and nothing else.
pub fn init(s: &InjectSettings, o: &Overrides, plan: &Plan) -> Container {
    let mut skip_in = vec![s.admin_port.to_string()];
    if plan.probe {
        skip_in.push(s.probe_port.to_string());
    }
    skip_in.extend(o.skip_inbound.iter().cloned());
    let mut args = vec![
        "init".to_string(),
        "--proxy-uid".to_string(),
        s.proxy_uid.to_string(),
        "--inbound-port".to_string(),
        s.inbound_port.to_string(),
        "--outbound-port".to_string(),
        s.outbound_port.to_string(),
        "--skip-inbound-ports".to_string(),
        skip_in.join(","),
    ];
    if !o.skip_outbound.is_empty() {
        args.extend(["--skip-outbound-ports".to_string(), o.skip_outbound.join(",")]);
    }
    Container {
        name: INIT_NAME.to_string(),
        image: Some(s.proxy_image.clone()),
        image_pull_policy: s.pull_policy.clone(),
        args: Some(args),
        resources: Some(resources(&[("cpu", "10m"), ("memory", "16Mi")], &[("cpu", "100m"), ("memory", "64Mi")])),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_string(), "NET_RAW".to_string()]),
                drop: Some(vec!["ALL".to_string()]),
            }),
            seccomp_profile: Some(runtime_default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The proxy, as a native sidecar.
pub fn proxy(s: &InjectSettings, o: &Overrides, plan: &Plan) -> Container {
    let mut vars = vec![
        env("VANE_OUTBOUND", format!("127.0.0.1:{}", s.outbound_port)),
        env("VANE_INBOUND", format!("0.0.0.0:{}", s.inbound_port)),
        env("VANE_ADMIN", format!("0.0.0.0:{}", s.admin_port)),
        env("VANE_LOG", o.log_level.clone().unwrap_or_else(|| s.log_level.clone())),
        env("VANE_INBOUND_FORWARD_TO", format!("127.0.0.1:{}", plan.model_port)),
        // The init step captures the pod's traffic: connections come in by their original destination.
        env_of("VANE_TRANSPARENT", "1"),
        env("VANE_IDENTITY_TOKEN", format!("{TOKEN_DIR}/token")),
        field_env("VANE_POD_NAME", "metadata.name"),
        field_env("VANE_POD_NAMESPACE", "metadata.namespace"),
        field_env("VANE_SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ];
    let mut mounts = vec![VolumeMount {
        name: TOKEN_VOLUME.to_string(),
        mount_path: TOKEN_DIR.to_string(),
        read_only: Some(true),
        ..Default::default()
    }];
    if let Some(control) = &s.control {
        vars.push(env_of("VANE_CONTROL", control));
        vars.push(env("VANE_IDENTITY_ROOTS", format!("{ROOTS_DIR}/{}", crate::identity::init::ROOTS_KEY)));
        vars.push(env_of("VANE_IDENTITY_TRUST_DOMAIN", &s.trust_domain));
        mounts.push(VolumeMount {
            name: ROOTS_VOLUME.to_string(),
            mount_path: ROOTS_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if plan.probe {
        vars.push(env("VANE_LOAD_FROM", format!("http://127.0.0.1:{}/load", s.probe_port)));
    }
    let memory = o.proxy_memory.as_deref();
    let cpu = o.proxy_cpu.as_deref().unwrap_or(&s.proxy_cpu);
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::Int(s.admin_port.into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(1),
        failure_threshold: Some(failures),
        ..Default::default()
    };
    Container {
        name: PROXY_NAME.to_string(),
        image: Some(s.proxy_image.clone()),
        image_pull_policy: s.pull_policy.clone(),
        // A native sidecar: started before the app (once its startup probe passes) and stopped after it.
        restart_policy: Some("Always".to_string()),
        env: Some(vars),
        ports: Some(vec![port("vane-inbound", s.inbound_port), port("vane-admin", s.admin_port)]),
        // The app starts only once the proxy has a config: up to two minutes, checked every second.
        startup_probe: Some(probe("/ready", 1, 120)),
        readiness_probe: Some(probe("/ready", 5, 3)),
        liveness_probe: Some(probe("/live", 10, 3)),
        resources: Some(resources(
            &[("cpu", cpu), ("memory", memory.unwrap_or(&s.proxy_memory))],
            &[("memory", memory.unwrap_or(&s.proxy_memory_limit))],
        )),
        security_context: Some(restricted(s.proxy_uid)),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The load probe, as a native sidecar. It gets a liveness probe only: its `/ready` waits for
/// the first good scrape of the model server, which starts after it, and must not hold the pod.
pub fn probe(s: &InjectSettings, o: &Overrides, plan: &Plan) -> Container {
    let server = plan.model_server.map_or("auto", ModelServer::as_str);
    Container {
        name: PROBE_NAME.to_string(),
        image: Some(s.probe_image.clone()),
        image_pull_policy: s.pull_policy.clone(),
        restart_policy: Some("Always".to_string()),
        env: Some(vec![
            env("VANE_PROBE_METRICS_URL", format!("http://127.0.0.1:{}/metrics", plan.metrics_port)),
            env_of("VANE_PROBE_SERVER", server),
            env("VANE_PROBE_LISTEN", format!("0.0.0.0:{}", s.probe_port)),
            env("VANE_PROBE_LOG", o.log_level.clone().unwrap_or_else(|| s.log_level.clone())),
        ]),
        ports: Some(vec![port("vane-probe", s.probe_port)]),
        liveness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/live".to_string()),
                port: IntOrString::Int(s.probe_port.into()),
                ..Default::default()
            }),
            period_seconds: Some(10),
            timeout_seconds: Some(1),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: Some(resources(&[("cpu", "20m"), ("memory", "16Mi")], &[("memory", "64Mi")])),
        security_context: Some(restricted(s.proxy_uid)),
        ..Default::default()
    }
}

/// The projected ServiceAccount token the identity service checks (audience `vane-identity`).
pub fn token_volume(s: &InjectSettings) -> Volume {
    Volume {
        name: TOKEN_VOLUME.to_string(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(s.token_audience.clone()),
                    expiration_seconds: Some(s.token_seconds.max(600)),
                    path: "token".to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The trust roots ConfigMap, optional (added with the control address only).
pub fn roots_volume() -> Volume {
    Volume {
        name: ROOTS_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: crate::identity::init::ROOTS_CONFIGMAP.to_string(),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn restricted(uid: i64) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), add: None }),
        seccomp_profile: Some(runtime_default()),
        ..Default::default()
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }
}

fn resources(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> ResourceRequirements {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
        pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
    };
    ResourceRequirements { requests: Some(map(requests)), limits: Some(map(limits)), ..Default::default() }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: number.into(),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar { name: name.to_string(), value: Some(value), value_from: None }
}

fn env_of(name: &str, value: &str) -> EnvVar {
    env(name, value.to_string())
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_string(), api_version: None }),
            ..Default::default()
        }),
    }
}
