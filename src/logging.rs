//! Log set-up: klog-style `-v` for this crate only (dependencies at warn unless `RUST_LOG`
//! says otherwise), klog's text lines ([`klog`]; colour only on a terminal), and
//! `--logging-format json` lines in the shape Kubernetes component-base writes (zap through
//! zapr: `ts` as Unix epoch milliseconds, `caller`, `msg`, `v` on info lines, `err` for an
//! error, then the fields).

pub mod klog;

use crate::daemon::flags::LogFormat;
use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// This crate's tracing target prefix (library and binary share it).
const CRATE: &str = "kube_proxy_rs";

/// klog verbosity → this crate's level: 0-1 info, 2-4 debug, 5+ trace.
pub fn level_for(verbosity: u8) -> Level {
    match verbosity {
        0..=1 => Level::INFO,
        2..=4 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// The target of kube's tower trace layer (`kube_client::client::builder`).
const QUIET_DEPENDENCY: &str = "kube_client::client::builder";

/// The filter: `RUST_LOG` when set (and valid), else `warn,kube_proxy_rs=<level>`, with
/// kube's request-tracing layer silenced: it logs every failed request at ERROR without
/// saying which, and the source logs the same failure with its kind and retry delay.
pub fn filter(level: Level) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "warn,{QUIET_DEPENDENCY}=off,{CRATE}={}",
            level_name(level)
        ))
    })
}

fn level_name(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Colour only when stderr is a terminal and `NO_COLOR` is unset (journald and container
/// logs get plain text).
pub fn use_ansi() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

/// Installs the global subscriber writing to stderr. Later calls are no-ops.
pub fn init(level: Level, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let ansi = use_ansi();
            builder
                .with_ansi(ansi)
                .event_format(klog::KlogText::local(ansi))
                .try_init()
        }
        LogFormat::Json => builder.with_ansi(false).event_format(JsonLines).try_init(),
    };
}

/// klog's `v` of an event at this level (the inverse of [`level_for`]).
fn klog_v(l: Level) -> u8 {
    match l {
        Level::TRACE => 5,
        Level::DEBUG => 2,
        _ => 0,
    }
}

/// component-base's JSON line format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let meta = event.metadata();
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let mut line = String::with_capacity(128 + fields.rest.len());
        line.push_str("{\"ts\":");
        line.push_str(&json_f64(now.as_nanos() as f64 / 1e6));
        if let (Some(file), Some(n)) = (meta.file(), meta.line()) {
            let _ = write!(line, ",\"caller\":{}", json_str(&short_caller(file, n)));
        }
        let _ = write!(line, ",\"msg\":{}", json_str(&fields.message));
        // zapr: info lines carry their verbosity, error lines do not (klog's ErrorS).
        if *meta.level() != Level::ERROR {
            let _ = write!(line, ",\"v\":{}", klog_v(*meta.level()));
        }
        line.push_str(&fields.rest);
        line.push('}');
        writeln!(w, "{line}")
    }
}

/// zap's ShortCallerEncoder: the last directory and the file, then the line.
pub(crate) fn short_caller(file: &str, line: u32) -> String {
    let mut parts = file.rsplit('/');
    let name = parts.next().unwrap_or(file);
    match parts.next() {
        Some(dir) => format!("{dir}/{name}:{line}"),
        None => format!("{name}:{line}"),
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_f64(f: f64) -> String {
    serde_json::Number::from_f64(f).map_or_else(|| json_str(&f.to_string()), |n| n.to_string())
}

#[derive(Default)]
struct JsonFields {
    message: String,
    /// `,"key":value` for every other field, in order.
    rest: String,
}

impl JsonFields {
    fn push(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            // klog's error key.
            "error" | "err" => {
                let _ = write!(self.rest, ",\"err\":{}", json_str(&value));
            }
            name => {
                let _ = write!(self.rest, ",{}:{}", json_str(name), json_str(&value));
            }
        }
    }
    fn push_raw(&mut self, field: &Field, raw: String) {
        if field.name() == "message" {
            self.message = raw;
        } else {
            let _ = write!(self.rest, ",{}:{raw}", json_str(field.name()));
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push(field, value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_raw(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_raw(field, value.to_string());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push_raw(field, json_f64(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_raw(field, value.to_string());
    }
}

/// An error with its causes, `outer: cause: root cause`, for log lines: client errors
/// hide the reason (a TLS certificate not trusted, a refused connection) in their sources.
/// A cause whose text the line already holds is skipped.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

/// Logs a line only when the state it reports changes (repeated "not yet" lines).
#[derive(Debug, Default)]
pub struct OnChange<T: PartialEq> {
    last: Option<T>,
}

impl<T: PartialEq> OnChange<T> {
    /// True when `state` differs from the one last passed (so the caller logs it).
    pub fn changed(&mut self, state: T) -> bool {
        if self.last.as_ref() == Some(&state) {
            return false;
        }
        self.last = Some(state);
        true
    }

    /// Forgets the state: the next call logs again.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    /// A log sink the tests read back.
    pub(crate) struct Buf(pub(crate) Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn json_lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(buf.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    #[test]
    fn json_lines_have_component_base_keys() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as f64;
        let lines = json_lines(|| {
            tracing::debug!(
                numServices = 3u64,
                elapsed = "1.5ms",
                "Reloading service iptables data"
            );
            tracing::error!(
                error = "exit status 2",
                "Failed to execute iptables-restore"
            );
            tracing::info!(quote = "a\"b\n", "with \"quotes\"");
        });
        assert_eq!(lines.len(), 3);
        let l = &lines[0];
        assert_eq!(l["msg"], "Reloading service iptables data");
        assert_eq!(l["v"], 2);
        assert_eq!(l["numServices"], 3);
        assert_eq!(l["elapsed"], "1.5ms");
        assert!(l["ts"].as_f64().unwrap() >= before, "{l}");
        assert!(
            l["caller"].as_str().unwrap().starts_with("src/logging.rs:"),
            "{l}"
        );
        let e = &lines[1];
        assert_eq!(e["err"], "exit status 2");
        assert!(e.get("v").is_none(), "{e}");
        assert_eq!(lines[2]["quote"], "a\"b\n");
        assert_eq!(lines[2]["msg"], "with \"quotes\"");
        assert_eq!(lines[2]["v"], 0);
    }

    #[test]
    fn error_chain_names_every_cause_once() {
        #[derive(Debug)]
        struct Wrap(&'static str, Option<Box<dyn std::error::Error + 'static>>);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref()
            }
        }
        let root = Wrap("invalid peer certificate: UnknownIssuer", None);
        let mid = Wrap("client error (Connect)", Some(Box::new(root)));
        // The outer error repeats its cause's text: not written twice.
        let top = Wrap("ServiceError: client error (Connect)", Some(Box::new(mid)));
        assert_eq!(
            error_chain(&top),
            "ServiceError: client error (Connect): invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(error_chain(&Wrap("alone", None)), "alone");
    }

    #[test]
    fn on_change_reports_each_new_state_once() {
        let mut c = OnChange::default();
        assert!(c.changed((false, true)));
        assert!(!c.changed((false, true)));
        assert!(c.changed((true, true)));
        c.reset();
        assert!(c.changed((true, true)));
    }

    #[test]
    fn verbosity_maps_to_levels() {
        assert_eq!(level_for(0), Level::INFO);
        assert_eq!(level_for(2), Level::DEBUG);
        assert_eq!(level_for(9), Level::TRACE);
    }
}
