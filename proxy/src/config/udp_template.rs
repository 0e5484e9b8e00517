//! The CONNECT-UDP request target (RFC 9298 §2, §3): which URI template the
//! proxy serves, and how a request's path names the UDP target.
//!
//! The proxy is configured with a URI template holding the variables
//! `target_host` and `target_port`; by default
//! [`DEFAULT_TEMPLATE`] = `/.well-known/masque/udp/{target_host}/{target_port}/`.
//! A request is first matched against the template's fixed parts
//! ([`UdpTemplate::match_path`]: no match is 404), then the two values are
//! percent-decoded once and checked ([`parse_udp_target`]: a bad target is
//! 400, or malformed on HTTP/2 and HTTP/3).
//!
//! # Supported templates
//!
//! A path template (`/masque/{target_host}/{target_port}/`) or an absolute one
//! (`https://proxy.example:443/masque?h={target_host}&p={target_port}`), of
//! which only the path and query are used. Rules:
//!
//! * ASCII 0x21–0x7E only; no fragment (`#`); the path starts with `/`;
//!   variables only in the path or query, never in the authority.
//! * Expressions: `{target_host}` and `{target_port}` (RFC 6570 level 1), and
//!   the form-style query operators `{?target_host,target_port}` and
//!   `{&target_host,target_port}` (level 3), which expand to
//!   `?target_host=…&target_port=…`. Each variable appears exactly once.
//! * Rejected: the `+`, `#`, `.`, `/` and `;` operators (RFC 9298 §2 forbids
//!   them), the reserved operators `= , ! @ |`, prefix and explode modifiers
//!   (`{target_host:3}`, `{target_port*}`) and any other variable name.
//! * A variable must be followed by the end of the template or by a literal
//!   starting with a character that cannot occur in an expanded value (such as
//!   `/`, `?`, `&`, `=`), so that matching is unambiguous:
//!   `{target_host}.{target_port}` is rejected.
//! * If the template ends in `/`, that final `/` is optional in requests
//!   (spec/masque.md §5.2: "Accept the default path with or without the final
//!   `/`").

use std::fmt;

/// The destination host of a CONNECT-UDP request: a lowercase name without
/// its trailing dot, or an IP address. It is the policy crate's `Host`, so the
/// same normalisation (including the WHATWG IPv4 spellings such as
/// `2130706433` = 127.0.0.1) applies to CONNECT and CONNECT-UDP targets.
pub use bauta_policy::Host as UdpHost;
use bauta_policy::HostError;

/// The template proxies SHOULD serve (RFC 9298 §3), as a path.
pub const DEFAULT_TEMPLATE: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";

/// A parsed CONNECT-UDP URI template (its path and query part).
#[derive(Clone, PartialEq, Eq)]
pub struct UdpTemplate {
    /// The path-and-query part of the template as configured.
    source: String,
    /// Literals and variables, alternating; adjacent literals merged.
    parts: Vec<Part>,
    /// The template ends in `/`, which requests may leave out.
    optional_trailing_slash: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Var {
    Host,
    Port,
}

/// The two variables of a matched request, percent-decoded once, not yet
/// validated (see [`parse_udp_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpTargetRaw {
    pub host: String,
    pub port: String,
}

/// Why a configured template was refused. RFC 9298 §2: a client that detects
/// a template violation MUST refuse the configuration; so does the proxy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the UDP template is empty")]
    Empty,
    #[error("the UDP template has character {0:?}; only ASCII 0x21-0x7E is allowed")]
    InvalidCharacter(char),
    #[error(
        "the UDP template must be a path starting with '/' or an absolute URI \
         'scheme://authority/path'"
    )]
    NotAbsolute,
    #[error("the UDP template has variables in its authority; they are only allowed in the path or query")]
    VariableInAuthority,
    #[error("the UDP template must not have a fragment ('#')")]
    Fragment,
    #[error("the UDP template has an unclosed '{{'")]
    UnclosedExpression,
    #[error("the UDP template has a '}}' without a matching '{{'")]
    UnmatchedBrace,
    #[error("the UDP template uses the '{0}' operator, which RFC 9298 section 2 forbids")]
    ForbiddenOperator(char),
    #[error(
        "the UDP template has the expression {{{0}}}; supported are {{target_host}}, \
         {{target_port}}, {{?target_host,target_port}} and {{&target_host,target_port}}"
    )]
    UnsupportedExpression(String),
    #[error("the UDP template has {{{0}}} more than once")]
    DuplicateVariable(&'static str),
    #[error("the UDP template lacks {{{0}}}")]
    MissingVariable(&'static str),
    #[error(
        "in the UDP template, {{{0}}} must be followed by the end of the template or by \
         a delimiter such as '/', '?', '&' or '='"
    )]
    AmbiguousBoundary(&'static str),
}

