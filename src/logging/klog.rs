//! `--logging-format text`: klog's text line, as upstream kube-proxy writes it,
//! `I1202 04:57:16.123456    1234 proxier.rs:123] "msg" key="value" n=3`: severity letter,
//! month and day, time with microseconds in the host's local time zone (as klog: `TZ` or
//! /etc/localtime; UTC when neither is readable), the process id right-aligned in 7
//! columns, the caller's file name and line, the quoted message, then `key=value` pairs with Go
//! quoting (strings quoted, numbers and booleans bare, multi-line strings as klog's `<`…` >`
//! block). An error field is written first as `err=`, as klog's ErrorS does.

use std::fmt::Write as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// klog's text format. `ansi` colours the severity letter of warnings and errors.
pub struct KlogText {
    pub ansi: bool,
    /// The zone the header's time is written in: klog writes local time.
    pub tz: jiff::tz::TimeZone,
}

impl KlogText {
    /// The format in the host's zone (read once: a daemon's zone does not change).
    pub fn local(ansi: bool) -> Self {
        let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
        KlogText { ansi, tz }
    }
}

/// klog's caller: the file name without its directories, then the line.
pub fn caller(file: &str, line: u32) -> String {
    let name = file.rsplit(['/', '\\']).next().unwrap_or(file);
    format!("{name}:{line}")
}

/// klog's severity letter: everything below a warning is an info line (`V(n).InfoS`).
pub fn severity(l: Level) -> char {
    match l {
        Level::ERROR => 'E',
        Level::WARN => 'W',
        _ => 'I',
    }
}

/// The header up to and including `] `, for a time in Unix nanoseconds shown in `tz`.
pub fn header(
    level: Level,
    unix_nanos: i128,
    tz: &jiff::tz::TimeZone,
    pid: u32,
    caller: &str,
) -> String {
    let ts = jiff::Timestamp::from_nanosecond(unix_nanos).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let t = tz.to_datetime(ts);
    format!(
        "{}{:02}{:02} {:02}:{:02}:{:02}.{:06} {:>7} {caller}] ",
        severity(level),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.subsec_nanosecond() / 1000,
        pid,
    )
}

/// Go's `strconv.Quote`: `\a \b \f \n \r \t \v \\ \"` escaped, other control and
/// non-printing characters as `\xNN` / `\uNNNN`, printable Unicode kept.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && (c.is_control()) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A string value: quoted, or klog's block for one with line breaks (lines indented by a
/// tab, the closing ` >` by a space).
pub fn string_value(s: &str) -> String {
    if !s.contains('\n') {
        return go_quote(s);
    }
    let mut out = String::from("<\n");
    let mut rest = s;
    while let Some(i) = rest.find('\n') {
        out.push('\t');
        out.push_str(&rest[..=i]);
        rest = &rest[i + 1..];
    }
    if !rest.is_empty() {
        out.push('\t');
        out.push_str(rest);
        out.push('\n');
    }
    out.push_str(" >");
    out
}

