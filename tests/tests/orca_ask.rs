//! vLLM sends its ORCA load report only when the request asks for one: the proxy asks, unless a
//! backend is configured not to, and a caller's own choice of form stands.

use http::{Request, Response};
use hyper::body::Incoming;
use vane_tests::*;

/// A backend that answers with the `endpoint-load-metrics-format` it was sent (or `none`).
async fn mirror() -> std::net::SocketAddr {
    serve(|req: Request<Incoming>| async move {
        let asked = req.headers().get("endpoint-load-metrics-format").cloned();
        let mut r = Response::new(full("ok"));
        r.headers_mut().insert("x-asked", asked.unwrap_or_else(|| http::HeaderValue::from_static("none")));
        r
    })
    .await
}

fn config(backends: &[(&str, std::net::SocketAddr, &str)]) -> String {
    let mut y = String::from("backends:\n");
    for (name, addr, extra) in backends {
        y.push_str(&format!("  - {{ name: {name}, endpoints: [\"{addr}\"]{extra} }}\n"));
    }
    y.push_str("services:\n");
    for (name, _, _) in backends {
        y.push_str(&format!("  - {{ name: {name}, routes: [{{ name: all, backends: [{{ backend: {name} }}] }}] }}\n"));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_asks_endpoints_for_load_reports_unless_told_not_to() {
    let (a, b) = (mirror().await, mirror().await);
    let proxy = Proxy::start(&config(&[("asked", a, ""), ("quiet", b, ", balancer: { ask_load_reports: false }")]));
    for client in [h1_client(proxy.outbound), h2_client(proxy.outbound)] {
        let r = get(&client, "asked", "/", &[]).await.unwrap();
        assert_eq!((r.status.as_u16(), r.headers["x-asked"].to_str().unwrap()), (200, "TEXT"), "{r:?}");
        let r = get(&client, "quiet", "/", &[]).await.unwrap();
        assert_eq!(&r.headers["x-asked"], "none", "{r:?}");
        let r = get(&client, "asked", "/", &[("endpoint-load-metrics-format", "JSON")]).await.unwrap();
        assert_eq!(&r.headers["x-asked"], "JSON", "the caller's own form stands: {r:?}");
    }
    // Off for every backend from the proxy section; a backend can still turn it on.
    let proxy = Proxy::start(&format!(
        "proxy: {{ balancer: {{ ask_load_reports: false }} }}\n{}",
        config(&[("asked", a, ", balancer: { ask_load_reports: true }"), ("quiet", b, "")])
    ));
    let client = h1_client(proxy.outbound);
    assert_eq!(&get(&client, "quiet", "/", &[]).await.unwrap().headers["x-asked"], "none");
    assert_eq!(&get(&client, "asked", "/", &[]).await.unwrap().headers["x-asked"], "TEXT");
}
