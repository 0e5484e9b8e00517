//! Logging setup: the access log as JSON lines on stdout (`access_log`,
//! written by a thread of its own), diagnostics on stderr as text or JSON
//! lines (`[log] format`; `RUST_LOG` filters them, default `info`).

use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Install the subscriber; `json`: diagnostics as JSON lines (`[log]
/// format = "json"`), else text.
pub fn init(json: bool) {
    let diag_filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: a file, a pipe or a log
    // collector gets plain text (and NO_COLOR is honoured either way).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (text, json) = match json {
        false => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(colour)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        true => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(text.with_filter(diag_filter.clone()))
        .with(json.with_filter(diag_filter))
        .try_init();
}
