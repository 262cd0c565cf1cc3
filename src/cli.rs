//! Command-line interface: subcommands and their arguments.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-proxy-rs",
    version,
    about = "kube-proxy (iptables mode), rule for rule"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the iptables-restore payload upstream kube-proxy would write for these objects.
    Render(RenderArgs),
    /// Apply one full sync for these objects to this host (jump rules, then
    /// iptables-restore with stale-chain deletion), then exit.
    Apply(ApplyArgs),
    /// Remove kube-proxy's rules and chains from both IP families (as `kube-proxy --cleanup`).
    Cleanup(CleanupArgs),
}

/// Which iptables binaries to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IptablesArg {
    /// Detect like kube-proxy's image: kubelet's hint chains, else the backend holding
    /// more rules; legacy on a tie (e.g. an empty namespace).
    Auto,
    Legacy,
    Nft,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// KubeProxyConfiguration file; defaults if omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Objects (Services, EndpointSlices, Nodes), as for `render`; `-` for stdin.
    #[arg(long = "objects")]
    pub objects: String,
    /// IP family to apply (iptables* for IPv4, ip6tables* for IPv6).
    #[arg(long = "ip-family", value_enum, default_value = "IPv4")]
    pub ip_family: FamilyArg,
    #[arg(long = "iptables", value_enum, default_value = "auto")]
    pub iptables: IptablesArg,
}

#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    #[arg(long = "iptables", value_enum, default_value = "auto")]
    pub iptables: IptablesArg,
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
