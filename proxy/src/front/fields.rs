//! HTTP/2 and HTTP/3 message rules on a request's fields that the protocol
//! libraries leave to us. h2 refuses connection-specific fields and
//! misplaced pseudo-headers itself (RFC 9113 §8.2.2, §8.3) but reads only
//! the first `content-length`; h3 0.0.8 checks neither. A request that
//! breaks one is malformed (RFC 9113 §8.1.1, RFC 9114 §4.1.2): the front
//! marks it and the core refuses it.

use http::header::{self, HeaderMap, HeaderName};
use http::Method;

use crate::core::request::RequestHead;

/// RFC 9114 §4.2 / RFC 9113 §8.2.2: fields that describe one connection.
const CONNECTION_SPECIFIC: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// The declared body length: `None` without `content-length`; an error
/// unless there is exactly one field holding only digits (a second field,
/// even an identical one, or a list would let the next hop pick another).
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("more than one content-length field");
    }
    let digits = v.as_bytes();
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return Err("content-length is not a number");
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Some)
        .ok_or("content-length is not a number")
}

/// The rules h3 does not check on an HTTP/3 request: no connection-specific
/// fields, `te` only `trailers`, one numeric `content-length`, and (RFC 9114
/// §4.3.1) a request other than CONNECT has `:scheme` (h3 itself refuses an
/// empty `:path`).
pub fn h3_malformed(head: &RequestHead) -> Option<&'static str> {
    let h = &head.headers;
    if CONNECTION_SPECIFIC.iter().any(|n| h.contains_key(n)) {
        return Some("connection-specific header fields are not allowed in HTTP/3");
    }
    if h.get_all(header::TE).iter().any(|v| v != "trailers") {
        return Some("te other than trailers is not allowed in HTTP/3");
    }
    if let Err(why) = content_length(h) {
        return Some(why);
    }
    if head.method != Method::CONNECT && head.uri.scheme().is_none() {
        return Some("an HTTP/3 request other than CONNECT needs :scheme");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, Uri, Version};

    fn head(method: Method, uri: &str, fields: &[(&'static str, &'static str)]) -> RequestHead {
        let mut h = HeaderMap::new();
        for (n, v) in fields {
            h.append(*n, HeaderValue::from_static(v));
        }
        RequestHead::new(method, uri.parse::<Uri>().expect("uri"), Version::HTTP_3, h)
    }

    #[test]
    fn content_length_is_exactly_one_number() {
        let cl = |vs: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in vs {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_static(v));
            }
            content_length(&h)
        };
        assert_eq!(cl(&[]), Ok(None));
        assert_eq!(cl(&["0"]), Ok(Some(0)));
        assert_eq!(cl(&["42"]), Ok(Some(42)));
        for bad in [
            &["4", "4"][..],
            &["4", "5"],
            &["4, 4"],
            &["+4"],
            &["-1"],
            &[""],
            &[" 4"],
            &["99999999999999999999"],
        ] {
            assert!(cl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn h3_field_rules() {
        let ok = head(
            Method::POST,
            "https://o.test/x",
            &[("te", "trailers"), ("content-length", "4")],
        );
        assert_eq!(h3_malformed(&ok), None);
        for (n, v) in [
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("keep-alive", "5"),
            ("proxy-connection", "close"),
            ("te", "gzip"),
            ("content-length", "4, 4"),
        ] {
            assert!(
                h3_malformed(&head(Method::POST, "https://o.test/x", &[(n, v)])).is_some(),
                "{n}"
            );
        }
        // No :scheme outside CONNECT (h3 itself refuses an empty :path).
        assert!(h3_malformed(&head(Method::GET, "o.test:443", &[])).is_some());
        assert_eq!(
            h3_malformed(&head(Method::CONNECT, "o.test:443", &[])),
            None
        );
    }
}
