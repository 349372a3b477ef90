//! Logging setup: tracing with text or JSON output, filtered by `RUST_LOG` (default `info`), to stderr or to a file.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::{EnvFilter, fmt};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber writing to stderr (once; later calls are ignored). Colours only when stderr is a
/// terminal (and `NO_COLOR` is unset), so redirected logs hold no escape codes.
pub fn init(format: LogFormat) {
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    install(format, std::io::stderr, ansi);
}

/// Installs the global subscriber writing to `path` (replacing an earlier file), without colours. For the demo, whose
/// screen belongs to its live view.
pub fn init_file(format: LogFormat, path: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
    install(format, std::sync::Mutex::new(file), false);
    Ok(())
}

fn install<W>(format: LogFormat, writer: W, ansi: bool)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
