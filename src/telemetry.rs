//! Tracing setup, done once by `main`: `RUST_LOG` (or `Log.Level`) filters, `Log.Format`
//! picks plain or JSON lines. Logs go to stderr so `diagnose` can print its report on stdout.
//! Every line passes one scrubber on its way out, whatever wrote it (our code, a library,
//! an MCP server's stderr): no configured secret or URL credential is ever printed. Colour
//! codes only go to a terminal.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::redact::Redactor;

/// Makes one [`Line`] per event.
#[derive(Clone)]
struct Scrubbed {
    redactor: Arc<Redactor>,
}

/// One event's output, scrubbed and written to stderr whole when dropped.
struct Line {
    buf: Vec<u8>,
    redactor: Arc<Redactor>,
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let clean = self.redactor.apply(&String::from_utf8_lossy(&self.buf));
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
}

impl<'a> MakeWriter<'a> for Scrubbed {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            buf: Vec::with_capacity(256),
            redactor: Arc::clone(&self.redactor),
        }
    }
}

/// Installs the global subscriber; `secrets` never reach the output.
pub fn init(level: &str, format: LogFormat, secrets: Vec<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(Scrubbed {
            redactor: Arc::new(Redactor::new(secrets)),
        });
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
