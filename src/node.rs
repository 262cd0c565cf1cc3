//! The daemon command: flags → configuration → backends → `kube_proxy_rs::daemon`.

use crate::{BadInput, Failure};
use anyhow::Context;
use kube_proxy_rs::daemon::flags::DaemonArgs;
use kube_proxy_rs::daemon::{self, DaemonOptions, HostMode, SourceSpec};
use kube_proxy_rs::iptables::recording::RecordingBackend;
use kube_proxy_rs::iptables::{Backend, BackendError};
use kube_proxy_rs::iptables::{CliBackend, ModeChoice};
use kube_proxy_rs::model::ip::IpFamily;
use kube_proxy_rs::rules::names::ChainKey;
use kube_proxy_rs::sync::conntrack::{Conntrack, ConntrackCli, RecordingConntrack};
use std::collections::HashSet;
use std::io::Write;
use std::time::Duration;

/// How long SIGTERM waits for the sync loop after killing its running commands.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);

/// `--dry-run`: a simulated kernel whose payloads are printed on stdout.
struct Printing(RecordingBackend);

impl Backend for Printing {
    fn family(&self) -> IpFamily {
        self.0.family()
    }
    fn ensure_jump_rules(&mut self) -> Result<(), BackendError> {
        self.0.ensure_jump_rules()
    }
    fn restore(&mut self, payload: &str) -> Result<(), BackendError> {
        self.0.restore(payload)?;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "# sync {}", self.0.payload_count());
        let _ = out.write_all(payload.as_bytes());
        let _ = out.flush();
        Ok(())
    }
    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError> {
        self.0.nat_chains()
    }
    fn create_canary(&mut self, table: &str) -> Result<(), BackendError> {
        self.0.create_canary(table)
    }
    fn canary_exists(&mut self, table: &str) -> Result<bool, BackendError> {
        self.0.canary_exists(table)
    }
    fn supports_random_fully(&self) -> bool {
        self.0.supports_random_fully()
    }
}

/// The netfilter backends of this node, one per IP family whose iptables works (upstream
/// probes `iptables -S POSTROUTING -t nat` per family).
fn node_backends(args: &DaemonArgs) -> anyhow::Result<Vec<Box<dyn Backend>>> {
    if args.dry_run {
        return Ok(vec![Box::new(Printing(RecordingBackend::new(
            IpFamily::V4,
        )))]);
    }
    let mut out: Vec<Box<dyn Backend>> = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        match CliBackend::for_host(family, ModeChoice::Auto) {
            Ok(b)
                if b.iptables(&["-S", "POSTROUTING", "-t", "nat"])
                    .is_ok_and(|r| r.ok()) =>
            {
                tracing::info!(?family, mode = ?b.tools().mode, "using iptables");
                out.push(Box::new(b));
            }
            Ok(_) => tracing::warn!(
                ?family,
                "iptables for this family does not work; family skipped"
            ),
            Err(e) => {
                tracing::warn!(?family, error = %e, "no iptables for this family; family skipped")
            }
        }
    }
    if out.is_empty() {
        anyhow::bail!("no working iptables for IPv4 or IPv6 on this host");
    }
    Ok(out)
}

/// How long start-up waits for the API server's `/version` (and the Node) before going
/// on without it.
const STARTUP_ASK_LIMIT: Duration = Duration::from_secs(15);

