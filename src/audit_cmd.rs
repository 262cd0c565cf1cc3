//! Glue between the CLI and `kube_proxy_rs::audit::commands`: every error exits 2.

use crate::cli::{DiffCmd, ExplainCmd, FamilyArg, OutputArg, TraceCmd};
use kube_proxy_rs::audit::commands::{self, DiffArgs, ExplainArgs, TraceArgs};
use kube_proxy_rs::compat::EmulatedVersion;
use kube_proxy_rs::model::ip::IpFamily;
use std::io::Write;
use std::process::ExitCode;

const EXIT_ERROR: u8 = 2;

fn family(f: FamilyArg) -> IpFamily {
    match f {
        FamilyArg::IPv4 => IpFamily::V4,
        FamilyArg::IPv6 => IpFamily::V6,
    }
}

fn finish(r: anyhow::Result<(u8, String)>) -> ExitCode {
    match r {
        Ok((code, out)) => {
            let mut o = std::io::stdout().lock();
            if o.write_all(out.as_bytes()).and_then(|_| o.flush()).is_err() {
                return ExitCode::from(EXIT_ERROR);
            }
            ExitCode::from(code)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

pub fn diff(a: DiffCmd) -> ExitCode {
    let json = a.output == OutputArg::Json;
    if let Some(ab) = &a.behaviour {
        return finish(commands::run_behaviour_diff(
            &ab[0],
            &ab[1],
            family(a.ip_family),
            json,
        ));
    }
    finish(commands::run_diff(DiffArgs {
        config: a.config.as_deref(),
        objects: a.objects.as_deref().unwrap_or_default(),
        live: a.live.as_deref().unwrap_or_default(),
        family: family(a.ip_family),
        json,
        version: a.emulated_version,
    }))
}

pub fn explain(a: ExplainCmd) -> ExitCode {
    finish(
        commands::run_explain(ExplainArgs {
            file: &a.file,
            objects: a.objects.as_deref(),
            config: a.config.as_deref(),
            family: family(a.ip_family),
            json: a.output == OutputArg::Json,
            version: a.emulated_version.unwrap_or(EmulatedVersion::NEWEST),
        })
        .map(|s| (0, s)),
    )
}

pub fn trace(a: TraceCmd) -> ExitCode {
    finish(
        commands::run_trace(TraceArgs {
            file: &a.file,
            src: a.src,
            dst: a.dst,
            dport: a.dport,
            proto: &a.proto,
            node_ips: &a.node_ip,
            from_node: a.from_node,
            chain: a.chain.as_deref(),
            max_outcomes: a.max_outcomes,
            json: a.output == OutputArg::Json,
        })
        .map(|s| (0, s)),
    )
}
