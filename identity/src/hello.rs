//! Reading a TLS ClientHello from a connection's first bytes (peeked, not consumed): whether the
//! connection is TLS at all, and the server name (SNI) it asks for, so that an inbound proxy can
//! tell a meshed caller (which names a Vane identity) from an application's own TLS (which it
//! passes through untouched).
//!
//! Only the first TLS record is read; a ClientHello is one record in practice (it would span two
//! only past 16 KiB). Every length is checked against what is there: no input panics (see the
//! property test).

/// What the first bytes of a connection are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hello {
    /// More bytes are needed to tell (at most one record, [`MAX_RECORD`] bytes).
    Incomplete,
    /// Not a TLS handshake record.
    NotTls,
    /// A ClientHello, with the server name it asks for, if any.
    ClientHello {
        /// The `server_name` extension's host name.
        sni: Option<String>,
    },
}

/// The most bytes a first record takes (5 bytes of header, then at most 16 KiB).
pub const MAX_RECORD: usize = 5 + 16384;

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3).map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// What `prefix` (a connection's first bytes) is.
pub fn parse(prefix: &[u8]) -> Hello {
    match prefix {
        [] | [0x16] => return Hello::Incomplete,
        [0x16, 0x03, ..] => {}
        _ => return Hello::NotTls,
    }
    if prefix.len() < 5 {
        return Hello::Incomplete;
    }
    let record_len = usize::from(u16::from_be_bytes([prefix[3], prefix[4]]));
    if record_len == 0 || record_len > 16384 {
        return Hello::NotTls;
    }
    let Some(record) = prefix.get(5..5 + record_len) else { return Hello::Incomplete };
    let mut r = Reader { b: record };
    if r.u8() != Some(0x01) {
        return Hello::NotTls;
    }
    let Some(len) = r.u24() else { return Hello::NotTls };
    // A ClientHello longer than its record continues in the next one: its start is enough.
    let body = r.b.get(..len).unwrap_or(r.b);
    Hello::ClientHello { sni: sni(body) }
}

fn sni(body: &[u8]) -> Option<String> {
    let mut r = Reader { b: body };
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    let mut exts = Reader { b: r.vec16()? };
    while !exts.b.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind == 0 {
            let mut list = Reader { b: data };
            let mut names = Reader { b: list.vec16()? };
            while !names.b.is_empty() {
                let name_type = names.u8()?;
                let name = names.vec16()?;
                if name_type == 0 {
                    return std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                }
            }
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The first flight of a real rustls client asking for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = Arc::new(rustls::RootCertStore::empty());
        let config = crate::tls::anonymous_client_config(&roots, &crate::tls::ALPN).unwrap();
        let server = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(config, server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn a_client_hello_gives_its_server_name() {
        let hello = client_hello("chat.apps.cluster.local");
        assert_eq!(parse(&hello), Hello::ClientHello { sni: Some("chat.apps.cluster.local".into()) });
        for cut in 0..5 + 4 {
            assert_eq!(parse(&hello[..cut]), Hello::Incomplete, "cut at {cut}");
        }
        assert_eq!(parse(&hello[..hello.len() - 1]), Hello::Incomplete);
    }

    #[test]
    fn a_meshed_clients_hello_names_a_vane_identity() {
        let id = crate::SpiffeId::parse("spiffe://cluster.local/ns/models/sa/llm").unwrap();
        let name = crate::tls::mesh_server_name(&id, "10.77.0.2:8000".parse().unwrap());
        let roots = Arc::new(rustls::RootCertStore::empty());
        let config = crate::tls::anonymous_client_config(&roots, &crate::tls::ALPN).unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        match parse(&out) {
            Hello::ClientHello { sni: Some(sni) } => assert!(crate::tls::is_mesh_sni(&sni), "{sni}"),
            other => panic!("{other:?}"),
        }
        assert!(!crate::tls::is_mesh_sni("api.openai.com"));
    }

    #[test]
    fn other_protocols_are_not_tls() {
        for bytes in
            [&b"GET / HTTP/1.1\r\n"[..], b"PRI * HTTP/2.0", b"\x16\x02\x00", b"\x17\x03\x03\x00\x10", b"*1\r\n"]
        {
            assert_eq!(parse(bytes), Hello::NotTls, "{bytes:?}");
        }
        assert_eq!(parse(b"\x16\x03\x01\x00\x00"), Hello::NotTls, "an empty record");
        assert_eq!(parse(b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"), Hello::NotTls, "a ServerHello");
    }

    /// Property: no input panics, and a mutated hello is never read past its bytes.
    #[test]
    fn no_input_panics() {
        let hello = client_hello("llm.models.svc.cluster.local");
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..20_000 {
            let mut b = hello.clone();
            for _ in 0..rng.usize(1..8) {
                let at = rng.usize(0..b.len());
                b[at] = rng.u8(..);
            }
            let cut = rng.usize(0..=b.len());
            let _ = parse(&b[..cut]);
        }
        for _ in 0..20_000 {
            let n = rng.usize(0..64);
            let mut b: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            if rng.bool() && b.len() > 2 {
                b[0] = 0x16;
                b[1] = 0x03;
            }
            let _ = parse(&b);
        }
    }
}
