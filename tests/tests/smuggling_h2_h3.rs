//! Request smuggling over HTTP/2 and HTTP/3, on both paths to an upstream:
//! `http://` forwarding (`:scheme http`, `:authority 127.0.0.1:PORT`) and
//! reverse proxying (`:scheme https`, `:authority origin.test`, covered by
//! the TLS listener's certificate). Raw clients (`bauta_tests::raw_peers`)
//! send exactly the fields of each case — HPACK / QPACK literals, nothing
//! validated — and the upstream records raw bytes and frames requests
//! itself. Each case, on each front and path, is answered as below, and a
//! refused one never reaches the upstream as a complete request (nor does a
//! byte past a declared length):
//!
//! | case | HTTP/2 | HTTP/3 |
//! |---|---|---|
//! | `connection`, `transfer-encoding`, `keep-alive`, `proxy-connection`, `upgrade`, `te: gzip` | RST_STREAM `PROTOCOL_ERROR` (h2) | 400, then `H3_MESSAGE_ERROR` |
//! | `content-length: 4, 4` | RST_STREAM `PROTOCOL_ERROR` (h2) | 400, then `H3_MESSAGE_ERROR` |
//! | two `content-length` fields, identical | 400, then RST_STREAM `PROTOCOL_ERROR` | 400, then `H3_MESSAGE_ERROR` |
//! | two `content-length` fields, differing | RST_STREAM `PROTOCOL_ERROR` (h2) | 400, then `H3_MESSAGE_ERROR` |
//! | body shorter than `content-length` | RST_STREAM `PROTOCOL_ERROR` (h2) | 400 `http_request_error`, then `H3_MESSAGE_ERROR` |
//! | body longer than `content-length` (one DATA frame, or the excess in a later one) | RST_STREAM `PROTOCOL_ERROR` (h2) | 400 `http_request_error`, then `H3_MESSAGE_ERROR` |
//! | pseudo-header after a regular field, or duplicated | RST_STREAM `PROTOCOL_ERROR` (h2) | 400, then `H3_MESSAGE_ERROR` |
//! | `:status` in a request | RST_STREAM `PROTOCOL_ERROR` (h2) | 400, then `H3_MESSAGE_ERROR` |
//! | unknown pseudo-header | GOAWAY `PROTOCOL_ERROR` (h2) | `H3_MESSAGE_ERROR` (h3) |
//! | empty `:path` | RST_STREAM `PROTOCOL_ERROR` (h2) | `H3_MESSAGE_ERROR` (h3) |
//! | pseudo-header in trailers | GOAWAY `PROTOCOL_ERROR` (the HTTP/2 shim: h2 would drop the field) | 400 `http_request_error`, then `H3_MESSAGE_ERROR` |
//! | uppercase field name; CR, LF or NUL in a value | GOAWAY `PROTOCOL_ERROR` (h2's HPACK decoder) | `H3_MESSAGE_ERROR` (h3) |
//!
//! "(h2)" / "(h3)": the protocol library refuses before the proxy sees the
//! request. The other refusals come from the fronts (`front::fields`: the
//! rules h3 0.0.8 does not check, and exactly one numeric `content-length`,
//! which h2 does not check either), from the HTTP/3 shim, which reads each
//! encoded field section on its way to h3 for the pseudo-header rules h3
//! does not keep (`wire::qpack`; a bad trailer section fails the
//! body) and from the body held to its
//! `content-length` (`body::length`, both fronts), answered through
//! `core::respond` (`Malformed`, `UpstreamError::MalformedBody`). The chunk
//! that completes a declared length is held back until the stream ends, so
//! a body that turns out longer never lets the upstream read a complete
//! request first.
//!
//! h2 drops a trailer section's pseudo-headers without a word, so the
//! HTTP/2 shim reads every client header block (`wire::h2_blocks`, with the
//! HPACK table followed by `wire::hpack`) and ends the connection before h2
//! reads the trailers' last frame: the request never completes upstream.
//!
//! Controls: the well-formed request is forwarded once, framed once (one
//! `content-length`), without hop-by-hop fields (`te: trailers` is allowed
//! and stays on this hop).

use std::time::Duration;

use bauta_tests::bounded_for;
use bauta_tests::raw_peers::{fields, Field, Outcome, RawH2, RawH3};
use bauta_tests::smuggle_env::{SmuggleEnv, ORIGIN};

const LIMIT: Duration = Duration::from_secs(5);
const H2_PROTOCOL_ERROR: u64 = 0x1;
const H3_MESSAGE_ERROR: u64 = 0x10e;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Front {
    H2,
    H3,
}

#[derive(Clone, Copy, Debug)]
enum Path {
    Forward,
    Reverse,
}

/// What the table expects of one case on one front.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 400 (any Proxy-Status), then the stream reset with the protocol's
    /// malformed-message code.
    BadThenReset,
    /// The stream reset with the malformed-message code, no response.
    Reset,
    /// HTTP/2 only: GOAWAY PROTOCOL_ERROR (h2's HPACK decoder refuses the
    /// field, or the HTTP/2 shim a trailer section: a connection error).
    Goaway,
}

