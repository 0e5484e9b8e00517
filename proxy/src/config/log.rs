//! `[log]`: how diagnostics (stderr) are written. The access log is always
//! JSON lines on stdout.
//!
//! ```toml
//! [log]
//! format = "json"   # or "text" (the default)
//! ```

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// The diagnostics format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (colour only on a terminal).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    format: Option<Spanned<String>>,
}

pub(super) fn compile_log(l: &LogSection, src: &Source<'_>) -> Result<LogFormat, ConfigError> {
    let Some(f) = &l.format else {
        return Ok(LogFormat::Text);
    };
    parse(f.get_ref())
        .ok_or_else(|| src.err(f.span(), "log.format", "must be \"text\" or \"json\""))
}

fn parse(s: &str) -> Option<LogFormat> {
    match s {
        "text" => Some(LogFormat::Text),
        "json" => Some(LogFormat::Json),
        _ => None,
    }
}

/// The `[log] format` of the file at `path`, read before logging starts so
/// that the load's own warnings are written in it. The format cannot change
/// on reload (it takes a restart). Anything unreadable gives text: the
/// load that follows reports the error.
pub fn peek_format(path: &Path) -> LogFormat {
    #[derive(Default, Deserialize)]
    struct Peek {
        #[serde(default)]
        log: PeekLog,
    }
    #[derive(Default, Deserialize)]
    struct PeekLog {
        format: Option<String>,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Peek>(&text).ok())
        .and_then(|p| p.log.format)
        .and_then(|f| parse(&f))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peeks_the_format_and_falls_back_to_text() {
        let dir = std::env::temp_dir().join(format!("bauta-log-peek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("c.toml");
        std::fs::write(&p, "[proxy]\nname = \"x\"\n[log]\nformat = \"json\"\n").expect("w");
        assert_eq!(peek_format(&p), LogFormat::Json);
        std::fs::write(&p, "[log]\nformat = \"yaml\"\n").expect("w");
        assert_eq!(peek_format(&p), LogFormat::Text);
        std::fs::write(&p, "not toml [").expect("w");
        assert_eq!(peek_format(&p), LogFormat::Text);
        assert_eq!(peek_format(&dir.join("absent.toml")), LogFormat::Text);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
