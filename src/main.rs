use anyhow::Context;
use clap::Parser;
use kube_proxy_rs::compat::{self, Compat, EmulatedVersion};
use kube_proxy_rs::config::{self, KubeProxyConfiguration};
use kube_proxy_rs::iptables::{self as ipt, Backend as _};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::rules::table::{IoOut, Out as _};
use kube_proxy_rs::source::into_model;
use kube_proxy_rs::source::objects;
use std::io::Write;
use std::process::ExitCode;

mod audit_cmd;
mod cli;
mod node;
use cli::{ApplyArgs, CleanupArgs, Cli, Command, FamilyArg, IptablesArg, RenderArgs};

/// Exit status for bad input (config or objects), as the CLI contract says.
const EXIT_BAD_INPUT: u8 = 2;

/// An error caused by the user's input rather than by this program or the host.
#[derive(Debug)]
struct BadInput(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon sets up logging once flags and file are merged (the file may set it).
    let level = match &cli.command {
        None | Some(Command::Daemon(_)) => None,
        Some(Command::Render(_)) => Some(tracing::Level::WARN),
        Some(_) => Some(tracing::Level::INFO),
    };
    if let Some(level) = level {
        kube_proxy_rs::logging::init(level, Default::default());
    }
    let result = match cli.command {
        Some(Command::Render(args)) => render(args),
        Some(Command::Apply(args)) => apply(args),
        Some(Command::Cleanup(args)) => cleanup(args),
        Some(Command::Diff(a)) => return audit_cmd::diff(a),
        Some(Command::Explain(a)) => return audit_cmd::explain(a),
        Some(Command::Trace(a)) => return audit_cmd::trace(a),
        Some(Command::Daemon(args)) => node::run(*args),
        None => node::run(cli.daemon),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::BadInput(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_BAD_INPUT)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    BadInput(anyhow::Error),
    Other(anyhow::Error),
}

impl From<BadInput> for Failure {
    fn from(b: BadInput) -> Self {
        Failure::BadInput(b.0)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// The config file (or the defaults), checked against what the emulated release accepts.
fn load_config(
    path: Option<&std::path::Path>,
    compat: &Compat,
) -> Result<KubeProxyConfiguration, BadInput> {
    let cfg = match path {
        Some(p) => config::load_config(p).map_err(|e| BadInput(e.into()))?,
        None => KubeProxyConfiguration::default(),
    };
    compat::check_config(&cfg, compat, path).map_err(|e| BadInput(e.into()))?;
    Ok(cfg)
}

/// `--emulated-version`, else the newest supported release.
fn compat_of(v: Option<EmulatedVersion>) -> Compat {
    v.unwrap_or(EmulatedVersion::NEWEST).compat()
}

fn load_object_sets(paths: &[String]) -> Result<Vec<objects::ObjectSet>, BadInput> {
    paths
        .iter()
        .map(|p| objects::load_objects(p).map_err(|e| BadInput(e.into())))
        .collect()
}

fn render(args: RenderArgs) -> Result<(), Failure> {
    let compat = compat_of(args.emulated_version);
    let cfg = load_config(args.config.as_deref(), &compat)?;
    let family = family_of(args.ip_family);
    let proxier = offline::OfflineProxier::new(cfg, compat, family)
        .with_nfacct(args.nfacct == cli::YesNo::Yes);
    let stdout = std::io::stdout();
    if args.ensure_rules {
        let mut out = stdout.lock();
        out.write_all(jumps::ensure_text().as_bytes())
            .and_then(|()| out.flush())
            .context("writing output")?;
        return Ok(());
    }
    let mut warnings = Vec::new();
    let mut out = IoOut::new(stdout.lock());
    if let [path] = args.objects.as_slice() {
        // One file: decoded straight into its model, one object at a time.
        let loaded = into_model::load_model_file(path, &proxier.model_options())
            .map_err(|e| BadInput(e.into()))?;
        for w in &loaded.load_warnings {
            eprintln!("warning: {w}");
        }
        warnings = loaded.model_warnings;
        print_warnings(&mut warnings);
        offline::render_model_to(proxier, loaded.model, &mut out);
    } else {
        // Several files: each step is fed to the change trackers as informer events.
        let sets = load_object_sets(&args.objects)?;
        for w in sets.iter().flat_map(|s| &s.warnings) {
            eprintln!("warning: {w}");
        }
        let text = offline::render_syncs(proxier, &sets, &mut warnings);
        print_warnings(&mut warnings);
        out.push_str(&text);
    }
    out.finish().context("writing output")?;
    Ok(())
}

fn print_warnings(warnings: &mut kube_proxy_rs::model::Warnings) {
    warnings.dedup();
    for w in warnings.iter() {
        eprintln!("warning: {w}");
    }
}

fn family_of(arg: FamilyArg) -> IpFamily {
    match arg {
        FamilyArg::IPv4 => IpFamily::V4,
        FamilyArg::IPv6 => IpFamily::V6,
    }
}

fn mode_choice(arg: IptablesArg) -> ipt::ModeChoice {
    match arg {
        IptablesArg::Auto => ipt::ModeChoice::Auto,
        IptablesArg::Legacy => ipt::ModeChoice::Legacy,
        IptablesArg::Nft => ipt::ModeChoice::Nft,
    }
}

fn apply(args: ApplyArgs) -> Result<(), Failure> {
    let compat = compat_of(args.emulated_version);
    let cfg = load_config(args.config.as_deref(), &compat)?;
    let set = objects::load_objects(&args.objects).map_err(|e| BadInput(e.into()))?;
    for w in &set.warnings {
        eprintln!("warning: {w}");
    }
    let family = family_of(args.ip_family);
    let mode = ipt::detect::detect_mode(mode_choice(args.iptables));
    let tools = ipt::Toolset::probe(family, mode).with_context(|| {
        format!(
            "running {}",
            ipt::detect::Binaries::new(family, mode).iptables
        )
    })?;
    tracing::info!(%mode, version = %tools.caps.version, "iptables");
    let mut warnings = Vec::new();
    let model = ipt::apply::build_model(&cfg, &compat, &set, family, &mut warnings);
    warnings.dedup();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    ipt::host::configure_tcp_be_liberal(&cfg);
    let mut host = ipt::host::real_host_facts(model.node.as_ref(), &tools.caps);
    // As a full sync of 1.31+ does: create the nfacct objects the rules count into.
    host.nfacct = compat.nfacct_rules && ipt::nfacct::ensure_objects();
    let mut backend = ipt::CliBackend::new(tools);
    let report = ipt::apply::full_sync(&cfg, &compat, &model, &host, &mut backend)
        .with_context(|| format!("applying {family:?} rules with iptables-{mode}"))?;
    tracing::info!(
        family = ?backend.family(),
        bytes = report.payload_bytes,
        ensure_ms = report.ensure_time.as_millis() as u64,
        render_ms = report.render_time.as_millis() as u64,
        restore_ms = report.restore_time.as_millis() as u64,
        "applied full sync"
    );
    Ok(())
}

fn cleanup(args: CleanupArgs) -> Result<(), Failure> {
    let mode = ipt::detect::detect_mode(mode_choice(args.iptables));
    // Offline, like `apply`: the newest release unless told otherwise.
    let compat = compat_of(args.emulated_version);
    let mut failed = 0;
    for family in [IpFamily::V4, IpFamily::V6] {
        let tools = match ipt::Toolset::probe(family, mode) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(?family, "no iptables binaries for this family; skipped");
                continue;
            }
            Err(e) => {
                eprintln!("error: {family:?}: {e}");
                failed += 1;
                continue;
            }
        };
        let backend = ipt::CliBackend::new(tools);
        for e in ipt::cleanup::cleanup(&backend, compat.cleanup_extended) {
            eprintln!("error: {family:?}: {e}");
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(
            anyhow::anyhow!("encountered {failed} error(s) while tearing down rules").into(),
        );
    }
    Ok(())
}
