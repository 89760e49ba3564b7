//! Workload identity for Vane, shared by the proxy (which asks for a certificate and speaks
//! mTLS) and the control service (which checks a proxy's token and signs its request):
//!
//! - [`spiffe`]: SPIFFE IDs, `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>`;
//! - [`ca`]: the trust anchor and issuer: made for a quick start, read from PEM, signing;
//! - [`csr`]: a workload's in-memory key and its certificate request;
//! - [`tls`]: the rustls configurations of both sides of a meshed hop (TLS 1.3 only) and the
//!   check of the peer's identity;
//! - [`peer`]: what a peer's certificate names;
//! - [`hello`]: a ClientHello's server name, from a connection's first bytes;
//! - [`pem`]: PEM text to DER;
//! - [`files`]: credentials kept in files, read again and compared by content;
//! - [`protocol`]: the certificate service's requests and answers.
//!
//! Only the ring provider is compiled (as for kube's client), and it is passed to rustls
//! explicitly, so nothing depends on a process-wide default provider.
#![warn(missing_docs)]

pub mod ca;
pub mod csr;
pub mod files;
pub mod hello;
pub mod peer;
pub mod pem;
pub mod protocol;
pub mod spiffe;
pub mod tls;

pub use spiffe::SpiffeId;
pub use tls::Credentials;
