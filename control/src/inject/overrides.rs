//! The pod annotations a user sets to opt in or out and to tune what is injected, parsed and
//! checked. A value that cannot be used is an [`InvalidAnnotation`]: the pod is then left as it
//! is (and the reason logged), because a sidecar built from a bad value would make the API
//! server refuse the whole pod.

use std::collections::BTreeMap;

/// Opt in (`enabled`) or out (`disabled`): on a pod, or as a label on its namespace.
pub const INJECT: &str = "vane.io/inject";
/// Set on every injected pod: the injector's version.
pub const INJECTED: &str = "vane.io/injected";
/// `enabled` adds the load probe to a pod without a GPU; `disabled` leaves it out of one with.
pub const PROBE: &str = "vane.io/probe";
/// The model server's port (the inbound target, and where the probe scrapes).
pub const MODEL_PORT: &str = "vane.io/model-port";
/// The model server's kind: `vllm`, `sglang`, `triton` or `tgi`.
pub const MODEL_SERVER: &str = "vane.io/model-server";
/// The proxy's CPU request.
pub const PROXY_CPU: &str = "vane.io/proxy-cpu";
/// The proxy's memory request and limit.
pub const PROXY_MEMORY: &str = "vane.io/proxy-memory";
/// Inbound ports that are not captured: `8080,9000-9010`.
pub const SKIP_INBOUND_PORTS: &str = "vane.io/skip-inbound-ports";
/// Outbound destination ports that are not captured.
pub const SKIP_OUTBOUND_PORTS: &str = "vane.io/skip-outbound-ports";
/// The proxy's log filter (`VANE_LOG`), e.g. `debug` or `vane_proxy=debug,info`.
pub const LOG_LEVEL: &str = "vane.io/log-level";

/// An annotation whose value cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}: {value:?} {why}")]
pub struct InvalidAnnotation {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// `enabled` or `disabled`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    /// `enabled`.
    Enabled,
    /// `disabled`.
    Disabled,
}

/// The model servers the probe knows the metric names of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelServer {
    /// vLLM: serves and exports metrics on 8000.
    Vllm,
    /// SGLang: 30000.
    Sglang,
    /// Triton / KServe v2: HTTP on 8000, gRPC on 8001, metrics on 8002.
    Triton,
    /// Text Generation Inference: 80 in its image.
    Tgi,
}

// === impl ModelServer ===

impl ModelServer {
    /// The name the annotation and `vane-gpu-probe --server` use.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelServer::Vllm => "vllm",
            ModelServer::Sglang => "sglang",
            ModelServer::Triton => "triton",
            ModelServer::Tgi => "tgi",
        }
    }

    /// The port the server listens on when started with its own defaults.
    pub fn default_port(self) -> u16 {
        match self {
            ModelServer::Vllm | ModelServer::Triton => 8000,
            ModelServer::Sglang => 30000,
            ModelServer::Tgi => 80,
        }
    }

    /// Where its Prometheus page is, given the port it serves on: Triton has a port of its
    /// own for metrics, the others export on the serving port.
    pub fn metrics_port(self, serving: u16) -> u16 {
        match self {
            ModelServer::Triton => 8002,
            _ => serving,
        }
    }

    fn parse(s: &str) -> Option<ModelServer> {
        [ModelServer::Vllm, ModelServer::Sglang, ModelServer::Triton, ModelServer::Tgi]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// The tuning annotations of one pod, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `vane.io/probe`.
    pub probe: Option<Toggle>,
    /// `vane.io/model-port`.
    pub model_port: Option<u16>,
    /// `vane.io/model-server`.
    pub model_server: Option<ModelServer>,
    /// `vane.io/proxy-cpu`.
    pub proxy_cpu: Option<String>,
    /// `vane.io/proxy-memory`.
    pub proxy_memory: Option<String>,
    /// `vane.io/skip-inbound-ports`, each a port or a range `a-b`.
    pub skip_inbound: Vec<String>,
    /// `vane.io/skip-outbound-ports`.
    pub skip_outbound: Vec<String>,
    /// `vane.io/log-level`.
    pub log_level: Option<String>,
}

/// `vane.io/inject` on a pod, or the same label on a namespace.
pub fn inject_toggle(map: &BTreeMap<String, String>) -> Result<Option<Toggle>, InvalidAnnotation> {
    map.get(INJECT).map(|v| toggle(INJECT, v)).transpose()
}

// === impl Overrides ===