/// Why a request does not name a usable UDP target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The path does not fit the template: answer 404.
    #[error("the path does not match the CONNECT-UDP template")]
    NoMatch,
    /// The path fits but a variable is invalid: answer 400 (HTTP/1.1) or
    /// treat as malformed (HTTP/2, HTTP/3).
    #[error("bad CONNECT-UDP target: {0}")]
    BadTarget(&'static str),
}

// === impl UdpTemplate ===

impl UdpTemplate {
    /// Parses a template; see the module documentation for what is
    /// supported.
    pub fn parse(template: &str) -> Result<UdpTemplate, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        // RFC 9298 §2: the template MUST only contain ASCII characters in the
        // range 0x21-0x7E (percent-encoding is allowed).
        if let Some(c) = template.chars().find(|c| !matches!(c, '\x21'..='\x7e')) {
            return Err(TemplateError::InvalidCharacter(c));
        }
        let path = path_and_query(template)?;

        let mut parts = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            let brace = rest.find(['{', '}']).unwrap_or(rest.len());
            let (literal, tail) = rest.split_at_checked(brace).unwrap_or((rest, ""));
            if literal.contains('#') {
                return Err(TemplateError::Fragment);
            }
            push_literal(&mut parts, literal);
            rest = tail;
            if rest.starts_with('}') {
                return Err(TemplateError::UnmatchedBrace);
            }
            if let Some(tail) = rest.strip_prefix('{') {
                let (expr, after) = tail
                    .split_once('}')
                    .ok_or(TemplateError::UnclosedExpression)?;
                if expr.contains('{') {
                    return Err(TemplateError::UnclosedExpression);
                }
                push_expression(&mut parts, expr)?;
                rest = after;
            }
        }

        check_variables(&parts)?;
        let optional_trailing_slash =
            matches!(parts.last(), Some(Part::Literal(l)) if l.ends_with('/'));
        Ok(UdpTemplate {
            source: path.to_owned(),
            parts,
            optional_trailing_slash,
        })
    }

    /// The template's path and query, as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a request's path and query (`:path`, or the origin-form /
    /// absolute-form target's path and query) and returns the two variables,
    /// percent-decoded once.
    ///
    /// `NoMatch` if the fixed parts differ (including extra path segments or
    /// a query the template does not have); `BadTarget` if a value has an
    /// invalid percent-escape or decodes to non-ASCII bytes.
    pub fn match_path(&self, path_and_query: &str) -> Result<UdpTargetRaw, MatchError> {
        let mut rest = path_and_query;
        let mut host = None;
        let mut port = None;
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Literal(literal) => {
                    let last = i + 1 == self.parts.len();
                    if let Some(after) = rest.strip_prefix(literal.as_str()) {
                        rest = after;
                    } else if last
                        && self.optional_trailing_slash
                        && literal.strip_suffix('/') == Some(rest)
                    {
                        rest = "";
                    } else {
                        return Err(MatchError::NoMatch);
                    }
                }
                Part::Var(var) => {
                    let stop = match self.parts.get(i + 1) {
                        Some(Part::Literal(next)) => next.chars().next(),
                        _ => None,
                    };
                    let end = rest
                        .find(|c| is_delimiter(c) || Some(c) == stop)
                        .unwrap_or(rest.len());
                    let (value, after) = rest.split_at_checked(end).ok_or(MatchError::NoMatch)?;
                    rest = after;
                    match var {
                        Var::Host => host = Some(value),
                        Var::Port => port = Some(value),
                    }
                }
            }
        }
        if !rest.is_empty() {
            return Err(MatchError::NoMatch);
        }
        // `parse` guarantees each variable appears once; stay total anyway.
        let (Some(host), Some(port)) = (host, port) else {
            return Err(MatchError::NoMatch);
        };
        Ok(UdpTargetRaw {
            host: percent_decode(host)?,
            port: percent_decode(port)?,
        })
    }

    /// Expands the template for `host` and `port` (RFC 6570 level 1: every
    /// byte outside the unreserved set is percent-encoded, so IPv6 colons
    /// become `%3A`). For forwarding to a next-hop proxy and for tests.
    pub fn expand(&self, host: &UdpHost, port: u16) -> String {
        let host = match host {
            UdpHost::Name(name) => name.clone(),
            UdpHost::Ip(ip) => ip.to_string(),
        };
        let mut out = String::with_capacity(
            self.source
                .len()
                .saturating_add(host.len().saturating_mul(3)),
        );
        for part in &self.parts {
            match part {
                Part::Literal(literal) => out.push_str(literal),
                Part::Var(Var::Host) => percent_encode_into(&host, &mut out),
                Part::Var(Var::Port) => out.push_str(&port.to_string()),
            }
        }
        out
    }
}

