//! A CA and a serving certificate for the webhook, for a first install without cert-manager:
//! `vane-control webhook-cert` prints a `kubernetes.io/tls` Secret that holds both, and the
//! CA in the form the MutatingWebhookConfiguration's `caBundle` wants (base64 PEM).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::time::{Duration, SystemTime};

/// A freshly made CA and the webhook's certificate and key, PEM.
#[derive(Clone, Debug)]
pub struct WebhookCerts {
    /// The CA certificate (what the API server trusts).
    pub ca: String,
    /// The serving certificate.
    pub cert: String,
    /// The serving key.
    pub key: String,
}

/// The DNS names the API server calls a Service by: `<svc>.<ns>.svc` (the one it uses), and the
/// longer and shorter forms for tools that call it otherwise.
pub fn service_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
        format!("{service}.{namespace}"),
    ]
}

/// Makes a CA valid for `days` and, signed by it, an ECDSA P-256 serving certificate for
/// `names` valid as long. Both start an hour ago, so a node whose clock is a little behind
/// still accepts them.
pub fn generate(names: &[String], days: u32) -> Result<WebhookCerts, rcgen::Error> {
    let not_before = SystemTime::now() - Duration::from_secs(3600);
    let not_after = SystemTime::now() + Duration::from_secs(u64::from(days) * 86_400);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name = name("vane-injector-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = not_before.into();
    ca_params.not_after = not_after.into();
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name = name(names.first().map_or("vane-injector", String::as_str));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    Ok(WebhookCerts { ca: ca.pem(), cert: cert.pem(), key: key.serialize_pem() })
}

fn name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// The `caBundle` value: the CA's PEM, base64.
pub fn ca_bundle(certs: &WebhookCerts) -> String {
    STANDARD.encode(&certs.ca)
}

/// A `kubernetes.io/tls` Secret with `tls.crt`, `tls.key` and `ca.crt`, and a comment line
/// with the `caBundle`.
pub fn secret_yaml(secret: &str, namespace: &str, certs: &WebhookCerts) -> String {
    format!(
        "# caBundle for the MutatingWebhookConfiguration: {bundle}\n\
         apiVersion: v1\n\
         kind: Secret\n\
         metadata:\n  name: {secret}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/name: vane-injector\n\
         type: kubernetes.io/tls\n\
         data:\n  tls.crt: {crt}\n  tls.key: {key}\n  ca.crt: {bundle}\n",
        bundle = ca_bundle(certs),
        crt = STANDARD.encode(&certs.cert),
        key = STANDARD.encode(&certs.key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_holds_a_pair_rustls_accepts() {
        let names = service_names("vane-injector", "vane-system", "cluster.local");
        let certs = generate(&names, 365).unwrap();
        let yaml = secret_yaml("vane-injector-tls", "vane-system", &certs);
        let field = |k: &str| {
            let line = yaml.lines().find(|l| l.trim_start().starts_with(k)).unwrap();
            STANDARD.decode(line.split_once(": ").unwrap().1).unwrap()
        };
        assert_eq!(field("tls.crt:"), certs.cert.as_bytes());
        assert_eq!(field("ca.crt:"), certs.ca.as_bytes());
        assert!(yaml.starts_with(&format!("# caBundle for the MutatingWebhookConfiguration: {}\n", ca_bundle(&certs))));
        use rustls_pki_types::pem::PemObject;
        let chain = vec![rustls_pki_types::CertificateDer::from_pem_slice(certs.cert.as_bytes()).unwrap()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&field("tls.key:")).unwrap();
        rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).unwrap();
    }
}
