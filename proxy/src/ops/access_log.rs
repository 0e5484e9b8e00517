//! One canonical access-log line per exchange: a JSON object on stdout,
//! written by [`LineSink`]'s thread so that no request waits for the log
//! pipe. The line is formatted here directly (no tracing event, no
//! intermediate map): `timestamp` (RFC 3339, UTC, microseconds), `level`,
//! then the fields of [`Entry`] in their order.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bauta_policy::Decision;

use crate::ops::line_sink::LineSink;

/// Everything one line says. Fields that do not apply stay empty.
pub struct Entry<'a> {
    pub listener: &'a str,
    pub client: SocketAddr,
    /// Who is asking (verified); `None` is logged as `anonymous`.
    pub identity: Option<&'a str>,
    pub protocol: &'a str,
    pub method: &'a str,
    pub kind: &'a str,
    pub target: &'a str,
    pub decision: Option<&'a Decision>,
    pub status: u16,
    pub outcome: &'a str,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    /// How the request left this proxy: `direct` (dialled here) or
    /// `gateway` (through the `[gateway]`).
    pub via: &'a str,
}

/// Where lines go; unset (a library user, the tests' in-process proxies):
/// nowhere.
static SINK: OnceLock<Arc<LineSink>> = OnceLock::new();

/// Send the access log to stdout (`bauta run`). Once per process.
pub fn to_stdout() {
    if SINK.get().is_some() {
        return;
    }
    match LineSink::spawn(std::io::stdout()) {
        Ok(sink) => {
            let _ = SINK.set(sink);
        }
        Err(e) => eprintln!("bauta: cannot start the access-log writer ({e}); no access log"),
    }
}

/// Wait until every line so far is written (before the process exits).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush();
    }
}

pub fn write(e: &Entry<'_>) {
    let Some(sink) = SINK.get() else {
        return;
    };
    thread_local! {
        static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        format_line(e, SystemTime::now(), &mut line);
        sink.append(&line);
    });
}

/// The JSON line for `e` at `now`, newline included.
pub fn format_line(e: &Entry<'_>, now: SystemTime, out: &mut Vec<u8>) {
    let (verdict, rule, reason) = match e.decision {
        Some(d) => (d.verdict.as_str(), d.rule_name(), d.reason.as_str()),
        None => ("", "", ""),
    };
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(now, out);
    out.extend_from_slice(b"\",\"level\":\"INFO\"");
    field_str(out, "listener", e.listener);
    out.extend_from_slice(b",\"client\":\"");
    // A socket address has nothing to escape.
    let _ = write!(out, "{}", e.client);
    out.push(b'"');
    field_str(out, "identity", e.identity.unwrap_or("anonymous"));
    field_str(out, "protocol", e.protocol);
    field_str(out, "method", e.method);
    field_str(out, "kind", e.kind);
    field_str(out, "target", e.target);
    field_str(out, "verdict", verdict);
    field_str(out, "rule", rule);
    field_str(out, "reason", reason);
    field_num(out, "status", u64::from(e.status));
    field_str(out, "outcome", e.outcome);
    field_num(out, "bytes_up", e.bytes_up);
    field_num(out, "bytes_down", e.bytes_down);
    let ms = u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX);
    field_num(out, "duration_ms", ms);
    field_str(out, "via", e.via);
    out.extend_from_slice(b"}\n");
}

fn field_str(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":\"");
    escaped(out, value);
    out.push(b'"');
}

fn field_num(out: &mut Vec<u8>, name: &str, value: u64) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    let _ = write!(out, "{value}");
}

/// A JSON string's contents (RFC 8259 §7): quote, backslash and control
/// characters escaped; everything else (valid UTF-8) as it is.
fn escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    );
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`, for days ≥ 0).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(target: &'a str, identity: Option<&'a str>) -> Entry<'a> {
        Entry {
            listener: "plain",
            client: "127.0.0.1:4242".parse().expect("addr"),
            identity,
            protocol: "http/1.1",
            method: "CONNECT",
            kind: "connect",
            target,
            decision: None,
            status: 200,
            outcome: "ok",
            bytes_up: 12,
            bytes_down: u64::MAX,
            duration: Duration::from_millis(1500),
            via: "direct",
        }
    }

    fn line(e: &Entry<'_>, now: SystemTime) -> serde_json::Value {
        let mut out = Vec::new();
        format_line(e, now, &mut out);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn fields_in_order_with_their_types() {
        let now = UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        let mut out = Vec::new();
        format_line(&entry("example.com:443", None), now, &mut out);
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "{\"timestamp\":\"2025-12-06T05:46:40.123456Z\",\"level\":\"INFO\",\"listener\":\"plain\",\
             \"client\":\"127.0.0.1:4242\",\"identity\":\"anonymous\",\"protocol\":\"http/1.1\",\
             \"method\":\"CONNECT\",\"kind\":\"connect\",\"target\":\"example.com:443\",\"verdict\":\"\",\
             \"rule\":\"\",\"reason\":\"\",\"status\":200,\"outcome\":\"ok\",\"bytes_up\":12,\
             \"bytes_down\":18446744073709551615,\"duration_ms\":1500,\"via\":\"direct\"}\n"
        );
    }

    #[test]
    fn strings_are_escaped() {
        let nasty = "a\"b\\c\nd\re\tf\u{1}g\u{7f}h é 😀";
        let v = line(&entry(nasty, Some("spiffe://x/\"y\"")), SystemTime::now());
        assert_eq!(v["target"], nasty);
        assert_eq!(v["identity"], "spiffe://x/\"y\"");
    }

    #[test]
    fn timestamps_match_the_calendar() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, "2000-02-29T00:00:00.000000Z"),
            (4_107_542_399, "2100-02-28T23:59:59.000000Z"),
            (4_107_542_400, "2100-03-01T00:00:00.000000Z"),
            (1_796_601_599, "2026-12-06T23:59:59.000000Z"),
        ] {
            let mut out = Vec::new();
            timestamp(UNIX_EPOCH + Duration::from_secs(secs), &mut out);
            assert_eq!(String::from_utf8(out).expect("utf8"), want, "{secs}");
        }
    }
}