impl Default for UdpTemplate {
    /// [`DEFAULT_TEMPLATE`].
    fn default() -> UdpTemplate {
        UdpTemplate {
            source: DEFAULT_TEMPLATE.to_owned(),
            parts: vec![
                Part::Literal("/.well-known/masque/udp/".to_owned()),
                Part::Var(Var::Host),
                Part::Literal("/".to_owned()),
                Part::Var(Var::Port),
                Part::Literal("/".to_owned()),
            ],
            optional_trailing_slash: true,
        }
    }
}

impl fmt::Debug for UdpTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UdpTemplate({:?})", self.source)
    }
}

impl fmt::Display for UdpTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for UdpTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UdpTemplate::parse(s)
    }
}

/// The path-and-query part of a path template or an absolute template.
fn path_and_query(template: &str) -> Result<&str, TemplateError> {
    if template.starts_with('/') {
        return Ok(template);
    }
    // RFC 9298 §2: the template MUST be absolute, with non-empty scheme,
    // authority and path, and variables only in the path or query.
    let (scheme, rest) = template
        .split_once("://")
        .ok_or(TemplateError::NotAbsolute)?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return Err(TemplateError::NotAbsolute);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest
        .split_at_checked(authority_end)
        .ok_or(TemplateError::NotAbsolute)?;
    if authority.contains(['{', '}']) {
        return Err(TemplateError::VariableInAuthority);
    }
    if authority.is_empty() || !path.starts_with('/') {
        return Err(TemplateError::NotAbsolute);
    }
    Ok(path)
}

fn push_literal(parts: &mut Vec<Part>, literal: &str) {
    if literal.is_empty() {
        return;
    }
    if let Some(Part::Literal(prev)) = parts.last_mut() {
        prev.push_str(literal);
    } else {
        parts.push(Part::Literal(literal.to_owned()));
    }
}

/// Turns one `{…}` expression into parts.
fn push_expression(parts: &mut Vec<Part>, expr: &str) -> Result<(), TemplateError> {
    let unsupported = || TemplateError::UnsupportedExpression(expr.to_owned());
    let (operator, names) = match expr.chars().next() {
        // RFC 9298 §2: the template MUST NOT use the "+", "#", ".", "/" or
        // ";" operators (RFC 6570 §3.2).
        Some(op @ ('+' | '#' | '.' | '/' | ';')) => {
            return Err(TemplateError::ForbiddenOperator(op))
        }
        Some('?') => (Some('?'), expr.get(1..).unwrap_or_default()),
        Some('&') => (Some('&'), expr.get(1..).unwrap_or_default()),
        _ => (None, expr),
    };
    // Level 1 expressions hold one variable.
    if operator.is_none() && names.contains(',') {
        return Err(unsupported());
    }
    for (i, name) in names.split(',').enumerate() {
        let var = match name {
            "target_host" => Var::Host,
            "target_port" => Var::Port,
            // Unknown names, modifiers (`:3`, `*`), reserved operators.
            _ => return Err(unsupported()),
        };
        // Form-style query: `?name=value`, then `&name=value` (RFC 6570
        // §3.2.8, §3.2.9). Our two variables are always defined.
        if let Some(op) = operator {
            let separator = if i == 0 { op } else { '&' };
            push_literal(parts, &format!("{separator}{name}="));
        }
        parts.push(Part::Var(var));
    }
    Ok(())
}

/// Each variable exactly once, each followed by an unambiguous boundary.
fn check_variables(parts: &[Part]) -> Result<(), TemplateError> {
    for (var, name) in [(Var::Host, "target_host"), (Var::Port, "target_port")] {
        match parts.iter().filter(|p| **p == Part::Var(var)).count() {
            0 => return Err(TemplateError::MissingVariable(name)),
            1 => {}
            _ => return Err(TemplateError::DuplicateVariable(name)),
        }
    }
    for (i, part) in parts.iter().enumerate() {
        let Part::Var(var) = part else { continue };
        let ambiguous = match parts.get(i + 1) {
            None => false,
            Some(Part::Var(_)) => true,
            Some(Part::Literal(next)) => next.chars().next().is_none_or(is_value_char),
        };
        if ambiguous {
            return Err(TemplateError::AmbiguousBoundary(match var {
                Var::Host => "target_host",
                Var::Port => "target_port",
            }));
        }
    }
    Ok(())
}

