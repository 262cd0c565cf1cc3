//! Command-line interface: subcommands and their arguments.

use clap::{Parser, Subcommand, ValueEnum};
use kube_proxy_rs::compat::EmulatedVersion;
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
    /// Compare a node's iptables-save dump with the rules kube-proxy should have written.
    /// Exit 0 equal, 1 different, 2 error.
    Diff(DiffCmd),
    /// Map every KUBE-SVC/SVL/EXT/FW/SEP chain of a dump to its service port and endpoint.
    Explain(ExplainCmd),
    /// Walk one new connection through a dump's nat and filter chains.
    Trace(TraceCmd),
    /// Apply one full sync for these objects to this host (jump rules, then
    /// iptables-restore with stale-chain deletion), then exit.
    Apply(ApplyArgs),
    /// Remove kube-proxy's rules and chains from both IP families (as `kube-proxy --cleanup`).
    Cleanup(CleanupArgs),
    /// Run the node daemon (the default when no subcommand is given).
    Daemon(Box<DaemonArgs>),
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
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
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
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
    /// Whether the node has the nfacct objects that 1.31+ rules count into (the v1.35
    /// corpus' host has them); `no` renders the INVALID and localhost NodePort rules of 1.30.
    #[arg(long = "nfacct", value_enum, default_value = "yes")]
    pub nfacct: YesNo,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum YesNo {
    Yes,
    No,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    Text,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DiffCmd {
    /// KubeProxyConfiguration of the node (as for `render`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Objects (Services, EndpointSlices, Nodes), as for `render`.
    #[arg(long, required_unless_present = "behaviour")]
    pub objects: Option<String>,
    /// The node's rules: an iptables-save file, `-` for stdin, or `local` to run
    /// iptables-save (legacy or nft, whichever has KUBE chains) here.
    #[arg(long, required_unless_present = "behaviour")]
    pub live: Option<String>,
    /// Compare two dumps by behaviour instead (per service port: entry points, endpoints
    /// and their shares, masquerading, policies, affinity, REJECT/DROP), e.g. before and
    /// after a migration. Each is a file, `-` or `local`.
    #[arg(long = "behaviour", visible_alias = "behavior", num_args = 2,
          value_names = ["A", "B"], conflicts_with_all = ["objects", "live", "config"])]
    pub behaviour: Option<Vec<String>>,
    #[arg(long = "ip-family", value_enum, default_value = "IPv4")]
    pub ip_family: FamilyArg,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputArg,
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
}

#[derive(clap::Args, Debug)]
pub struct ExplainCmd {
    /// iptables-save dump (or restore payload); `-` for stdin, `local` for this host.
    pub file: String,
    /// Objects to recompute chain hashes from (else names come from rule comments).
    #[arg(long)]
    pub objects: Option<String>,
    /// KubeProxyConfiguration used with --objects (cluster CIDR, ...); defaults if omitted.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// IP family of the proxier the objects are modelled for, and of `local`.
    #[arg(long = "ip-family", value_enum, default_value = "IPv4")]
    pub ip_family: FamilyArg,
    /// Output format: text, or json (chains, shared_chains, ports, notes, findings).
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputArg,
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
}

#[derive(clap::Args, Debug)]
pub struct TraceCmd {
    /// iptables-save dump (or restore payload); `-` for stdin, `local` for this host.
    pub file: String,
    #[arg(long)]
    pub src: std::net::IpAddr,
    #[arg(long)]
    pub dst: std::net::IpAddr,
    #[arg(long)]
    pub dport: u16,
    #[arg(long, value_parser = ["tcp", "udp", "sctp"], default_value = "tcp")]
    pub proto: String,
    /// An address of the node (`addrtype LOCAL`); repeatable. Loopback always counts.
    #[arg(long = "node-ip")]
    pub node_ip: Vec<std::net::IpAddr>,
    /// The packet is sent by the node itself (nat OUTPUT instead of PREROUTING).
    #[arg(long = "from-node")]
    pub from_node: bool,
    /// Start in this chain (nat, else filter) instead of nat PREROUTING/OUTPUT, e.g.
    /// KUBE-SERVICES for a fragment. Without it, a dump lacking the entry chain is traced
    /// from nat KUBE-SERVICES.
    #[arg(long)]
    pub chain: Option<String>,
    /// Outcomes listed with their path, most likely first; the rest are summed on one
    /// line (0 = list all).
    #[arg(long = "max-outcomes", default_value_t = 20)]
    pub max_outcomes: usize,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputArg,
}
