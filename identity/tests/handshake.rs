//! Real TLS handshakes over loopback TCP between the two configurations of a meshed hop:
//! who is seen on each side, and what is refused (another identity, another CA, an expired or
//! not-yet-valid certificate, TLS 1.2, a request for someone else's identity).

use rustls::{ClientConnection, ServerConnection, StreamOwned};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use vane_identity::ca::{self, Authority, IssueError};
use vane_identity::csr::Request;
use vane_identity::tls::{self, Credentials, PeerError};
use vane_identity::{SpiffeId, peer};

const TD: &str = "cluster.local";

fn authority() -> Authority {
    let g = ca::generate(TD, 30, 10).unwrap();
    Authority::from_pem(TD, &g.issuer_pem, &g.issuer_key_pem, &g.anchor_pem).unwrap()
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

/// Credentials for `who`, through the same path a proxy takes: an in-memory key, a request,
/// the authority's check and signature.
fn creds(ca: &Authority, who: &SpiffeId) -> Credentials {
    let req = Request::new(who).unwrap();
    let issued = ca.issue(&req.der, who, ca::DEFAULT_LIFETIME).unwrap();
    Credentials::new(&issued.chain_pem, req.key(), ca.anchors_pem()).unwrap()
}

fn creds_valid(ca: &Authority, who: &SpiffeId, from: SystemTime, to: SystemTime) -> Credentials {
    let req = Request::new(who).unwrap();
    let issued = ca.sign(req.key_pair(), who, from, to).unwrap();
    Credentials::new(&issued.chain_pem, req.key(), ca.anchors_pem()).unwrap()
}

/// What each side saw: the client's view of the server's identity and the server's view of the
/// client's, or the error each side hit.
struct Outcome {
    client: Result<Option<SpiffeId>, String>,
    server: Result<Option<SpiffeId>, String>,
}

fn handshake(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let srv = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut s = StreamOwned::new(ServerConnection::new(server).unwrap(), tcp);
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        s.write_all(b"pong").map_err(|e| e.to_string())?;
        s.flush().map_err(|e| e.to_string())?;
        Ok(peer::id_of_chain(s.conn.peer_certificates()))
    });
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let conn = ClientConnection::new(client, tls::server_name(addr)).unwrap();
    let mut c = StreamOwned::new(conn, tcp);
    let client = (|| {
        c.write_all(b"ping").map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(peer::id_of_chain(c.conn.peer_certificates()))
    })();
    drop(c);
    Outcome { client, server: srv.join().unwrap() }
}

#[test]
fn a_meshed_handshake_shows_each_side_the_others_identity() {
    let ca = authority();
    let (llm, app) = (id("models", "llm"), id("apps", "chat"));
    let server = creds(&ca, &llm);
    let client = creds(&ca, &app);
    let out = handshake(server.server_config().unwrap(), client.client_config(&tls::ALPN).unwrap());
    assert_eq!(out.client, Ok(Some(llm.clone())));
    assert_eq!(out.server, Ok(Some(app)));
}

#[test]
fn the_client_refuses_a_server_of_another_identity_even_when_the_ca_signed_it() {
    let ca = authority();
    let server = creds(&ca, &id("models", "impostor"));
    let client = creds(&ca, &id("apps", "chat"));
    let out = handshake(server.server_config().unwrap(), client.client_config(&tls::ALPN).unwrap());
    let seen = out.client.unwrap();
    let chain_id = seen.clone();
    assert_eq!(chain_id, Some(id("models", "impostor")));
    // What the connector does after the handshake, before sending anything.
    let expected = id("models", "llm");
    let der = server.chain.clone();
    assert_eq!(
        tls::check_peer(Some(&der), &expected),
        Err(PeerError::Wrong {
            expected: expected.to_string(),
            found: "spiffe://cluster.local/ns/models/sa/impostor".into()
        })
    );
    assert_eq!(tls::check_peer(None, &expected), Err(PeerError::Anonymous { expected: expected.to_string() }));
    assert_eq!(tls::check_peer(Some(&der), &id("models", "impostor")), Ok(id("models", "impostor")));
}

