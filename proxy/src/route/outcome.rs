//! What a routing decision gives: the request on its way, or why it cannot go on.

use crate::body::ReqBody;
use crate::error::ProxyError;
use crate::metrics::Tag;
use http::Request;

/// A routed request: its body ready to stream upstream, a `Target` and the route's metric
/// [`Tag`] in its extensions (they come back on the response, or on the error).
pub type Routed = Request<ReqBody>;
/// A request that could not be routed: why, and as much of the route as is known.
pub type Unrouted = (ProxyError, Option<Tag>);
