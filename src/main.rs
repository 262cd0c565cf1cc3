use anyhow::Context;
use clap::Parser;
use kube_proxy_rs::config::{self, KubeProxyConfiguration};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::offline;
use kube_proxy_rs::rules::jumps;
use kube_proxy_rs::source::objects::{self, ObjectSet};
use std::io::Write;
use std::process::ExitCode;

mod cli;
mod node;
use cli::{Cli, Command, FamilyArg, RenderArgs};

/// Exit status for bad input (config or objects), as the CLI contract says.
const EXIT_BAD_INPUT: u8 = 2;

/// An error caused by the user's input rather than by this program or the host.
#[derive(Debug)]
struct BadInput(anyhow::Error);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // RUST_LOG wins; else klog-style -v: 0-1 info, 2-4 debug, 5+ trace (render: warn).
    let default_level = match (&cli.command, cli.daemon.verbosity.unwrap_or(0)) {
        (Some(Command::Render(_)), _) => "warn",
        (_, 0..=1) => "info",
        (_, 2..=4) => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Some(Command::Render(args)) => render(args),
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

fn load_config(path: Option<&std::path::Path>) -> Result<KubeProxyConfiguration, BadInput> {
    match path {
        Some(p) => config::load_config(p).map_err(|e| BadInput(e.into())),
        None => Ok(KubeProxyConfiguration::default()),
    }
}

fn load_object_sets(paths: &[String]) -> Result<Vec<ObjectSet>, BadInput> {
    paths
        .iter()
        .map(|p| objects::load_objects(p).map_err(|e| BadInput(e.into())))
        .collect()
}

fn render(args: RenderArgs) -> Result<(), Failure> {
    let cfg = load_config(args.config.as_deref())?;
    let sets = load_object_sets(&args.objects)?;
    for set in &sets {
        for w in &set.warnings {
            eprintln!("warning: {w}");
        }
    }
    let family = match args.ip_family {
        FamilyArg::IPv4 => IpFamily::V4,
        FamilyArg::IPv6 => IpFamily::V6,
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    if args.ensure_rules {
        out.write_all(jumps::ensure_text().as_bytes())
            .context("writing output")?;
        out.flush().context("writing output")?;
        return Ok(());
    }
    let mut warnings = Vec::new();
    let text = offline::render_syncs(cfg, family, &sets, &mut warnings);
    warnings.dedup();
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    out.write_all(text.as_bytes()).context("writing output")?;
    out.flush().context("writing output")?;
    Ok(())
}
