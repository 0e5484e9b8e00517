//! The body type shared by every front and upstream: locally generated,
//! streamed from hyper, or streamed from an HTTP/3 request stream.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

pub mod length;
pub mod metered;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type Body = BoxBody<Bytes, BoxError>;

/// The message is malformed (RFC 9113 §8.1.1, RFC 9114 §4.1.2): its body
/// disagreed with its `content-length`, or its trailer section broke the
/// rules. Whoever forwards the body stops there; the next hop never reads
/// a complete message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// Is `e`, or anything that caused it, [`Malformed`]?
pub fn is_malformed(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<Malformed>() {
            return true;
        }
        cur = err.source();
    }
    false
}

pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Any body with `Bytes` data as the shared [`Body`].
pub fn boxed<B>(b: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    b.map_err(Into::into).boxed()
}
