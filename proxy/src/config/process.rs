//! Process settings: the listener addresses, runtime threads and drain grace of the file's
//! `proxy:` section. They concern this process alone (the control service never sends them, and
//! a change takes effect only at restart), so the proxy reads and checks them itself; the routing
//! crate compiles only what routing needs.

use std::net::SocketAddr;
use std::time::Duration;
use vane_route::table::FieldError;
use vane_route::{Config, ConfigError, Table};

/// The process settings of a config, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// Outbound listener, if the file sets one.
    pub outbound: Option<SocketAddr>,
    /// Inbound listener, if the file sets one.
    pub inbound: Option<SocketAddr>,
    /// Admin listener, if the file sets one.
    pub admin: Option<SocketAddr>,
    /// Runtime threads, if the file sets them.
    pub threads: Option<usize>,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub drain_grace: Duration,
}

impl Process {
    /// Reads and checks the process settings of `config`; every problem is reported with its field.
    pub fn from_config(config: &Config) -> Result<Process, Vec<FieldError>> {
        let p = &config.proxy;
        let mut problems = Vec::new();
        let mut addr = |field: &str, s: &Option<String>| match s.as_deref().map(str::parse::<SocketAddr>) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => {
                let shown = s.as_deref().unwrap_or_default();
                problems.push(FieldError {
                    field: field.into(),
                    reason: format!("{shown:?} is not an ip:port address (e.g. 127.0.0.1:8000)"),
                });
                None
            }
        };
        let (outbound, inbound, admin) =
            (addr("proxy.outbound", &p.outbound), addr("proxy.inbound", &p.inbound), addr("proxy.admin", &p.admin));
        if let Some(t) = p.threads.filter(|t| !(1..=64).contains(t)) {
            problems.push(FieldError { field: "proxy.threads".into(), reason: format!("{t} is out of range 1..=64") });
        }
        let process = Process { outbound, inbound, admin, threads: p.threads, drain_grace: p.drain_grace.0 };
        if problems.is_empty() { Ok(process) } else { Err(problems) }
    }

    /// The process settings of a table the proxy compiled (through [`compile`], so they are valid).
    pub fn of(table: &Table) -> Process {
        Process::from_config(&table.source).unwrap_or_default()
    }
}

/// Compiles a config the proxy runs: the routing table, with the process settings checked too, all
/// problems reported together.
pub fn compile(config: Config) -> Result<Table, ConfigError> {
    let process = Process::from_config(&config).err().unwrap_or_default();
    match Table::from_config(config) {
        Ok(table) if process.is_empty() => Ok(table),
        Ok(_) => Err(ConfigError::Invalid(process)),
        Err(ConfigError::Invalid(mut routing)) => {
            routing.extend(process);
            Err(ConfigError::Invalid(routing))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml).unwrap()
    }

    #[test]
    fn process_settings_are_read_and_checked() {
        let p = Process::from_config(&config(
            "proxy: { outbound: \"127.0.0.1:1\", admin: \"[::1]:2\", threads: 2, drain_grace: 3s }",
        ))
        .unwrap();
        assert_eq!(p.outbound, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!((p.inbound, p.admin), (None, Some("[::1]:2".parse().unwrap())));
        assert_eq!((p.threads, p.drain_grace), (Some(2), Duration::from_secs(3)));
        assert_eq!(Process::from_config(&Config::default()).unwrap().drain_grace, Duration::from_secs(10));
        for (yaml, field, reason) in [
            ("proxy: { threads: 0 }", "proxy.threads", "0 is out of range 1..=64"),
            ("proxy: { threads: 65 }", "proxy.threads", "65 is out of range 1..=64"),
            ("proxy: { outbound: localhost }", "proxy.outbound", "\"localhost\" is not an ip:port address"),
            ("proxy: { inbound: \":80\" }", "proxy.inbound", "\":80\" is not an ip:port address"),
            ("proxy: { admin: \"1.2.3.4\" }", "proxy.admin", "\"1.2.3.4\" is not an ip:port address"),
        ] {
            let e = Process::from_config(&config(yaml)).unwrap_err();
            assert_eq!(e.len(), 1, "{yaml}: {e:?}");
            assert_eq!(e[0].field, field, "{yaml}");
            assert!(e[0].reason.starts_with(reason), "{yaml}: {}", e[0].reason);
        }
    }

    #[test]
    fn compiling_reports_routing_and_process_problems_together() {
        let yaml = "backends: [{ name: a, endpoints: [x] }]\nproxy: { threads: 100, outbound: nowhere }";
        let Err(ConfigError::Invalid(problems)) = compile(config(yaml)) else { panic!("accepted") };
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["backends[0].endpoints[0]", "proxy.outbound", "proxy.threads"]);
        let Err(ConfigError::Invalid(problems)) = compile(config("proxy: { threads: 100 }")) else { panic!() };
        assert_eq!(problems.len(), 1);
        assert!(compile(config("proxy: { threads: 4 }")).is_ok());
    }
}
