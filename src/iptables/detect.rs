//! Which iptables binaries to run and what they support (spec §5.7): legacy vs nft
//! detection as kube-proxy's image does it, and capabilities from `iptables --version`.

use super::process::{run, SHORT_DEADLINE};
use crate::model::ip::IpFamily;
use std::fmt;
use std::process::Command;

/// Which xtables backend the binaries talk to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `iptables-legacy*`: the kernel's x_tables, locked with /run/xtables.lock.
    Legacy,
    /// `iptables-nft*`: nf_tables through the xtables compatibility layer.
    Nft,
    /// Unsuffixed `iptables*` (an installation without the 1.8 `-legacy`/`-nft` names).
    Plain,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Legacy => "legacy",
            Mode::Nft => "nft",
            Mode::Plain => "plain",
        })
    }
}

/// The three binaries of one family in one mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    pub iptables: String,
    pub save: String,
    pub restore: String,
}

impl Binaries {
    pub fn new(family: IpFamily, mode: Mode) -> Binaries {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        let suffix = match mode {
            Mode::Legacy => "-legacy",
            Mode::Nft => "-nft",
            Mode::Plain => "",
        };
        Binaries {
            iptables: format!("{base}{suffix}"),
            save: format!("{base}{suffix}-save"),
            restore: format!("{base}{suffix}-restore"),
        }
    }
}

/// An iptables version `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Upstream's fallback when `--version` cannot be parsed.
pub const FALLBACK_VERSION: Version = Version(1, 4, 11);

/// The first `v<digits>(.<digits>)+` in `text` (e.g. `iptables v1.8.9 (nf_tables)`).
pub fn parse_version(text: &str) -> Option<Version> {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices('v') {
        let rest = &text[i + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num = rest[..end].trim_end_matches('.');
        let parts: Vec<&str> = num.split('.').collect();
        if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
            continue;
        }
        // `v` must start a token, not end a word like "dev1.2".
        if i > 0 && bytes[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let n = |k: usize| parts.get(k).and_then(|p| p.parse().ok()).unwrap_or(0);
        return Some(Version(n(0), n(1), n(2)));
    }
    None
}

/// What the installed binaries support.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub version: Version,
    /// Prepended to every `iptables` call.
    pub wait_flags: Vec<&'static str>,
    /// Prepended to the `iptables-restore` arguments.
    pub restore_wait_flags: Vec<&'static str>,
    /// `-j MASQUERADE --random-fully` is supported (>= 1.6.2).
    pub random_fully: bool,
}

impl Capabilities {
    /// `restore_has_version`: `iptables-restore --version` printed a parsable version
    /// (only consulted below 1.6.2, as upstream does).
    pub fn from_version(version: Version, restore_has_version: bool) -> Capabilities {
        let wait_flags: Vec<&'static str> = if version >= Version(1, 6, 1) {
            vec!["-w", "5", "-W", "100000"]
        } else if version >= Version(1, 4, 22) {
            vec!["-w", "5"]
        } else if version >= Version(1, 4, 20) {
            vec!["-w"]
        } else {
            vec![]
        };
        let restore_wait_flags: Vec<&'static str> = if version >= Version(1, 6, 2) {
            vec!["-w", "5", "-W", "100000"]
        } else if restore_has_version {
            vec!["-w"]
        } else {
            vec![]
        };
        Capabilities {
            version,
            wait_flags,
            restore_wait_flags,
            random_fully: version >= Version(1, 6, 2),
        }
    }
}

/// Binaries plus capabilities for one family: everything a backend needs to run commands.
#[derive(Clone, Debug)]
pub struct Toolset {
    pub family: IpFamily,
    pub mode: Mode,
    pub bins: Binaries,
    pub caps: Capabilities,
}

impl Toolset {
    /// Reads the version of `mode`'s binaries for `family`. Fails only when the binary
    /// cannot be run at all.
    pub fn probe(family: IpFamily, mode: Mode) -> std::io::Result<Toolset> {
        let bins = Binaries::new(family, mode);
        let out = run(
            Command::new(&bins.iptables).arg("--version"),
            SHORT_DEADLINE,
            None,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).unwrap_or(FALLBACK_VERSION);
        let restore_has_version = version < Version(1, 6, 2)
            && run(
                Command::new(&bins.restore).arg("--version"),
                SHORT_DEADLINE,
                None,
            )
            .map(|o| parse_version(&String::from_utf8_lossy(&o.stdout)).is_some())
            .unwrap_or(false);
        Ok(Toolset {
            family,
            mode,
            bins,
            caps: Capabilities::from_version(version, restore_has_version),
        })
    }
}

/// The user's choice on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModeChoice {
    #[default]
    Auto,
    Legacy,
    Nft,
}

/// What the save output of each backend showed, for [`decide_mode`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveEvidence {
    /// kubelet's `KUBE-IPTABLES-HINT` / `KUBE-KUBELET-CANARY` chain is present.
    pub hint: bool,
    /// Number of rule lines (`-A ...`).
    pub rules: usize,
}

