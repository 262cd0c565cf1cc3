//! The `diff`, `explain` and `trace` subcommands (argument handling and output).

use super::behaviour::{self, Behaviour};
use super::diff::{self, Report};
use super::explain;
use super::parse::Ruleset;
use super::trace::{self, Packet};
use crate::compat::{self, EmulatedVersion};
use crate::config::{self, KubeProxyConfiguration};
use crate::model::ip::IpFamily;
use crate::source::objects;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

/// Exit status of `diff` when the node differs.
pub const EXIT_DIFFERENT: u8 = 1;

fn load_cfg(path: Option<&Path>, version: EmulatedVersion) -> Result<KubeProxyConfiguration> {
    let cfg = match path {
        Some(p) => config::load_config(p)?,
        None => KubeProxyConfiguration::default(),
    };
    compat::check_config(&cfg, &version.compat(), path)?;
    Ok(cfg)
}

/// The release a dump was written by, when not given: `-m nfacct` rules mean 1.31+ (the
/// newest supported), the uncounted INVALID drop rule means 1.30, else the newest.
pub fn infer_version(dump: &str) -> (EmulatedVersion, &'static str) {
    if dump.contains("--nfacct-name") {
        (EmulatedVersion::NEWEST, "the dump has -m nfacct rules")
    } else if dump.contains("--ctstate INVALID -j DROP") {
        (
            EmulatedVersion::V1_30,
            "the dump's INVALID drop rule has no -m nfacct",
        )
    } else {
        (EmulatedVersion::NEWEST, "nothing in the dump tells; newest")
    }
}

/// Reads a dump: a file, `-` for stdin, or `local` to run iptables-save here.
pub fn read_live(src: &str, family: IpFamily) -> Result<(String, String)> {
    match src {
        "-" => {
            let mut b = Vec::new();
            std::io::stdin()
                .read_to_end(&mut b)
                .context("reading standard input")?;
            Ok((super::parse::decode(b, "<stdin>")?, "<stdin>".into()))
        }
        "local" => local_save(family),
        path => {
            let b = std::fs::read(path).with_context(|| format!("reading {path}"))?;
            Ok((super::parse::decode(b, path)?, path.to_string()))
        }
    }
}

/// Runs the iptables-save flavour (legacy or nft) that holds KUBE chains.
pub fn local_save(family: IpFamily) -> Result<(String, String)> {
    let pre = if family == IpFamily::V4 {
        "iptables"
    } else {
        "ip6tables"
    };
    let mut best: Option<(usize, String, String)> = None;
    let mut errors = Vec::new();
    for flavour in ["-legacy-save", "-nft-save", "-save"] {
        let bin = format!("{pre}{flavour}");
        match Command::new(&bin).output() {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout).into_owned();
                let n = text.lines().filter(|l| l.starts_with(":KUBE-")).count();
                if best.as_ref().is_none_or(|b| n > b.0) {
                    best = Some((n, text, bin));
                }
            }
            Ok(o) => errors.push(format!(
                "{bin}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => errors.push(format!("{bin}: {e}")),
        }
    }
    match best {
        Some((_, text, bin)) => Ok((text, format!("local ({bin})"))),
        None => bail!("no iptables-save could run: {}", errors.join("; ")),
    }
}

pub fn parse_named(text: &str, name: &str) -> Result<Ruleset> {
    Ruleset::parse(text).with_context(|| format!("parsing {name}"))
}

/// [`parse_named`] keeping the save of `family` when the dump holds both.
pub fn parse_family(text: &str, name: &str, family: IpFamily) -> Result<Ruleset> {
    Ruleset::parse_family(text, Some(family)).with_context(|| format!("parsing {name}"))
}

/// The parser's notes on what it left out, on stderr (stdout is the report).
fn print_input_notes(rs: &Ruleset, name: &str) {
    for n in &rs.notes {
        eprintln!("note: {name}: {n}");
    }
}

pub struct DiffArgs<'a> {
    pub config: Option<&'a Path>,
    pub objects: &'a str,
    pub live: &'a str,
    pub family: IpFamily,
    pub json: bool,
    /// `None`: inferred from the dump ([`infer_version`]).
    pub version: Option<EmulatedVersion>,
}

/// Returns the exit status: 0 equal, 1 different.
pub fn run_diff(a: DiffArgs) -> Result<(u8, String)> {
    let (text, name) = read_live(a.live, a.family)?;
    let version = match a.version {
        Some(v) => v,
        None => {
            let (v, why) = infer_version(&text);
            eprintln!("diff: emulating {v} ({why}; --emulated-version to choose)");
            v
        }
    };
    let cfg = load_cfg(a.config, version)?;
    // A node without nfacct support writes the 1.30 forms: the dump tells which.
    let nfacct = text.contains("--nfacct-name");
    // Two independent halves: the node's dump is parsed on a second thread while this
    // one loads the objects and renders the expected state (the machine's other core).
    let (live, expected) = std::thread::scope(|s| -> Result<_> {
        // The main thread's stack size, so the parser behaves as it does there.
        let parser = std::thread::Builder::new()
            .stack_size(8 << 20)
            .spawn_scoped(s, || {
                let live = parse_family(&text, &name, a.family);
                // The text is not needed once parsed: free it before the peak.
                drop(text);
                live
            })
            .context("starting the thread that parses the dump")?;
        let expected = render_expected(cfg, version, a.family, nfacct, a.objects);
        let live = parser.join().expect("the parser thread does not panic");
        let expected = expected?;
        Ok((live?, expected))
    })?;
    print_input_notes(&live, &name);
    let report = diff::diff(&expected, &live);
    // The process ends right after: freeing ~10⁶ small allocations one by one costs a
    // fifth of the run on a 10,000-service dump.
    std::mem::forget(expected);
    std::mem::forget(live);
    let out = if a.json {
        json(&report)?
    } else {
        report.to_text()
    };
    Ok((if report.equal { 0 } else { EXIT_DIFFERENT }, out))
}