impl Overrides {
    /// Reads and checks every tuning annotation.
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Overrides, InvalidAnnotation> {
        let get = |key: &'static str| annotations.get(key).map(|v| (key, v.trim()));
        let bad = |key: &'static str, value: &str, why: &'static str| InvalidAnnotation {
            key,
            value: value.to_string(),
            why,
        };
        let mut o = Overrides::default();
        if let Some((k, v)) = get(PROBE) {
            o.probe = Some(toggle(k, v)?);
        }
        if let Some((k, v)) = get(MODEL_PORT) {
            o.model_port = Some(port(v).ok_or_else(|| bad(k, v, "is not a port (1-65535)"))?);
        }
        if let Some((k, v)) = get(MODEL_SERVER) {
            o.model_server =
                Some(ModelServer::parse(v).ok_or_else(|| bad(k, v, "is not one of vllm, sglang, triton, tgi"))?);
        }
        for (key, slot) in [(PROXY_CPU, &mut o.proxy_cpu), (PROXY_MEMORY, &mut o.proxy_memory)] {
            if let Some((k, v)) = get(key) {
                if !is_quantity(v) {
                    return Err(bad(k, v, "is not a Kubernetes quantity (e.g. 200m, 128Mi)"));
                }
                *slot = Some(v.to_string());
            }
        }
        for (key, slot) in [(SKIP_INBOUND_PORTS, &mut o.skip_inbound), (SKIP_OUTBOUND_PORTS, &mut o.skip_outbound)] {
            if let Some((k, v)) = get(key) {
                *slot =
                    port_list(v).ok_or_else(|| bad(k, v, "is not a list of ports and ranges (e.g. 8080,9000-9010)"))?;
            }
        }
        if let Some((k, v)) = get(LOG_LEVEL) {
            let ok = !v.is_empty()
                && v.len() <= 256
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"_=,:.-".contains(&b));
            if !ok {
                return Err(bad(k, v, "is not a log filter (e.g. debug or vane_proxy=debug,info)"));
            }
            o.log_level = Some(v.to_string());
        }
        Ok(o)
    }
}

fn toggle(key: &'static str, value: &str) -> Result<Toggle, InvalidAnnotation> {
    match value.trim() {
        "enabled" => Ok(Toggle::Enabled),
        "disabled" => Ok(Toggle::Disabled),
        _ => Err(InvalidAnnotation { key, value: value.to_string(), why: "is neither enabled nor disabled" }),
    }
}

fn port(s: &str) -> Option<u16> {
    s.trim().parse::<u16>().ok().filter(|p| *p != 0)
}

/// `8080, 9000-9010` → `["8080", "9000-9010"]`; `None` if any item is not a port or an
/// ascending range. An empty value is an empty list.
fn port_list(s: &str) -> Option<Vec<String>> {
    s.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('-') {
            None => port(item).map(|p| p.to_string()),
            Some((a, b)) => match (port(a), port(b)) {
                (Some(a), Some(b)) if a <= b => Some(format!("{a}-{b}")),
                _ => None,
            },
        })
        .collect()
}

/// Whether `s` is a Kubernetes resource quantity: a decimal number with an optional binary
/// (`Ki`…`Ei`), decimal (`n u m k M G T P E`) or exponent (`e3`) suffix.
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let number_ok = match number.split_once('.') {
        None => !number.is_empty(),
        Some((int, frac)) => (!int.is_empty() || !frac.is_empty()) && !frac.contains('.'),
    };
    let suffix_ok = match suffix {
        "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        exp => exp.strip_prefix(['e', 'E']).is_some_and(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
        }),
    };
    number_ok && suffix_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn quantities() {
        for ok in ["100m", "1", "0.5", ".5", "128Mi", "1Gi", "2e3", "1E-2", "+1k"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "lots", "100mb", "1 Gi", "1e", "12Mi5"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn port_lists() {
        assert_eq!(port_list(" 8080, 9000-9010 ,"), Some(vec!["8080".into(), "9000-9010".into()]));
        assert_eq!(port_list(""), Some(vec![]));
        for bad in ["0", "65536", "90-80", "http", "1-2-3"] {
            assert_eq!(port_list(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_annotation_is_read_or_refused_with_its_key() {
        let o = Overrides::parse(&map(&[
            (PROBE, "enabled"),
            (MODEL_PORT, "8001"),
            (MODEL_SERVER, "triton"),
            (PROXY_CPU, "250m"),
            (PROXY_MEMORY, "128Mi"),
            (SKIP_INBOUND_PORTS, "8002"),
            (SKIP_OUTBOUND_PORTS, "5432,6379"),
            (LOG_LEVEL, "vane_proxy=debug,info"),
        ]))
        .unwrap();
        assert_eq!(o.probe, Some(Toggle::Enabled));
        assert_eq!((o.model_port, o.model_server), (Some(8001), Some(ModelServer::Triton)));
        assert_eq!((o.proxy_cpu.as_deref(), o.proxy_memory.as_deref()), (Some("250m"), Some("128Mi")));
        assert_eq!((o.skip_inbound.len(), o.skip_outbound.len()), (1, 2));
        for (key, value) in [
            (PROBE, "yes"),
            (MODEL_PORT, "http"),
            (MODEL_SERVER, "ollama"),
            (PROXY_CPU, "fast"),
            (SKIP_OUTBOUND_PORTS, "all"),
            (LOG_LEVEL, "debug; rm -rf"),
        ] {
            let err = Overrides::parse(&map(&[(key, value)])).unwrap_err();
            assert_eq!(err.key, key);
        }
        assert!(inject_toggle(&map(&[(INJECT, "true")])).is_err());
    }
}