impl SaveEvidence {
    pub fn add_save_output(&mut self, text: &str) {
        for line in text.lines() {
            if line.starts_with(":KUBE-IPTABLES-HINT ") || line.starts_with(":KUBE-KUBELET-CANARY ")
            {
                self.hint = true;
            } else if line.starts_with('-') {
                self.rules += 1;
            }
        }
    }
}

/// The rule of kube-proxy's image (iptables-wrapper, Kubernetes 1.17+ variant): kubelet's
/// hint chain in nft, else in legacy; else whichever backend holds more rules, ties
/// (including an empty host or namespace) going to legacy.
pub fn decide_mode(legacy: SaveEvidence, nft: SaveEvidence) -> Mode {
    if nft.hint {
        Mode::Nft
    } else if legacy.hint {
        Mode::Legacy
    } else if nft.rules > legacy.rules {
        Mode::Nft
    } else {
        Mode::Legacy
    }
}

fn on_path(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path).any(|d| {
        let p = d.join(name);
        std::fs::metadata(&p)
            .map(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
            .unwrap_or(false)
    })
}

fn save_text(bin: &str, args: &[&str]) -> String {
    run(Command::new(bin).args(args), SHORT_DEADLINE, None)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Picks the mode for this host. A forced choice is taken as is; `Auto` inspects both
/// backends (both families) when both are installed.
pub fn detect_mode(choice: ModeChoice) -> Mode {
    match choice {
        ModeChoice::Legacy => return Mode::Legacy,
        ModeChoice::Nft => return Mode::Nft,
        ModeChoice::Auto => {}
    }
    let has_legacy = on_path("iptables-legacy-save");
    let has_nft = on_path("iptables-nft-save");
    match (has_legacy, has_nft) {
        (false, false) => return Mode::Plain,
        (true, false) => return Mode::Legacy,
        (false, true) => return Mode::Nft,
        (true, true) => {}
    }
    let mut nft = SaveEvidence::default();
    let mut legacy = SaveEvidence::default();
    // Whole saves: `iptables-legacy-save -t <table>` would load that table into the kernel.
    for bin in ["iptables-nft-save", "ip6tables-nft-save"] {
        nft.add_save_output(&save_text(bin, &[]));
    }
    for bin in ["iptables-legacy-save", "ip6tables-legacy-save"] {
        legacy.add_save_output(&save_text(bin, &[]));
    }
    let mode = decide_mode(legacy, nft);
    tracing::info!(?legacy, ?nft, %mode, "detected iptables mode");
    mode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_like_upstream() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)\n"),
            Some(Version(1, 8, 9))
        );
        assert_eq!(
            parse_version("ip6tables-restore v1.6.1"),
            Some(Version(1, 6, 1))
        );
        assert_eq!(parse_version("iptables v1.8"), Some(Version(1, 8, 0)));
        assert_eq!(parse_version("unknown option"), None);
        assert_eq!(parse_version("dev1.2 nothing"), None);
    }

    #[test]
    fn wait_flags_follow_the_version_thresholds() {
        let c = Capabilities::from_version(Version(1, 6, 1), true);
        assert_eq!(c.wait_flags, ["-w", "5", "-W", "100000"]);
        assert_eq!(c.restore_wait_flags, ["-w"]);
        assert!(!c.random_fully);
        let c = Capabilities::from_version(Version(1, 6, 2), false);
        assert_eq!(c.restore_wait_flags, ["-w", "5", "-W", "100000"]);
        assert!(c.random_fully);
        let c = Capabilities::from_version(Version(1, 4, 21), false);
        assert_eq!(c.wait_flags, ["-w"]);
        assert!(c.restore_wait_flags.is_empty());
        let c = Capabilities::from_version(Version(1, 4, 22), false);
        assert_eq!(c.wait_flags, ["-w", "5"]);
        assert!(Capabilities::from_version(FALLBACK_VERSION, false)
            .wait_flags
            .is_empty());
    }

    #[test]
    fn mode_decision() {
        let e = |hint, rules| SaveEvidence { hint, rules };
        assert_eq!(decide_mode(e(false, 0), e(false, 0)), Mode::Legacy);
        assert_eq!(decide_mode(e(false, 3), e(false, 4)), Mode::Nft);
        assert_eq!(decide_mode(e(false, 4), e(false, 4)), Mode::Legacy);
        assert_eq!(decide_mode(e(true, 0), e(false, 50)), Mode::Legacy);
        assert_eq!(decide_mode(e(true, 90), e(true, 0)), Mode::Nft);
        let mut s = SaveEvidence::default();
        s.add_save_output(
            "# Generated\n*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n-A INPUT -j DROP\nCOMMIT\n",
        );
        assert_eq!(s, e(true, 2));
    }

    #[test]
    fn binary_names() {
        let b = Binaries::new(IpFamily::V6, Mode::Nft);
        assert_eq!(b.iptables, "ip6tables-nft");
        assert_eq!(b.save, "ip6tables-nft-save");
        assert_eq!(b.restore, "ip6tables-nft-restore");
        assert_eq!(
            Binaries::new(IpFamily::V4, Mode::Plain).restore,
            "iptables-restore"
        );
    }
}
