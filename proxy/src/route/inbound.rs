//! Inbound routing: every request goes to the local model server (`inbound.forward_to`).

use super::facts::{content_length, destination, grpc_timeout};
use super::outcome::{Routed, Unrouted};
use crate::balance::Target;
use crate::body::ReqBody;
use crate::config::Snapshot;
use crate::error::ProxyError;
use crate::metrics::Tag;
use http::Request;
use hyper::body::{Body, Incoming};
use std::sync::Arc;

/// Routes one inbound request to the inbound target.
pub fn route(snap: &Snapshot, req: Request<Incoming>, grpc: bool) -> Result<Routed, Unrouted> {
    let settings = &snap.table.settings;
    let tag = || Some(Tag::Route(Arc::clone(&snap.inbound_stats)));
    let Some(backend) = snap.inbound.as_ref() else {
        return Err((ProxyError::NoEndpoint("inbound".into()), tag()));
    };
    if let Err(why) = destination(&req) {
        return Err((ProxyError::BadRequest(why), tag()));
    }
    if content_length(req.headers()).is_some_and(|n| n > settings.max_body_bytes) {
        return Err((ProxyError::BodyTooLarge(settings.max_body_bytes), tag()));
    }
    let mut timeout = settings.response_timeout;
    let mut client_deadline = false;
    if grpc && let Some(t) = grpc_timeout(req.headers()) {
        timeout = timeout.min(t);
        client_deadline = true;
    }
    let (parts, body) = req.into_parts();
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else {
        ReqBody::stream(None, body, settings.max_body_bytes, settings.max_body_bytes)
    };
    let mut req = Request::from_parts(parts, body);
    req.extensions_mut().insert(Target {
        backend: Arc::clone(backend),
        timeout,
        whole_answer: client_deadline || !backend.streams(),
        asked_tokens: None,
    });
    req.extensions_mut().insert(Tag::Route(Arc::clone(&snap.inbound_stats)));
    Ok(req)
}
