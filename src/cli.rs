//! Command-line interface: subcommands and their arguments.

use clap::{Parser, Subcommand, ValueEnum};
use kube_proxy_rs::compat::EmulatedVersion;
pub use kube_proxy_rs::daemon::flags::DaemonArgs;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "kube-proxy-rs",
    version,
    about = "kube-proxy (iptables mode), rule for rule",
    after_help = DAEMON_EXAMPLE
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand: run the node daemon (kube-proxy's flags).
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `kube-proxy-rs daemon --help` and `kube-proxy-rs --help` end with this.
pub const DAEMON_EXAMPLE: &str = "Example:\n  kube-proxy-rs --config /var/lib/kube-proxy/config.conf --hostname-override $(NODE_NAME)\n  kube-proxy-rs --kubeconfig /etc/kubernetes/kube-proxy.conf --cluster-cidr 10.244.0.0/16 -v 2\n  kube-proxy-rs --objects cluster.yaml --hostname-override node-a";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the iptables-restore payload upstream kube-proxy would write for these objects.
    #[command(
        after_help = "Example:\n  kube-proxy-rs render --config kube-proxy-config.yaml --objects cluster.yaml\n  kubectl get svc,endpointslices,nodes -A -o yaml | kube-proxy-rs render --objects -"
    )]
    Render(RenderArgs),
    /// Compare a node's iptables-save dump with the rules kube-proxy should have written.
    /// Exit 0 equal, 1 different, 2 error.
    #[command(
        after_help = "Example:\n  kube-proxy-rs diff --config kube-proxy-config.yaml --objects objects.yaml --live local\n  ssh node-a sudo iptables-save | kube-proxy-rs diff --objects objects.yaml --live - --output json"
    )]
    Diff(DiffCmd),
    /// Map every KUBE-SVC/SVL/EXT/FW/SEP chain of a dump to its service port and endpoint.
    #[command(
        after_help = "Example:\n  kube-proxy-rs explain node-a.save\n  sudo kube-proxy-rs explain local --objects objects.yaml"
    )]
    Explain(ExplainCmd),
    /// Walk one new connection through a dump's nat and filter chains.
    #[command(
        after_help = "Example:\n  kube-proxy-rs trace node-a.save --src 10.244.1.5 --dst 10.96.0.10 --dport 53 --proto udp\n  kube-proxy-rs trace node-a.save --src 203.0.113.7 --dst 192.168.1.10 --dport 30080 --node-ip 192.168.1.10"
    )]
    Trace(TraceCmd),
    /// Apply one full sync for these objects to this host (jump rules, then
    /// iptables-restore with stale-chain deletion), then exit.
    #[command(
        after_help = "Example:\n  sudo kube-proxy-rs apply --config kube-proxy-config.yaml --objects cluster.yaml\n  sudo kube-proxy-rs apply --objects cluster.yaml --ip-family IPv6 --iptables nft"
    )]
    Apply(ApplyArgs),
    /// Remove kube-proxy's rules and chains from both IP families (as `kube-proxy --cleanup`).
    #[command(
        after_help = "Example:\n  sudo kube-proxy-rs cleanup\n  sudo kube-proxy-rs cleanup --iptables legacy"
    )]
    Cleanup(CleanupArgs),
    /// Run the node daemon (the default when no subcommand is given).
    #[command(after_help = DAEMON_EXAMPLE)]
    Daemon(Box<DaemonArgs>),
}

/// Which iptables binaries to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IptablesArg {
    /// Detect like kube-proxy's image: kubelet's hint chains, else the backend holding
    /// more rules; legacy on a tie (e.g. an empty namespace).
    Auto,
    /// iptables-legacy, ip6tables-legacy and their -save/-restore.
    Legacy,
    /// iptables-nft, ip6tables-nft and their -save/-restore.
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
    /// iptables backend (legacy or nft); auto detects it as kube-proxy's image does.
    #[arg(long = "iptables", value_enum, default_value = "auto")]
    pub iptables: IptablesArg,
    /// Upstream release to behave like: 1.30 or 1.35 (default: the newest, 1.35).
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
}

#[derive(clap::Args, Debug)]
pub struct CleanupArgs {
    /// iptables backend (legacy or nft); auto detects it as kube-proxy's image does.
    #[arg(long = "iptables", value_enum, default_value = "auto")]
    pub iptables: IptablesArg,
    /// Upstream release to behave like (1.30 or 1.35, the default): 1.30 leaves
    /// KUBE-MARK-MASQ, KUBE-PROXY-FIREWALL and the canary chains behind.
    #[arg(long = "emulated-version", value_name = "MAJOR.MINOR", value_parser = EmulatedVersion::parse)]
    pub emulated_version: Option<EmulatedVersion>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FamilyArg {
    /// IPv4 (iptables*).
    #[value(name = "IPv4", alias = "ipv4", alias = "4")]
    IPv4,
    /// IPv6 (ip6tables*).
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
    /// Human-readable text.
    Text,
    /// One JSON document.
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
    /// IP family of the rules to compare.
    #[arg(long = "ip-family", value_enum, default_value = "IPv4")]
    pub ip_family: FamilyArg,
    /// Output format.
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
    /// Source address of the new connection.
    #[arg(long)]
    pub src: std::net::IpAddr,
    /// Destination address of the new connection.
    #[arg(long)]
    pub dst: std::net::IpAddr,
    /// Destination port.
    #[arg(long)]
    pub dport: u16,
    /// Protocol.
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
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputArg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command, hidden ones included, has a help line.
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            if help.trim().is_empty() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_name() == "help" {
                continue;
            }
            if sub
                .get_about()
                .is_none_or(|a| a.to_string().trim().is_empty())
            {
                out.push(format!("{path} {} (no about)", sub.get_name()));
            }
            missing_help(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_argument_has_a_help_line() {
        let mut missing = Vec::new();
        missing_help(&Cli::command(), "kube-proxy-rs", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:?}");
    }

    #[test]
    fn the_walk_finds_an_argument_without_help() {
        let cmd = clap::Command::new("t")
            .arg(clap::Arg::new("documented").long("documented").help("x"))
            .arg(clap::Arg::new("bare").long("bare"));
        let mut missing = Vec::new();
        missing_help(&cmd, "t", &mut missing);
        assert_eq!(missing, ["t bare"]);
    }

    #[test]
    fn every_subcommand_shows_an_example() {
        let cmd = Cli::command();
        assert!(cmd
            .get_after_help()
            .is_some_and(|h| h.to_string().starts_with("Example:")));
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let after = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                after.starts_with("Example:\n  ") && after.contains("kube-proxy-rs "),
                "{} has no example: {after:?}",
                sub.get_name()
            );
        }
    }
}
