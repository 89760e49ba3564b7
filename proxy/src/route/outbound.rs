//! Outbound routing: authority → service → route → weighted backend.

use super::facts::{content_length, destination, grpc_timeout};
use super::outcome::{Routed, Unrouted};
use super::sniff::{read_grpc_unary, read_prefix};
use crate::balance::Target;
use crate::body::ReqBody;
use crate::coalesce::Coalescing;
use crate::config::Snapshot;
use crate::error::ProxyError;
use crate::metrics::{Name, Tag};
use http::Request;
use hyper::body::{Body, Incoming};
use std::sync::Arc;
use vane_route::config::Algorithm;
use vane_route::matching::RequestFacts;
use vane_route::model::{max_tokens_from_json, model_from_json_prefix, model_from_kserve_path};
use vane_route::split::sticky_hash;

fn fail(e: ProxyError, service: Option<&Arc<str>>) -> Unrouted {
    (e, service.map(|s| Tag::Service(Name(Arc::clone(s)))))
}

/// Routes one outbound request by the snapshot's table. A model match may read a bounded prefix
/// of the body (replayed); a small body of known length is read whole so that it can be retried.
pub async fn route(snap: &Snapshot, req: Request<Incoming>, grpc: bool) -> Result<Routed, Unrouted> {
    let settings = &snap.table.settings;
    let host = match destination(&req) {
        Ok(Some(host)) => host,
        Ok(None) => return Err(fail(ProxyError::BadRequest("no authority or Host header"), None)),
        Err(why) => return Err(fail(ProxyError::BadRequest(why), None)),
    };
    let Some(svc_idx) = snap.table.service_index(host) else {
        return Err(fail(ProxyError::UnknownService(host.to_string()), None));
    };
    let service = &snap.table.services[svc_idx];
    let (parts, body) = req.into_parts();
    let svc_name = Some(&service.name);
    let length = content_length(&parts.headers);
    if length.is_some_and(|n| n > settings.max_body_bytes) {
        return Err(fail(ProxyError::BodyTooLarge(settings.max_body_bytes), svc_name));
    }
    let path = parts.uri.path();
    let path_model = if service.needs_model { model_from_kserve_path(path) } else { None };
    let sniff = service.needs_model && path_model.is_none();
    // Small bodies of known length are read whole, so that a failed connection can be retried.
    let small = length.is_some_and(|n| n <= settings.max_sniff_bytes as u64);
    // A gRPC call rarely states its length: on a service that coalesces, its first message is
    // read, so that a unary call is known in full (and may share an answer).
    let grpc_unary = grpc && !small && !sniff && service.routes.iter().any(|r| r.coalesce.is_some());
    let body = if body.is_end_stream() {
        ReqBody::Empty
    } else if grpc_unary {
        read_grpc_unary(body, settings.max_sniff_bytes, settings.max_body_bytes).await.map_err(|e| fail(e, svc_name))?
    } else if sniff || small {
        read_prefix(body, settings.max_sniff_bytes, settings.max_body_bytes).await.map_err(|e| fail(e, svc_name))?
    } else {
        ReqBody::stream(None, body, settings.max_body_bytes, settings.max_body_bytes)
    };
    let body_model = match (&body, sniff) {
        (ReqBody::Full(Some(b)), true) | (ReqBody::Stream { prefix: Some(b), .. }, true) => model_from_json_prefix(b),
        _ => None,
    };
    let facts = RequestFacts {
        method: &parts.method,
        path,
        headers: &parts.headers,
        model: path_model.or(body_model.as_deref()),
    };
    let Some(route_idx) = service.select_index(&facts) else {
        return Err(fail(ProxyError::NoRoute(service.name.to_string()), svc_name));
    };
    let route = &service.routes[route_idx];
    let draw = match route.sticky.as_ref().and_then(|h| parts.headers.get(h)) {
        Some(v) => sticky_hash(v.as_bytes()),
        None => fastrand::u64(..),
    };
    let Some((backend, stats)) = route.split.pick(draw).and_then(|b| Some((b, snap.stats(svc_idx, route_idx, b)?)))
    else {
        return Err(fail(ProxyError::NoRoute(service.name.to_string()), svc_name));
    };
    let Some(backend) = snap.backends.get(backend) else {
        return Err(fail(ProxyError::NoEndpoint(service.name.to_string()), svc_name));
    };
    let mut timeout = route.timeout.unwrap_or(settings.response_timeout);
    let mut client_deadline = false;
    if grpc && let Some(t) = grpc_timeout(&parts.headers) {
        timeout = timeout.min(t);
        client_deadline = true;
    }
    let mut req = Request::from_parts(parts, body);
    if let Some(policy) = &route.coalesce {
        let (service, route, backend) = (Arc::clone(&service.name), Arc::clone(&route.name), Arc::clone(&backend.name));
        req.extensions_mut().insert(Coalescing { policy: Arc::clone(policy), service, route, backend });
    }
    // What the request asks for, when its body is at hand and the backend's cost reads it.
    let asked_tokens = match req.body() {
        ReqBody::Full(Some(b)) if backend.policy.algorithm == Algorithm::P2c && backend.streams() => {
            max_tokens_from_json(b)
        }
        _ => None,
    };
    req.extensions_mut().insert(Target {
        backend: Arc::clone(backend),
        timeout,
        whole_answer: client_deadline || !backend.streams(),
        asked_tokens,
    });
    req.extensions_mut().insert(route.retries.clone());
    if let Some(h) = route.hedge {
        req.extensions_mut().insert(h);
    }
    req.extensions_mut().insert(Tag::Route(Arc::clone(stats)));
    Ok(req)
}
