//! How every fedledger binary writes its logs, in one place so they agree: to standard error,
//! filtered by `RUST_LOG` (default `info`), as text with ANSI colours only when standard error
//! is a terminal (a file or a pipe gets plain text), or with `--log-format json` as one JSON
//! object per line for log collectors (tracing-subscriber's JSON layout: `timestamp`, `level`,
//! `fields` with `message`, `target`, and the current span's fields).
//!
//! Only binaries and examples call [`init`] (libraries never install a subscriber).

use std::io::IsTerminal;

/// The `--log-format` every binary accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    // Human-readable lines; coloured only on a terminal. (Plain comments: doc comments here
    // would make clap print a long help for every subcommand.)
    #[default]
    Text,
    // One JSON object per line, for log collectors.
    Json,
}

/// The clap argument binaries flatten into their command line (global: it may follow any
/// subcommand).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct LogArgs {
    /// Logs on standard error: text (colour only on a terminal) or json lines; RUST_LOG filters.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Installs the process's log subscriber: standard error, `RUST_LOG` or `info`, in `format`.
pub fn init(format: LogFormat) {
    init_with(format, "info")
}

/// [`init`] with another filter than `info` when `RUST_LOG` is not set (examples keep quiet).
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    install(format, filter)
}

/// [`init`] with the binary's `--log-level` when given (it overrides `RUST_LOG`; the same
/// syntax: `debug`, `fedledger_participant=debug`).
pub fn init_level(format: LogFormat, level: Option<&str>) {
    match level {
        Some(l) => install(format, tracing_subscriber::EnvFilter::new(l)),
        None => init(format),
    }
}

fn install(format: LogFormat, filter: tracing_subscriber::EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Run,
    }

    #[test]
    fn the_flag_is_global_and_defaults_to_text() {
        assert_eq!(
            Cli::parse_from(["x", "run"]).log.log_format,
            LogFormat::Text
        );
        assert_eq!(
            Cli::parse_from(["x", "run", "--log-format", "json"])
                .log
                .log_format,
            LogFormat::Json
        );
        assert!(Cli::try_parse_from(["x", "run", "--log-format", "xml"]).is_err());
    }
}