/// The API server's `/version` for the emulated-release default.
async fn ask_version(source: &SourceSpec) -> anyhow::Result<(String, String, String)> {
    let SourceSpec::Api { kubeconfig, master } = source else {
        anyhow::bail!("no API server");
    };
    let client =
        kube_proxy_rs::source::api::client(kubeconfig.as_deref(), master.as_deref()).await?;
    tokio::time::timeout(
        STARTUP_ASK_LIMIT,
        kube_proxy_rs::source::api::server_version(&client),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer in {STARTUP_ASK_LIMIT:?}"))?
}

/// This family's node IP as start-up sees it (upstream reads the Node once to pick its
/// node IPs), `None` when the Node cannot be had.
async fn startup_node_ip(
    source: &SourceSpec,
    cfg: &kube_proxy_rs::config::KubeProxyConfiguration,
    family: IpFamily,
) -> Option<std::net::IpAddr> {
    let name = match kube_proxy_rs::resolve::node_name(cfg) {
        n if n.is_empty() => daemon::host::hostname().ok()?,
        n => n,
    };
    let node = match source {
        SourceSpec::Api { kubeconfig, master } => {
            let client =
                kube_proxy_rs::source::api::client(kubeconfig.as_deref(), master.as_deref())
                    .await
                    .ok()?;
            tokio::time::timeout(
                STARTUP_ASK_LIMIT,
                kube_proxy_rs::source::api::node_once(client, &name),
            )
            .await
            .ok()??
        }
        SourceSpec::File { path, .. } => {
            let set = kube_proxy_rs::source::objects::load_objects(path.to_str()?).ok()?;
            set.nodes
                .into_iter()
                .map(|(n, _)| n)
                .find(|n| n.metadata.name.as_deref() == Some(name.as_str()))?
        }
    };
    let bind = kube_proxy_rs::model::ip::parse_ip_sloppy(cfg.bind_address.trim());
    Some(kube_proxy_rs::model::node::NodeInfo::from_node(&node).node_ip(family, bind))
}

pub fn run(args: DaemonArgs) -> Result<(), Failure> {
    let mut resolved = args.resolve().map_err(|e| BadInput(e.into()))?;
    kube_proxy_rs::logging::init(
        kube_proxy_rs::logging::level_for(resolved.verbosity),
        resolved.logging_format,
    );
    if let Some(p) = &args.write_config_to {
        std::fs::write(p, resolved.config.to_yaml())
            .with_context(|| format!("writing {}", p.display()))?;
        return Ok(());
    }
    if args.cleanup {
        return crate::cleanup(crate::cli::CleanupArgs {
            iptables: crate::cli::IptablesArg::Auto,
            emulated_version: args.emulated_version,
        });
    }
    let source = match &args.objects {
        Some(path) => SourceSpec::File {
            path: path.clone(),
            poll: Duration::from_secs(1),
        },
        None => SourceSpec::Api {
            kubeconfig: Some(&resolved.config.client_connection.kubeconfig)
                .filter(|k| !k.is_empty())
                .map(Into::into),
            master: resolved.master.clone(),
        },
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    if resolved.version_from_server {
        let answer = rt.block_on(ask_version(&source));
        if let Err(e) = &answer {
            tracing::warn!(error = %format!("{e:#}"), "Cannot read the API server's version");
        }
        let choice = args
            .settle_version(&mut resolved, answer.map_err(|e| format!("{e:#}")))
            .map_err(|e| BadInput(e.into()))?;
        tracing::info!(
            apiServer = choice.found.as_deref().unwrap_or("unknown"),
            emulatedVersion = %choice.version,
            reason = choice.reason,
            "Emulating upstream kube-proxy"
        );
    } else {
        let reason = if args.emulated_version.is_some() {
            "--emulated-version"
        } else {
            "no API server (--objects): the newest supported release"
        };
        tracing::info!(emulatedVersion = %resolved.compat.version, reason, "Emulating upstream kube-proxy");
    }
    // Held until exit. --dry-run touches no kernel state, so it takes no lock.
    let _lock = if args.dry_run {
        None
    } else {
        let path = match &args.lock_file {
            Some(p) => p.clone(),
            None => daemon::lock::default_path().context("finding this network namespace")?,
        };
        Some(daemon::lock::acquire(&path).map_err(anyhow::Error::from)?)
    };
    if !args.dry_run {
        // Before the proxiers: they read be-liberal back (spec §6.1 step 5).
        let roots = daemon::sysctls::Roots::host();
        daemon::sysctls::configure(&roots, &resolved.config.conntrack, daemon::sysctls::cpus())
            .context("configuring conntrack")?;
        // `primary` nodePortAddresses hold loopback only when the node IP is unknown.
        let node_ip = if kube_proxy_rs::resolve::node_port_addresses_are_primary(
            &resolved.config,
            &resolved.compat,
        ) {
            rt.block_on(startup_node_ip(&source, &resolved.config, IpFamily::V4))
        } else {
            None
        };
        if kube_proxy_rs::resolve::localhost_nodeports(
            &resolved.config,
            &resolved.compat,
            node_ip,
            IpFamily::V4,
        ) {
            daemon::sysctls::enable_route_localnet(&roots)
                .context("enabling localhost NodePorts")?;
        }
    }
    let backends = node_backends(&args)?;
    let conntrack: Box<dyn Conntrack> = if args.dry_run {
        Box::new(RecordingConntrack::default())
    } else {
        Box::new(ConntrackCli)
    };
    let opts = DaemonOptions {
        config: resolved.config,
        compat: resolved.compat,
        source,
        host: HostMode::Detect,
        minimal_restore: args.iptables_minimal_restore,
    };
    rt.block_on(async move {
        let mut handle = daemon::start(opts, backends, conntrack).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            // Exit status 1 right away, as upstream; the rules stay.
            e = handle.fatal() => return Err(e),
        }
        tracing::info!("Shutting down; rules stay in place");
        // A hung iptables-restore must not hold the exit: kill running tools, start no more.
        kube_proxy_rs::iptables::process::kill_all();
        if tokio::time::timeout(SHUTDOWN_LIMIT, handle.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("the sync loop did not stop in time; exiting anyway");
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
