//! Command-line interface: subcommands and their arguments.

use clap::{Parser, Subcommand, ValueEnum};
pub use kube_proxy_rs::daemon::flags::DaemonArgs;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-proxy-rs",
    version,
    about = "kube-proxy (iptables mode), rule for rule"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: run the node daemon (kube-proxy's flags).
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the iptables-restore payload upstream kube-proxy would write for these objects.
    Render(RenderArgs),
    /// Run the node daemon (the default when no subcommand is given).
    Daemon(Box<DaemonArgs>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    #[value(name = "IPv4", alias = "ipv4", alias = "4")]
    IPv4,
    #[value(name = "IPv6", alias = "ipv6", alias = "6")]
    IPv6,
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1); defaults if omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Objects (Services, EndpointSlices, Nodes): multi-document YAML, a `kind: List`, or
    /// `-` for stdin. Given several times: one sync per object set, each preceded by
    /// `# sync N full|partial`.
    #[arg(long = "objects", required = true)]
    pub objects: Vec<String>,
    /// IP family of the proxier to render for.
    #[arg(long = "ip-family", value_enum, default_value = "IPv4")]
    pub ip_family: FamilyArg,
    /// Print the jump rules a full sync ensures (expected.ensure format) instead.
    #[arg(long = "ensure-rules")]
    pub ensure_rules: bool,
}