#[test]
fn a_caller_without_a_certificate_is_served_and_seen_as_nobody() {
    let ca = authority();
    let server = creds(&ca, &id("models", "llm"));
    let anon = tls::anonymous_client_config(&server.roots, &tls::ALPN).unwrap();
    let out = handshake(server.server_config().unwrap(), anon);
    assert_eq!(out.server, Ok(None));
    assert_eq!(out.client, Ok(Some(id("models", "llm"))));
}

#[test]
fn a_server_of_another_trust_anchor_is_refused_and_so_is_its_client() {
    let (ours, theirs) = (authority(), authority());
    let server = creds(&theirs, &id("models", "llm"));
    let client = creds(&ours, &id("apps", "chat"));
    let out = handshake(server.server_config().unwrap(), client.client_config(&tls::ALPN).unwrap());
    let err = out.client.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "the client refuses: {err}");

    let server = creds(&ours, &id("models", "llm"));
    let client = creds(&theirs, &id("apps", "chat"));
    let out = handshake(server.server_config().unwrap(), client.client_config(&tls::ALPN).unwrap());
    assert!(out.server.is_err(), "the server refuses a client certificate it cannot trust");
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = authority();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let client = creds(&ca, &id("apps", "chat"));
    for (from, to, why) in [(now - 3 * hour, now - hour, "expired"), (now + hour, now + 3 * hour, "not valid")] {
        let server = creds_valid(&ca, &id("models", "llm"), from, to);
        let out = handshake(server.server_config().unwrap(), client.client_config(&tls::ALPN).unwrap());
        let err = out.client.unwrap_err();
        assert!(err.contains(why), "{why}: {err}");
    }
}

#[test]
fn tls_1_2_is_refused() {
    let ca = authority();
    let server = creds(&ca, &id("models", "llm"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(vane_identity::pem::certs(ca.anchors_pem()).unwrap());
    let tls12 = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let out = handshake(server.server_config().unwrap(), Arc::new(tls12));
    assert!(out.server.unwrap_err().contains("ProtocolVersion") || out.client.is_err());
}

#[test]
fn a_request_for_another_identity_gets_no_certificate() {
    let ca = authority();
    let proven = id("apps", "chat");
    let req = Request::new(&id("models", "llm")).unwrap();
    match ca.issue(&req.der, &proven, ca::DEFAULT_LIFETIME) {
        Err(IssueError::WrongIdentity { asked, proven: p }) => {
            assert_eq!(asked, ["spiffe://cluster.local/ns/models/sa/llm"]);
            assert_eq!(p, proven.to_string());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(ca.issue(b"not a request", &proven, ca::DEFAULT_LIFETIME), Err(IssueError::Unreadable(_))));
    let other_domain = SpiffeId::new("elsewhere", "apps", "chat").unwrap();
    let req = Request::new(&other_domain).unwrap();
    assert!(matches!(ca.issue(&req.der, &other_domain, ca::DEFAULT_LIFETIME), Err(IssueError::TrustDomain(..))));
}

#[test]
fn an_issued_certificate_lives_as_long_as_asked() {
    let ca = authority();
    let who = id("apps", "chat");
    let req = Request::new(&who).unwrap();
    let issued = ca.issue(&req.der, &who, Duration::from_secs(600)).unwrap();
    let c = Credentials::new(&issued.chain_pem, req.key(), ca.anchors_pem()).unwrap();
    assert_eq!(c.id, who);
    assert_eq!(c.chain.len(), 2, "leaf and issuer");
    let left = c.not_after.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(600) && left > Duration::from_secs(590), "{left:?}");
}

#[test]
fn credentials_check_their_own_chain_against_their_anchors() {
    let (ours, theirs) = (authority(), authority());
    let who = id("models", "llm");
    creds(&ours, &who).verify().unwrap();
    let req = Request::new(&who).unwrap();
    let issued = theirs.issue(&req.der, &who, ca::DEFAULT_LIFETIME).unwrap();
    let mixed = Credentials::new(&issued.chain_pem, req.key(), ours.anchors_pem()).unwrap();
    assert!(matches!(mixed.verify(), Err(tls::TlsError::Untrusted(_))), "another issuer's chain");
    let hour = Duration::from_secs(3600);
    let now = SystemTime::now();
    let expired = creds_valid(&ours, &who, now - 3 * hour, now - hour);
    assert!(matches!(expired.verify(), Err(tls::TlsError::Untrusted(_))), "expired");
}