struct Case {
    what: &'static str,
    fields: Vec<Field>,
    data: Vec<&'static [u8]>,
    trailers: Option<Vec<Field>>,
    h2: Expect,
    h3: Expect,
}

fn pseudo(env: &SmuggleEnv, path: Path) -> Vec<(String, String)> {
    let (scheme, authority) = match path {
        Path::Forward => ("http", env.upstream_authority()),
        Path::Reverse => ("https", ORIGIN.to_string()),
    };
    vec![
        (":method".into(), "POST".into()),
        (":scheme".into(), scheme.into()),
        (":authority".into(), authority),
        (":path".into(), "/x".into()),
    ]
}

fn as_fields(list: &[(String, String)]) -> Vec<Field> {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// The pseudo-headers, then `extra`.
fn with(env: &SmuggleEnv, path: Path, extra: &[(&str, &str)]) -> Vec<Field> {
    let mut f = as_fields(&pseudo(env, path));
    f.extend(fields(extra));
    f
}

fn cases(env: &SmuggleEnv, path: Path) -> Vec<Case> {
    use Expect::*;
    let cl4 = ("content-length", "4");
    let body: Vec<&'static [u8]> = vec![b"abcd"];
    let mut out = Vec::new();
    let mut add = |what, fields, data: Vec<&'static [u8]>, trailers, h2, h3| {
        out.push(Case {
            what,
            fields,
            data,
            trailers,
            h2,
            h3,
        })
    };
    for (name, value) in [
        ("connection", "close"),
        ("transfer-encoding", "chunked"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("upgrade", "websocket"),
        ("te", "gzip"),
    ] {
        let what = match name {
            "connection" => "connection",
            "transfer-encoding" => "transfer-encoding",
            "keep-alive" => "keep-alive",
            "proxy-connection" => "proxy-connection",
            "upgrade" => "upgrade",
            _ => "te other than trailers",
        };
        add(
            what,
            with(env, path, &[cl4, (name, value)]),
            body.clone(),
            None,
            Reset,
            BadThenReset,
        );
    }
    add(
        "content-length listed",
        with(env, path, &[("content-length", "4, 4")]),
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        "content-length twice",
        with(env, path, &[cl4, cl4]),
        body.clone(),
        None,
        BadThenReset,
        BadThenReset,
    );
    add(
        "content-length twice, differing",
        with(env, path, &[cl4, ("content-length", "8")]),
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        "body shorter than content-length",
        with(env, path, &[("content-length", "10")]),
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        "body longer than content-length, one frame",
        with(env, path, &[cl4]),
        vec![b"abcdEFGH"],
        None,
        Reset,
        BadThenReset,
    );
    add(
        "body longer than content-length, later frame",
        with(env, path, &[cl4]),
        vec![b"abcd", b"EFGH"],
        None,
        Reset,
        BadThenReset,
    );
    let mut after = as_fields(&pseudo(env, path)[..3]);
    after.extend(fields(&[cl4, (":path", "/x")]));
    add(
        "pseudo-header after a regular field",
        after,
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        "pseudo-header duplicated",
        with(env, path, &[(":path", "/y"), cl4]),
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        ":authority duplicated, the second elsewhere",
        {
            let mut f = as_fields(&pseudo(env, path));
            f.insert(1, (b":authority".to_vec(), b"elsewhere.test:1".to_vec()));
            f.extend(fields(&[cl4]));
            f
        },
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        ":status in a request",
        with(env, path, &[(":status", "200"), cl4]),
        body.clone(),
        None,
        Reset,
        BadThenReset,
    );
    add(
        "unknown pseudo-header",
        {
            let mut f = as_fields(&pseudo(env, path));
            f.insert(0, (b":foo".to_vec(), b"bar".to_vec()));
            f.extend(fields(&[cl4]));
            f
        },
        body.clone(),
        None,
        Goaway,
        Reset,
    );
    add(
        "empty :path",
        {
            let mut p = pseudo(env, path);
            p[3].1 = String::new();
            let mut f = as_fields(&p);
            f.extend(fields(&[cl4]));
            f
        },
        body.clone(),
        None,
        Reset,
        Reset,
    );
    add(
        "pseudo-header in trailers",
        with(env, path, &[cl4]),
        body.clone(),
        Some(fields(&[(":path", "/y")])),
        Goaway,
        BadThenReset,
    );
    add(
        "uppercase field name",
        with(env, path, &[cl4, ("X-Upper", "1")]),
        body.clone(),
        None,
        Goaway,
        Reset,
    );
    for (what, value) in [
        ("CR in a value", &b"a\rb"[..]),
        ("LF in a value", &b"a\nb"[..]),
        ("NUL in a value", &b"a\0b"[..]),
    ] {
        let mut f = with(env, path, &[cl4]);
        f.push((b"x-a".to_vec(), value.to_vec()));
        add(what, f, body.clone(), None, Goaway, Reset);
    }
    out
}

async fn run(
    env: &SmuggleEnv,
    front: Front,
    fields: &[Field],
    data: &[&[u8]],
    trailers: Option<&[Field]>,
) -> Outcome {
    match front {
        Front::H2 => {
            let mut c = RawH2::connect(env.proxy.secure, &env.certs, ORIGIN).await;
            let id = c.request(fields, data, trailers).await;
            c.outcome(id, LIMIT).await
        }
        Front::H3 => {
            let c = RawH3::connect(env.proxy.secure, &env.certs, ORIGIN).await;
            c.request(fields, data, trailers, LIMIT).await
        }
    }
}

fn matches(front: Front, expect: Expect, o: &Outcome) -> bool {
    let reset = match front {
        Front::H2 => H2_PROTOCOL_ERROR,
        Front::H3 => H3_MESSAGE_ERROR,
    };
    match expect {
        Expect::BadThenReset => o.status == Some(400) && o.reset == Some(reset),
        Expect::Reset => o.status.is_none() && o.reset == Some(reset),
        Expect::Goaway => front == Front::H2 && o.closed == Some(H2_PROTOCOL_ERROR),
    }
}

#[tokio::test]
async fn smuggling_cases_are_refused_on_http2_and_http3_on_both_paths() {
    bounded_for(Duration::from_secs(120), async {
        let env = SmuggleEnv::start().await;
        let up = &env.upstream;
        let mut failures = Vec::new();
        for front in [Front::H2, Front::H3] {
            for path in [Path::Forward, Path::Reverse] {
                // The control: the well-formed request is forwarded once,
                // framed once, hop-by-hop fields removed.
                let ok = with(&env, path, &[("content-length", "4"), ("te", "trailers")]);
                let o = run(&env, front, &ok, &[b"abcd"], None).await;
                assert_eq!(o.status, Some(200), "{front:?} {path:?} control: {o:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                up.take();
                let complete = up.take_complete();
                assert_eq!(complete.len(), 1, "{front:?} {path:?}: {complete:?}");
                let req = complete[0].to_ascii_lowercase();
                assert_eq!(req.matches("content-length: 4\r\n").count(), 1, "{req}");
                assert!(!req.contains("transfer-encoding"), "{req}");
                assert!(!req.contains("\r\nte:"), "{req}");
                assert!(req.ends_with("\r\n\r\nabcd"), "{req}");

                for case in cases(&env, path) {
                    let expect = match front {
                        Front::H2 => case.h2,
                        Front::H3 => case.h3,
                    };
                    let o = run(&env, front, &case.fields, &case.data, case.trailers.as_deref()).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let seen = up.take();
                    let complete = up.take_complete();
                    let line = format!(
                        "{front:?} {path:?} {}: status {:?} reset {:?} close {:?} body {:?}; upstream {} complete, raw {seen:?}",
                        case.what, o.status, o.reset, o.closed,
                        String::from_utf8_lossy(&o.body), complete.len()
                    );
                    eprintln!("{line}");
                    let leaked =
                        !complete.is_empty() || seen.contains("EFGH") || seen.contains("/y");
                    if !matches(front, expect, &o) || leaked {
                        failures.push(format!("expected {expect:?}: {line}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    })
    .await
}

/// The HTTP/2 shim follows the client's HPACK table (`wire::hpack`): with
/// python-hyper's independent encoder (incremental indexing, Huffman) on
/// one connection, trailer sections with regular fields pass and the
/// requests are forwarded, and a trailer section with `:path` ends the
/// connection with GOAWAY `PROTOCOL_ERROR` before that request completes
/// upstream.
#[tokio::test]
async fn http2_trailers_follow_an_independent_hpack_encoder() {
    bounded_for(Duration::from_secs(60), async {
        let env = SmuggleEnv::start().await;
        let authority = env.upstream_authority();
        let mut args: Vec<String> = Vec::new();
        for h in [
            ":method=POST".to_string(),
            ":scheme=http".into(),
            format!(":authority={authority}"),
            ":path=/x".into(),
            "content-length=4".into(),
            "x-request-id=abc".into(),
        ] {
            args.extend(["--header".into(), h]);
        }
        for t in [
            "x-checksum=1",
            "x-checksum=2,x-more=yes",
            ":path=/y",
            "x-after=1",
        ] {
            args.extend(["--trailer-set".into(), t.into()]);
        }
        args.extend(["--host".into(), "127.0.0.1".into()]);
        let v = bauta_tests::readme_env::run_readme_h2(
            "trailers",
            env.proxy.secure.port(),
            &env.certs.ca_pem,
            &args,
        )
        .await;
        let reqs = v["requests"].as_array().cloned().unwrap_or_default();
        assert!(reqs.len() >= 3, "{v:#}");
        assert_eq!(reqs[0]["status"].as_u64(), Some(200), "{v:#}");
        assert_eq!(reqs[1]["status"].as_u64(), Some(200), "{v:#}");
        assert_ne!(reqs[2]["status"].as_u64(), Some(200), "{v:#}");
        assert_eq!(v["goaway"]["error_code"].as_u64(), Some(1), "{v:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let complete = env.upstream.take_complete();
        assert_eq!(
            complete.len(),
            2,
            "only the two good requests: {complete:?}"
        );
        assert!(!env.upstream.take().contains("/y"));
    })
    .await
}