/// A value given by `Display`/`Debug`: bare when it reads as a number or boolean (as Go
/// prints those), else a string.
fn display_value(s: &str) -> String {
    let bare = s == "true"
        || s == "false"
        || s.parse::<i64>().is_ok()
        || s.parse::<u64>().is_ok()
        || (s.parse::<f64>().is_ok() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
    if bare {
        s.to_string()
    } else {
        string_value(s)
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    err: Option<String>,
    /// ` key=value` for every other field, in order.
    rest: String,
}

impl Fields {
    fn push(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            "error" | "err" => self.err = Some(value),
            name => {
                let _ = write!(self.rest, " {name}={}", display_value(&value));
            }
        }
    }
    fn push_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" | "error" | "err" => self.push(field, value.to_string()),
            name => {
                let _ = write!(self.rest, " {name}={}", string_value(value));
            }
        }
    }
    fn push_bare(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" | "error" | "err" => self.push(field, value),
            name => {
                let _ = write!(self.rest, " {name}={value}");
            }
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push_str(field, value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.push(field, format!("{value:?}"));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.push_str(field, &value.to_string());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_bare(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_bare(field, value.to_string());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push_bare(field, value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_bare(field, value.to_string());
    }
}

/// One line for an event: header, quoted message, `err=` if any, the other fields.
pub fn line(
    level: Level,
    unix_nanos: i128,
    tz: &jiff::tz::TimeZone,
    pid: u32,
    caller: &str,
    event: &Event<'_>,
    ansi: bool,
) -> String {
    let mut f = Fields::default();
    event.record(&mut f);
    let mut out = header(level, unix_nanos, tz, pid, caller);
    if ansi && level <= Level::WARN {
        let colour = if level == Level::ERROR { "31" } else { "33" };
        out.replace_range(..1, &format!("\x1b[1;{colour}m{}\x1b[0m", severity(level)));
    }
    out.push_str(&go_quote(&f.message));
    if let Some(e) = &f.err {
        let _ = write!(out, " err={}", string_value(e));
    }
    out.push_str(&f.rest);
    out
}

impl<S, N> FormatEvent<S, N> for KlogText
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
            .unwrap_or_default()
            .as_nanos() as i128;
        let meta = event.metadata();
        let caller = match (meta.file(), meta.line()) {
            (Some(file), Some(n)) => caller(file, n),
            _ => meta.target().to_string(),
        };
        let l = line(
            *meta.level(),
            now,
            &self.tz,
            std::process::id(),
            &caller,
            event,
            self.ansi,
        );
        writeln!(w, "{l}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::logging::tests::Buf;
    use jiff::tz::{Offset, TimeZone};

    const UTC: TimeZone = TimeZone::UTC;

    /// 2026-12-02T04:57:16.123456789Z
    const T: i128 = 1_796_187_436_123_456_789;

    #[test]
    fn header_has_klogs_columns() {
        assert_eq!(
            header(Level::INFO, T, &UTC, 1234, "proxier.go:805"),
            "I1202 04:57:16.123456    1234 proxier.go:805] "
        );
        // Month and day zero-padded, a wide pid fills its 7 columns.
        let jan = 1_767_236_645_000_001_000; // 2026-01-01T03:04:05.000001Z
        assert_eq!(
            header(Level::ERROR, jan, &UTC, 4_194_304, "x.rs:1"),
            "E0101 03:04:05.000001 4194304 x.rs:1] "
        );
        assert_eq!(header(Level::WARN, T, &UTC, 1, "a:2").as_bytes()[0], b'W');
        assert_eq!(header(Level::DEBUG, T, &UTC, 1, "a:2").as_bytes()[0], b'I');
        assert_eq!(header(Level::TRACE, T, &UTC, 1, "a:2").as_bytes()[0], b'I');
    }

    #[test]
    fn header_time_is_local_time() {
        // klog prints the wall clock of the host's zone: 04:57 UTC is 13:57 at +09:00,
        // and 23:57 of the day before at -05:00.
        let tokyo = TimeZone::fixed(Offset::constant(9));
        assert_eq!(
            header(Level::INFO, T, &tokyo, 7, "a.rs:1"),
            "I1202 13:57:16.123456       7 a.rs:1] "
        );
        let ny = TimeZone::fixed(Offset::constant(-5));
        assert_eq!(
            header(Level::INFO, T, &ny, 7, "a.rs:1"),
            "I1201 23:57:16.123456       7 a.rs:1] "
        );
    }

    #[test]
    fn caller_is_the_file_name_as_klog_writes_it() {
        assert_eq!(caller("src/sync/proxier.rs", 96), "proxier.rs:96");
        assert_eq!(caller("proxier.rs", 96), "proxier.rs:96");
    }

    #[test]
    fn quoting_is_gos() {
        // strconv.Quote's output for each input.
        assert_eq!(go_quote("plain"), r#""plain""#);
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(go_quote("t\tn\nr\r"), r#""t\tn\nr\r""#);
        assert_eq!(go_quote("\x07\x08\x0c\x0b"), r#""\a\b\f\v""#);
        assert_eq!(go_quote("\x01\x1b\x7f"), r#""\x01\x1b\x7f""#);
        assert_eq!(go_quote("\u{85}\u{a0}"), r#""\u0085\u00a0""#);
        assert_eq!(go_quote("héllo ✓"), "\"héllo ✓\"");
    }

    #[test]
    fn multi_line_strings_are_klog_blocks() {
        assert_eq!(string_value("one line"), "\"one line\"");
        assert_eq!(string_value("a\nb"), "<\n\ta\n\tb\n >");
        assert_eq!(string_value("a\nb\n"), "<\n\ta\n\tb\n >");
    }

    fn text_lines(f: impl FnOnce()) -> Vec<String> {
        let buf = Buf::default();
        let sub = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_writer(buf.clone())
            .event_format(KlogText {
                ansi: false,
                tz: UTC,
            })
            .finish();
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(String::from).collect()
    }

    /// The line after its header (`] ` ends it), checking the header's shape on the way.
    fn body(line: &str, letter: char) -> &str {
        let (head, body) = line.split_once("] ").unwrap();
        let b = head.as_bytes();
        assert_eq!(b[0] as char, letter, "{line}");
        let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
        assert!(digits(1..5) && digits(6..8) && digits(9..11) && digits(12..14));
        assert!(digits(15..21), "{line}");
        assert_eq!(
            (b[5], b[8], b[11], b[14], b[21]),
            (b' ', b':', b':', b'.', b' ')
        );
        let pid = head[22..29].trim_start();
        assert_eq!(pid, std::process::id().to_string(), "{line}");
        assert_eq!(b[29], b' ');
        let caller = &head[30..];
        assert!(
            caller.starts_with("klog.rs:") && caller[8..].parse::<u32>().is_ok(),
            "{line}"
        );
        body
    }

    #[test]
    fn sync_lines_read_like_upstreams() {
        let lines = text_lines(|| {
            tracing::debug!(
                numServices = 3u64,
                numEndpoints = 7u64,
                numFilterChains = 6u64,
                "Reloading service iptables data"
            );
            tracing::debug!(elapsed = "1.5ms", "SyncProxyRules complete");
            tracing::error!(
                table = "nat",
                error = "exit status 2",
                "Failed to execute iptables-restore"
            );
            let e = std::io::Error::other("boom");
            tracing::warn!(ok = true, ratio = 0.5, error = %e, "With \"quotes\"");
            tracing::info!(payload = "a\nb", family = ?crate::model::ip::IpFamily::V4, "multi");
        });
        assert_eq!(lines.len(), 8, "{lines:#?}");
        assert_eq!(
            body(&lines[0], 'I'),
            r#""Reloading service iptables data" numServices=3 numEndpoints=7 numFilterChains=6"#
        );
        assert_eq!(
            body(&lines[1], 'I'),
            r#""SyncProxyRules complete" elapsed="1.5ms""#
        );
        assert_eq!(
            body(&lines[2], 'E'),
            r#""Failed to execute iptables-restore" err="exit status 2" table="nat""#
        );
        assert_eq!(
            body(&lines[3], 'W'),
            r#""With \"quotes\"" err="boom" ok=true ratio=0.5"#
        );
        assert_eq!(body(&lines[4], 'I'), "\"multi\" payload=<");
        assert_eq!(lines[5], "\ta");
        assert_eq!(lines[6], "\tb");
        assert_eq!(lines[7], r#" > family="V4""#);
    }

    #[test]
    fn colour_only_marks_warnings_and_errors_when_asked() {
        let ev = |ansi: bool| {
            let buf = Buf::default();
            let sub = tracing_subscriber::fmt()
                .with_writer(buf.clone())
                .event_format(KlogText { ansi, tz: UTC })
                .finish();
            tracing::subscriber::with_default(sub, || {
                tracing::warn!("w");
                tracing::info!("i");
            });
            let bytes = buf.0.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap()
        };
        let plain = ev(false);
        assert!(!plain.contains('\x1b'), "{plain}");
        let coloured = ev(true);
        let mut l = coloured.lines();
        assert!(l.next().unwrap().starts_with("\x1b[1;33mW\x1b[0m"));
        assert!(l.next().unwrap().starts_with('I'));
    }
}
