//! Logging set-up, in one place: readable text for people, JSON for log pipelines, filtered by
//! `RUST_LOG` (default `info`). Logs go to stderr so stdout stays free for command output
//! (`custops token` prints a token there).

use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, Environment};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, for a terminal.
    Text,
    /// One JSON object per line, for production log collection.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format (use text or json)")),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// Reads `CUSTOPS_LOG_FORMAT` (default `text`).
pub fn log_format_from_env(env: &Environment) -> Result<LogFormat, ConfigError> {
    env.parse_or("CUSTOPS_LOG_FORMAT", LogFormat::Text)
}

/// Installs the global subscriber. A second call (several services in one test process) is a
/// no-op rather than an error.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Ignoring the error is deliberate: it only says a subscriber is already installed.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