/// Characters that end a variable's value whatever the template says.
fn is_delimiter(c: char) -> bool {
    matches!(c, '/' | '?' | '#' | '&')
}

/// Characters an expanded value may contain: unreserved, `%` of an escape,
/// and `:` of an IPv6 literal sent unescaped.
fn is_value_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '%' | ':')
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Percent-decodes once. Invalid or truncated escapes and bytes outside ASCII
/// are errors.
fn percent_decode(s: &str) -> Result<String, MatchError> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hi = bytes.next().and_then(hex_value);
        let lo = bytes.next().and_then(hex_value);
        match (hi, lo) {
            (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
            _ => return Err(MatchError::BadTarget("invalid percent-encoding")),
        }
    }
    if !out.is_ascii() {
        return Err(MatchError::BadTarget("target is not ASCII"));
    }
    String::from_utf8(out).map_err(|_| MatchError::BadTarget("target is not ASCII"))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_encode_into(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if is_unreserved(char::from(b)) {
            out.push(char::from(b));
        } else {
            // Both indexes are nibbles, below 16 = HEX.len().
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Validates the decoded variables of a CONNECT-UDP request (RFC 9298 §3,
/// spec/masque.md §5.2).
///
/// * `target_host`: not empty; no brackets (IPv6 literals are sent bare, their
///   colons percent-encoded, though raw colons are accepted too); no `%` left
///   after decoding (that is an IPv6 zone ID, sent as `%25`, which is not
///   supported); otherwise parsed like any host: IPv6 if it has a colon, IPv4
///   if its last label is a number, else a name of letters, digits, `-`, `_`
///   and dots, labels of 1–63 bytes, 253 bytes at most, lowercased, one
///   trailing dot removed.
/// * `target_port`: digits only, 1–65535.
pub fn parse_udp_target(host: &str, port: &str) -> Result<(UdpHost, u16), MatchError> {
    // RFC 9298 §3: the target_host and target_port variables MUST NOT be
    // empty.
    if host.is_empty() {
        return Err(MatchError::BadTarget("target_host is empty"));
    }
    // RFC 9298 §3: IPv6 literals are not enclosed in brackets (their colons
    // are percent-encoded instead).
    if host.contains(['[', ']']) {
        return Err(MatchError::BadTarget(
            "target_host must not be in brackets; send IPv6 literals bare",
        ));
    }
    // RFC 9298 §3: IPv6 scoped addressing zone identifiers are not supported.
    if host.contains('%') {
        return Err(MatchError::BadTarget(
            "target_host contains '%' after decoding (IPv6 zone IDs are not supported)",
        ));
    }
    let host = UdpHost::parse(host).map_err(|e| MatchError::BadTarget(host_error_reason(&e)))?;
    let port = parse_port(port)?;
    Ok((host, port))
}

fn host_error_reason(e: &HostError) -> &'static str {
    match e {
        HostError::Empty => "target_host is empty",
        HostError::TooLong { .. } => "target_host is longer than 253 bytes",
        HostError::EmptyLabel => "target_host has an empty label",
        HostError::LabelTooLong { .. } => "target_host has a label longer than 63 bytes",
        HostError::HyphenAtLabelEdge => "target_host has a label starting or ending with '-'",
        HostError::InvalidIdna => "target_host is not a valid internationalised domain name",
        HostError::InvalidCharacter(_) | HostError::PercentEncoded => {
            "target_host has a character not allowed in a host name"
        }
        HostError::ZoneId => "IPv6 zone IDs are not supported",
        HostError::InvalidIpv6 => "target_host is not a valid IPv6 address",
        HostError::InvalidIpv4 => "target_host ends in a number but is not a valid IPv4 address",
    }
}

/// RFC 9298 §3: target_port is an integer from 1 to 65535.
fn parse_port(port: &str) -> Result<u16, MatchError> {
    if port.is_empty() {
        return Err(MatchError::BadTarget("target_port is empty"));
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(MatchError::BadTarget("target_port must be digits only"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(MatchError::BadTarget("target_port must be 1-65535")),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn target(template: &UdpTemplate, path: &str) -> Result<(UdpHost, u16), MatchError> {
        let raw = template.match_path(path)?;
        parse_udp_target(&raw.host, &raw.port)
    }

    fn name(s: &str) -> UdpHost {
        UdpHost::Name(s.to_owned())
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> UdpHost {
        UdpHost::Ip(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    fn v6(s: &str) -> UdpHost {
        UdpHost::Ip(IpAddr::V6(s.parse::<Ipv6Addr>().unwrap()))
    }

    const P: &str = "/.well-known/masque/udp/";

    #[test]
    fn default_template_equals_parsed_constant() {
        let parsed = UdpTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(parsed, UdpTemplate::default());
        let absolute = UdpTemplate::parse(
            "https://proxy.example:4433/.well-known/masque/udp/{target_host}/{target_port}/",
        )
        .unwrap();
        assert_eq!(absolute, UdpTemplate::default());
    }

    #[test]
    fn good_targets() {
        let t = UdpTemplate::default();
        let cases: Vec<(String, UdpHost, u16)> = vec![
            // RFC 9298 §3.4 example.
            (format!("{P}192.0.2.6/443/"), v4(192, 0, 2, 6), 443),
            // Trailing slash optional (spec/masque.md §5.2).
            (format!("{P}192.0.2.6/443"), v4(192, 0, 2, 6), 443),
            // RFC 9298 §3: colons percent-encoded, no brackets.
            (format!("{P}2001%3Adb8%3A%3A42/53/"), v6("2001:db8::42"), 53),
            (format!("{P}2001%3adb8%3a%3a42/53/"), v6("2001:db8::42"), 53),
            // Raw colons are accepted too.
            (format!("{P}2001:db8::42/53/"), v6("2001:db8::42"), 53),
            (format!("{P}%3A%3A1/1/"), v6("::1"), 1),
            (format!("{P}example.com/443/"), name("example.com"), 443),
            (
                format!("{P}Example.COM./65535/"),
                name("example.com"),
                65535,
            ),
            (
                format!("{P}_srv.ex-ample.org/8443/"),
                name("_srv.ex-ample.org"),
                8443,
            ),
            (format!("{P}localhost/0080/"), name("localhost"), 80),
            // Percent-encoded unreserved characters decode normally.
            (
                format!("{P}%65xample.com/%34%34%33/"),
                name("example.com"),
                443,
            ),
            // WHATWG IPv4 spellings are addresses, never names.
            (format!("{P}2130706433/53/"), v4(127, 0, 0, 1), 53),
            (format!("{P}127.1/53/"), v4(127, 0, 0, 1), 53),
            (format!("{P}0x7f.0.0.1/53/"), v4(127, 0, 0, 1), 53),
            (
                format!("{P}%3A%3Affff%3A127.0.0.1/53/"),
                v6("::ffff:127.0.0.1"),
                53,
            ),
        ];
        for (path, host, port) in cases {
            assert_eq!(target(&t, &path), Ok((host, port)), "{path}");
        }
    }

    #[test]
    fn bad_targets() {
        let t = UdpTemplate::default();
        let long_label = "a".repeat(64);
        let long_name = vec!["abcdefghi"; 26].join(".");
        let cases: Vec<(String, &str)> = vec![
            (format!("{P}/443/"), "target_host is empty"),
            (format!("{P}example.com//"), "target_port is empty"),
            (format!("{P}example.com/"), "target_port is empty"),
            (format!("{P}example.com/0/"), "target_port must be 1-65535"),
            (
                format!("{P}example.com/65536/"),
                "target_port must be 1-65535",
            ),
            (
                format!("{P}example.com/99999999999999999999/"),
                "target_port must be 1-65535",
            ),
            (
                format!("{P}example.com/+443/"),
                "target_port must be digits only",
            ),
            (
                format!("{P}example.com/44a/"),
                "target_port must be digits only",
            ),
            (
                format!("{P}example.com/%2B443/"),
                "target_port must be digits only",
            ),
            (
                format!("{P}[2001:db8::42]/443/"),
                "target_host must not be in brackets; send IPv6 literals bare",
            ),
            (
                format!("{P}%5B%3A%3A1%5D/443/"),
                "target_host must not be in brackets; send IPv6 literals bare",
            ),
            (
                format!("{P}fe80%3A%3A1%25eth0/443/"),
                "target_host contains '%' after decoding (IPv6 zone IDs are not supported)",
            ),
            (
                format!("{P}example.com%2525/443/"),
                "target_host contains '%' after decoding (IPv6 zone IDs are not supported)",
            ),
            (
                format!("{P}exa%zzmple.com/443/"),
                "invalid percent-encoding",
            ),
            (format!("{P}example.com%4/443/"), "invalid percent-encoding"),
            (format!("{P}example.com%/443/"), "invalid percent-encoding"),
            (format!("{P}%C3%A9xample.com/443/"), "target is not ASCII"),
            (
                format!("{P}exa%20mple.com/443/"),
                "target_host has a character not allowed in a host name",
            ),
            (
                format!("{P}exa%00mple.com/443/"),
                "target_host has a character not allowed in a host name",
            ),
            (
                format!("{P}exa%2Fmple.com/443/"),
                "target_host has a character not allowed in a host name",
            ),
            (
                format!("{P}user@example.com/443/"),
                "target_host has a character not allowed in a host name",
            ),
            (
                format!("{P}example..com/443/"),
                "target_host has an empty label",
            ),
            (format!("{P}./443/"), "target_host is empty"),
            (
                format!("{P}{long_label}.com/443/"),
                "target_host has a label longer than 63 bytes",
            ),
            (
                format!("{P}{long_name}/443/"),
                "target_host is longer than 253 bytes",
            ),
            (
                format!("{P}-example.com/443/"),
                "target_host has a label starting or ending with '-'",
            ),
            (
                format!("{P}2001%3Adb8%3A%3Ag/443/"),
                "target_host is not a valid IPv6 address",
            ),
            (
                format!("{P}1.2.3.999/443/"),
                "target_host ends in a number but is not a valid IPv4 address",
            ),
        ];
        for (path, reason) in cases {
            assert_eq!(
                target(&t, &path),
                Err(MatchError::BadTarget(reason)),
                "{path}"
            );
        }
    }

    #[test]
    fn paths_that_do_not_match() {
        let t = UdpTemplate::default();
        for path in [
            "",
            "/",
            "/.well-known/masque/udp/",
            "/.well-known/masque/udp/example.com",
            "/.well-known/masque/udp/example.com/443/extra",
            "/.well-known/masque/udp/example.com/443/extra/",
            "/.well-known/masque/udp/example.com/443//",
            "/.well-known/masque/udp/example.com/443/?x=1",
            "/.well-known/masque/udp/example.com/443?x=1",
            "/.well-known/masque/ip/example.com/443/",
            "/.well-known/masque/UDP/example.com/443/",
            "/prefix/.well-known/masque/udp/example.com/443/",
            "https://example.org/.well-known/masque/udp/example.com/443/",
        ] {
            assert_eq!(t.match_path(path), Err(MatchError::NoMatch), "{path:?}");
        }
    }

    #[test]
    fn query_template() {
        let t = UdpTemplate::parse("/masque?h={target_host}&p={target_port}").unwrap();
        assert_eq!(
            target(&t, "/masque?h=192.0.2.6&p=443"),
            Ok((v4(192, 0, 2, 6), 443))
        );
        assert_eq!(
            target(&t, "/masque?h=2001%3Adb8%3A%3A42&p=443"),
            Ok((v6("2001:db8::42"), 443))
        );
        assert_eq!(
            target(&t, "/masque?h=&p=443"),
            Err(MatchError::BadTarget("target_host is empty"))
        );
        for path in [
            "/masque",
            "/masque?",
            "/masque?h=a.example",
            "/masque?p=443&h=a.example",
            "/masque?h=a.example&p=443&x=1",
            "/masque/?h=a.example&p=443",
            "/masque?h=a.example/&p=443",
        ] {
            assert_eq!(t.match_path(path), Err(MatchError::NoMatch), "{path}");
        }
        // No trailing slash in the template, none optional.
        assert_eq!(t.match_path("/masque?h=a&p=1/"), Err(MatchError::NoMatch));
    }

    #[test]
    fn form_style_query_template() {
        let t = UdpTemplate::parse("https://example.org/masque{?target_host,target_port}").unwrap();
        let literal =
            UdpTemplate::parse("/masque?target_host={target_host}&target_port={target_port}")
                .unwrap();
        assert_eq!(t.parts, literal.parts);
        assert_eq!(
            target(&t, "/masque?target_host=example.com&target_port=443"),
            Ok((name("example.com"), 443))
        );

        let t = UdpTemplate::parse("/masque?v=1{&target_port,target_host}").unwrap();
        assert_eq!(
            target(&t, "/masque?v=1&target_port=53&target_host=10.0.0.1"),
            Ok((v4(10, 0, 0, 1), 53))
        );
    }

    #[test]
    fn trailing_slash_is_optional_only_when_the_template_has_one() {
        let with = UdpTemplate::parse("/udp/{target_host}/{target_port}/").unwrap();
        assert!(with.match_path("/udp/a.example/1/").is_ok());
        assert!(with.match_path("/udp/a.example/1").is_ok());
        assert_eq!(
            with.match_path("/udp/a.example/1//"),
            Err(MatchError::NoMatch)
        );

        let without = UdpTemplate::parse("/udp/{target_host}/{target_port}").unwrap();
        assert!(without.match_path("/udp/a.example/1").is_ok());
        assert_eq!(
            without.match_path("/udp/a.example/1/"),
            Err(MatchError::NoMatch)
        );

        let literal_end = UdpTemplate::parse("/udp/{target_host}/{target_port}/go/").unwrap();
        assert!(literal_end.match_path("/udp/a.example/1/go/").is_ok());
        assert!(literal_end.match_path("/udp/a.example/1/go").is_ok());
        assert_eq!(
            literal_end.match_path("/udp/a.example/1/"),
            Err(MatchError::NoMatch)
        );
    }

    #[test]
    fn variables_in_either_order() {
        let t = UdpTemplate::parse("/p/{target_port}/h/{target_host}").unwrap();
        assert_eq!(
            target(&t, "/p/443/h/example.com"),
            Ok((name("example.com"), 443))
        );
    }

    #[test]
    fn template_errors() {
        let cases: &[(&str, TemplateError)] = &[
            ("", TemplateError::Empty),
            (
                "/udp/{target_host}/{target_port}/ ",
                TemplateError::InvalidCharacter(' '),
            ),
            (
                "/udp/{target_host}/{target_port}/é",
                TemplateError::InvalidCharacter('é'),
            ),
            (
                "udp/{target_host}/{target_port}/",
                TemplateError::NotAbsolute,
            ),
            (
                "https://{target_host}/{target_port}/",
                TemplateError::VariableInAuthority,
            ),
            (
                "https:///udp/{target_host}/{target_port}/",
                TemplateError::NotAbsolute,
            ),
            ("https://proxy.example", TemplateError::NotAbsolute),
            (
                "https://proxy.example?h={target_host}&p={target_port}",
                TemplateError::NotAbsolute,
            ),
            (
                "1https://proxy.example/{target_host}/{target_port}",
                TemplateError::NotAbsolute,
            ),
            (
                "/udp/{target_host}/{target_port}/#x",
                TemplateError::Fragment,
            ),
            (
                "/udp/{target_host}/{target_port",
                TemplateError::UnclosedExpression,
            ),
            (
                "/udp/{target_host/{target_port}",
                TemplateError::UnclosedExpression,
            ),
            (
                "/udp/target_host}/{target_port}",
                TemplateError::UnmatchedBrace,
            ),
            (
                "/udp{/target_host,target_port}",
                TemplateError::ForbiddenOperator('/'),
            ),
            (
                "/udp/{+target_host}/{target_port}",
                TemplateError::ForbiddenOperator('+'),
            ),
            (
                "/udp/{.target_host}/{target_port}",
                TemplateError::ForbiddenOperator('.'),
            ),
            (
                "/udp{;target_host,target_port}",
                TemplateError::ForbiddenOperator(';'),
            ),
            (
                "/udp/{target_host}/{target_port}{#x}",
                TemplateError::ForbiddenOperator('#'),
            ),
            (
                "/udp/{target_host,target_port}",
                TemplateError::UnsupportedExpression("target_host,target_port".into()),
            ),
            (
                "/udp/{target_host:3}/{target_port}",
                TemplateError::UnsupportedExpression("target_host:3".into()),
            ),
            (
                "/udp/{target_host}/{target_port*}",
                TemplateError::UnsupportedExpression("target_port*".into()),
            ),
            (
                "/udp/{target_host}/{target_port}/{foo}",
                TemplateError::UnsupportedExpression("foo".into()),
            ),
            (
                "/udp/{=target_host}/{target_port}",
                TemplateError::UnsupportedExpression("=target_host".into()),
            ),
            (
                "/udp/{}/{target_port}",
                TemplateError::UnsupportedExpression(String::new()),
            ),
            (
                "/udp/{target_host}/",
                TemplateError::MissingVariable("target_port"),
            ),
            (
                "/udp/{target_port}/",
                TemplateError::MissingVariable("target_host"),
            ),
            (
                "/udp/{target_host}/{target_port}/{target_host}",
                TemplateError::DuplicateVariable("target_host"),
            ),
            (
                "/udp{?target_host,target_port}&{target_port}",
                TemplateError::DuplicateVariable("target_port"),
            ),
            (
                "/udp/{target_host}.{target_port}",
                TemplateError::AmbiguousBoundary("target_host"),
            ),
            (
                "/udp/{target_host}{target_port}",
                TemplateError::AmbiguousBoundary("target_host"),
            ),
            (
                "/udp/{target_host}/{target_port}x",
                TemplateError::AmbiguousBoundary("target_port"),
            ),
            (
                "/udp/{target_host}%2F{target_port}",
                TemplateError::AmbiguousBoundary("target_host"),
            ),
        ];
        for (template, want) in cases {
            assert_eq!(
                UdpTemplate::parse(template).as_ref(),
                Err(want),
                "{template}"
            );
        }
    }

    #[test]
    fn expand_matches_rfc_examples() {
        let t = UdpTemplate::default();
        assert_eq!(
            t.expand(&v4(192, 0, 2, 6), 443),
            "/.well-known/masque/udp/192.0.2.6/443/"
        );
        assert_eq!(
            t.expand(&v6("2001:db8::42"), 443),
            "/.well-known/masque/udp/2001%3Adb8%3A%3A42/443/"
        );
        let q = UdpTemplate::parse("/masque{?target_host,target_port}").unwrap();
        assert_eq!(
            q.expand(&name("example.com"), 53),
            "/masque?target_host=example.com&target_port=53"
        );
    }

    #[test]
    fn display_and_debug_show_the_template() {
        let t = UdpTemplate::parse("https://p.example/m?h={target_host}&p={target_port}").unwrap();
        assert_eq!(t.to_string(), "/m?h={target_host}&p={target_port}");
        assert_eq!(t.as_str(), "/m?h={target_host}&p={target_port}");
        assert_eq!(
            format!("{t:?}"),
            "UdpTemplate(\"/m?h={target_host}&p={target_port}\")"
        );
    }

    fn arb_host() -> impl Strategy<Value = UdpHost> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|o| UdpHost::Ip(IpAddr::from(o))),
            any::<[u8; 16]>().prop_map(|o| UdpHost::Ip(IpAddr::from(o))),
            "[a-z_][a-z0-9_]{0,10}(\\.[a-z][a-z0-9-]{0,10}[a-z]){0,3}".prop_map(UdpHost::Name),
        ]
    }

    proptest! {
        #[test]
        fn expand_then_match_round_trips(host in arb_host(), port in 1u16..) {
            for template in [
                DEFAULT_TEMPLATE,
                "/masque?h={target_host}&p={target_port}",
                "/m{?target_port,target_host}",
            ] {
                let t = UdpTemplate::parse(template).unwrap();
                let path = t.expand(&host, port);
                prop_assert_eq!(target(&t, &path), Ok((host.clone(), port)), "{}", path);
            }
        }

        #[test]
        fn match_never_panics(path in "\\PC{0,80}") {
            let _ = target(&UdpTemplate::default(), &path);
            let q = UdpTemplate::parse("/masque?h={target_host}&p={target_port}").unwrap();
            let _ = target(&q, &path);
        }

        #[test]
        fn match_never_panics_on_template_shaped_paths(
            host in "[a-zA-Z0-9%:.\\[\\]_~-]{0,40}",
            port in "[0-9%a-f+-]{0,8}",
            tail in "(/|//|/x|\\?)?",
        ) {
            let path = format!("{P}{host}/{port}{tail}");
            let _ = target(&UdpTemplate::default(), &path);
        }

        #[test]
        fn template_parse_never_panics(template in "\\PC{0,60}") {
            let _ = UdpTemplate::parse(&template);
        }

        #[test]
        fn template_parse_never_panics_on_brace_soup(template in "[/{}?&,=+#.;:*a-z_]{0,40}") {
            if let Ok(t) = UdpTemplate::parse(&template) {
                let _ = t.match_path(&template);
            }
        }

        #[test]
        fn parse_udp_target_never_panics(host in "\\PC{0,40}", port in "\\PC{0,8}") {
            let _ = parse_udp_target(&host, &port);
        }
    }
}
