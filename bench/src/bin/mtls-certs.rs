//! `mtls-certs DIR NAME=SPIFFE_ID...`: a trust anchor, an issuer it signs and, for every SPIFFE ID,
//! a workload certificate signed by the issuer, made with `vane_identity` exactly as the control
//! service's identity service makes them (ECDSA P-256, the ID as the only URI SAN, client and
//! server use). For the mTLS benchmark (bench/mtls): the files are made at run time into a
//! temporary directory and never kept.
//!
//! Writes `DIR/ca.pem` (the anchor: what every peer trusts), `DIR/issuer.pem` and, for each
//! `NAME=ID`, `DIR/NAME.crt` (leaf then issuer), `DIR/NAME.key` (PKCS#8, mode 0600) and
//! `DIR/NAME.pem` (both, as HAProxy's `crt` wants them).

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::time::Duration;
use vane_identity::SpiffeId;
use vane_identity::ca::{Authority, generate};
use vane_identity::csr::Request;

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    const USAGE: &str = "usage: mtls-certs DIR NAME=SPIFFE_ID...";
    let Some((dir, named)) = args.split_first() else { bail!(USAGE) };
    if named.is_empty() {
        bail!(USAGE);
    }
    let dir = Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let mut ids = Vec::new();
    for arg in named {
        let Some((name, id)) = arg.split_once('=') else { bail!(USAGE) };
        ids.push((name.to_string(), SpiffeId::parse(id).with_context(|| format!("{id} is not a SPIFFE ID"))?));
    }
    let domain = ids[0].1.trust_domain().to_string();
    let g = generate(&domain, 2, 1)?;
    let authority = Authority::from_pem(&domain, &g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem)?;
    write(&dir.join("ca.pem"), &g.anchor_pem, false)?;
    write(&dir.join("issuer.pem"), &g.issuer_pem, false)?;
    for (name, id) in &ids {
        let request = Request::new(id)?;
        let issued = authority.issue(&request.der, id, Duration::from_secs(86_400))?;
        let key_pem = request.key_pair().serialize_pem();
        write(&dir.join(format!("{name}.crt")), &issued.chain_pem, false)?;
        write(&dir.join(format!("{name}.key")), &key_pem, true)?;
        write(&dir.join(format!("{name}.pem")), &format!("{}{}", issued.chain_pem, key_pem), true)?;
    }
    Ok(())
}