/// The state kube-proxy should have written for the objects at `objects`.
fn render_expected(
    cfg: KubeProxyConfiguration,
    version: EmulatedVersion,
    family: IpFamily,
    nfacct: bool,
    objects: &str,
) -> Result<diff::Expected> {
    let set = objects::load_objects(objects)?;
    for w in &set.warnings {
        tracing::warn!("{w}");
    }
    let mut warnings = Vec::new();
    let proxier =
        crate::offline::OfflineProxier::new(cfg, version.compat(), family).with_nfacct(nfacct);
    let expected = diff::expected_state_lean(proxier, set, &mut warnings);
    crate::model::dedup_warnings(&mut warnings);
    for w in &warnings {
        tracing::warn!("{w}");
    }
    Ok(expected)
}

/// `diff --behaviour A B`: exit 0 when A and B behave the same, 1 when not.
pub fn run_behaviour_diff(a: &str, b: &str, family: IpFamily, json: bool) -> Result<(u8, String)> {
    let read = |src: &str| -> Result<Behaviour> {
        let (text, name) = read_live(src, family)?;
        let rs = parse_family(&text, &name, family)?;
        print_input_notes(&rs, &name);
        let b = Behaviour::of(&rs);
        std::mem::forget(rs);
        Ok(b)
    };
    let (ba, bb) = (read(a)?, read(b)?);
    let report = behaviour::compare(&ba, &bb);
    std::mem::forget((ba, bb));
    let out = if json {
        let mut s = serde_json::to_string_pretty(&report)?;
        s.push('\n');
        s
    } else {
        report.to_text()
    };
    Ok((if report.equal { 0 } else { EXIT_DIFFERENT }, out))
}

fn json(r: &Report) -> Result<String> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    Ok(s)
}

pub struct ExplainArgs<'a> {
    pub file: &'a str,
    pub objects: Option<&'a str>,
    pub config: Option<&'a Path>,
    pub family: IpFamily,
    pub json: bool,
    pub version: EmulatedVersion,
}

pub fn run_explain(a: ExplainArgs) -> Result<String> {
    let (text, name) = read_live(a.file, a.family)?;
    let rs = parse_family(&text, &name, a.family)?;
    let known = match a.objects {
        Some(o) => {
            let cfg = load_cfg(a.config, a.version)?;
            let set = objects::load_objects(o)?;
            let mut warnings = Vec::new();
            let proxier = crate::offline::OfflineProxier::new(cfg, a.version.compat(), a.family);
            let model = proxier.build_model(&set, &mut warnings);
            Some(explain::KnownPorts::from_model(&model))
        }
        None => None,
    };
    let ex = explain::explain(&rs, known.as_ref());
    if a.json {
        let mut s = serde_json::to_string_pretty(&ex)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(ex.to_text())
    }
}

pub struct TraceArgs<'a> {
    pub file: &'a str,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dport: u16,
    pub proto: &'a str,
    pub node_ips: &'a [IpAddr],
    pub from_node: bool,
    pub chain: Option<&'a str>,
    /// 0 = all.
    pub max_outcomes: usize,
    pub json: bool,
}

pub fn run_trace(a: TraceArgs) -> Result<String> {
    let family = if a.dst.is_ipv4() {
        IpFamily::V4
    } else {
        IpFamily::V6
    };
    if a.src.is_ipv4() != a.dst.is_ipv4() {
        bail!("--src and --dst must be of the same IP family");
    }
    let (text, name) = read_live(a.file, family)?;
    let rs = parse_family(&text, &name, family)?;
    let pkt = Packet {
        src: a.src,
        dst: a.dst,
        dport: a.dport,
        proto: a.proto.to_string(),
        from_node: a.from_node,
    };
    let opts = trace::TraceOptions {
        start_chain: a.chain.map(str::to_string),
        max_outcomes: if a.max_outcomes == 0 {
            usize::MAX
        } else {
            a.max_outcomes
        },
        ..trace::TraceOptions::default()
    };
    let mut t = trace::trace_with(&rs, &pkt, a.node_ips, &opts)
        .with_context(|| format!("tracing {name}"))?;
    t.notes.splice(0..0, rs.notes.iter().cloned());
    if a.json {
        let mut s = serde_json::to_string_pretty(&t)?;
        s.push('\n');
        Ok(s)
    } else {
        Ok(t.to_text())
    }
}
