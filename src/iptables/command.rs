//! [`Backend`] on the iptables command-line tools.
//!
//! The jump rules go through the `iptables` CLI directly rather than the `iptables` crate:
//! the crate hard-codes the binary names `iptables`/`ip6tables` (so it cannot drive
//! `iptables-legacy` or `iptables-nft` explicitly, which mode detection needs) and passes a
//! bare `-w` instead of upstream's `-w 5 -W 100000`.

use super::detect::Toolset;
use super::process::{self, Finished, RESTORE_DEADLINE, SHORT_DEADLINE};
use super::{Backend, BackendError};
use crate::model::ip::IpFamily;
use crate::rules::jumps::JUMP_RULES;
use crate::rules::names::ChainKey;
use crate::rules::table::Out;
use std::collections::HashSet;
use std::process::Command;

/// Runs the iptables tools of one family.
pub struct CliBackend {
    tools: Toolset,
}

/// A finished command: exit code (`None` when killed by a signal) and its combined output.
pub struct Ran {
    pub code: Option<i32>,
    pub output: String,
}

impl Ran {
    fn from(out: &Finished) -> Ran {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        if out.killed {
            output.push_str("(killed: deadline passed or shutting down)");
        }
        Ran {
            code: out.status.code(),
            output,
        }
    }

    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Output of a failed call that means "that chain/rule is not there" (upstream's list).
pub fn is_not_found(output: &str) -> bool {
    [
        "No chain/target/match by that name",
        "No such file or directory",
        "does a matching rule exist",
        "does not exist",
    ]
    .iter()
    .any(|s| output.contains(s))
}

fn describe(bin: &str, args: &[&str]) -> String {
    let mut s = bin.to_string();
    for a in args {
        if a.contains(' ') {
            s.push_str(&format!(" \"{a}\""));
        } else {
            s.push(' ');
            s.push_str(a);
        }
    }
    s
}

impl CliBackend {
    pub fn new(tools: Toolset) -> CliBackend {
        CliBackend { tools }
    }

    /// The backend this host uses for `family` (detected unless forced by `choice`).
    pub fn for_host(family: IpFamily, choice: super::ModeChoice) -> std::io::Result<CliBackend> {
        let mode = super::detect::detect_mode(choice);
        Ok(CliBackend::new(Toolset::probe(family, mode)?))
    }

    pub fn tools(&self) -> &Toolset {
        &self.tools
    }

    /// `iptables <wait flags> <args>`.
    pub fn iptables(&self, args: &[&str]) -> Result<Ran, BackendError> {
        let mut full: Vec<&str> = self.tools.caps.wait_flags.clone();
        full.extend_from_slice(args);
        let out = process::run(
            Command::new(&self.tools.bins.iptables).args(&full),
            SHORT_DEADLINE,
            None,
        )
        .map_err(|e| BackendError::Command {
            command: describe(&self.tools.bins.iptables, &full),
            message: e.to_string(),
        })?;
        Ok(Ran::from(&out))
    }

    fn iptables_err(&self, args: &[&str], ran: &Ran) -> BackendError {
        let mut full: Vec<&str> = self.tools.caps.wait_flags.clone();
        full.extend_from_slice(args);
        BackendError::Command {
            command: describe(&self.tools.bins.iptables, &full),
            message: format!(
                "exit status {}: {}",
                ran.code.map_or("signal".into(), |c| c.to_string()),
                ran.output.trim()
            ),
        }
    }

    /// `iptables-save -t <table>` (no wait flag, as upstream).
    pub fn save_table(&self, table: &str) -> Result<String, BackendError> {
        self.save_table_with(&["-t", table])
    }

    /// `iptables-save <args>`.
    pub fn save_table_with(&self, args: &[&str]) -> Result<String, BackendError> {
        let out = process::run(
            Command::new(&self.tools.bins.save).args(args),
            SHORT_DEADLINE,
            None,
        )
        .map_err(|e| BackendError::Command {
            command: describe(&self.tools.bins.save, args),
            message: e.to_string(),
        })?;
        if !out.status.success() || out.killed {
            return Err(BackendError::Command {
                command: describe(&self.tools.bins.save, args),
                message: if out.killed {
                    "killed: deadline passed or shutting down".to_string()
                } else {
                    String::from_utf8_lossy(&out.stderr).trim().to_string()
                },
            });
        }
        String::from_utf8(out.stdout).map_err(|e| BackendError::Command {
            command: describe(&self.tools.bins.save, args),
            message: format!("output is not UTF-8: {e}"),
        })
    }

    /// `iptables-restore <wait flags> <extra> --noflush --counters` with `payload` on stdin.
    pub fn restore_with(&self, extra: &[&str], payload: &str) -> Result<(), BackendError> {
        self.restore_streamed(extra, &mut |out: &mut dyn Out| out.push_str(payload))
    }

    /// Like [`CliBackend::restore_with`], the payload written by `write` straight into the
    /// pipe; `write` runs again only to quote the lines around a failing one.
    pub fn restore_streamed(
        &self,
        extra: &[&str],
        write: &mut dyn FnMut(&mut dyn Out),
    ) -> Result<(), BackendError> {
        let mut args: Vec<&str> = self.tools.caps.restore_wait_flags.clone();
        args.extend_from_slice(extra);
        args.extend(["--noflush", "--counters"]);
        let command = describe(&self.tools.bins.restore, &args);
        // The tool stops reading at the first bad line; its exit status tells the rest.
        let out = process::run(
            Command::new(&self.tools.bins.restore).args(&args),
            RESTORE_DEADLINE,
            Some(&mut *write),
        )
        .map_err(|e| BackendError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
        if let Some(e) = out.write_error {
            return Err(e.into());
        }
        let ran = Ran::from(&out);
        if out.killed {
            return Err(BackendError::Command {
                command,
                message: ran.output,
            });
        }
        if ran.ok() {
            return Ok(());
        }
        Err(restore_error(&command, &ran, write))
    }
}

/// The payload line a restore failure names: `line N failed` (commit errors) or
/// `Error occurred at line: N` (parse errors).
pub fn failed_line(output: &str) -> Option<usize> {
    let number_after = |pat: &str| {
        output.find(pat).and_then(|i| {
            let rest = output[i + pat.len()..].trim_start();
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
    };
    if let Some(i) = output.find(" failed") {
        // "...: line 12 failed"
        let head = &output[..i];
        if let Some(j) = head.rfind("line ") {
            if let Ok(n) = head[j + 5..].trim().parse() {
                return Some(n);
            }
        }
    }
    number_after("Error occurred at line:")
}

/// Lines `line-3 ..= line+3` of `payload`, numbered, the failing one marked with `>`.
pub fn context_lines(payload: &str, line: usize) -> String {
    let first = line.saturating_sub(3).max(1);
    let mut out = String::new();
    for (i, text) in payload.lines().enumerate() {
        let n = i + 1;
        if n < first {
            continue;
        }
        if n > line + 3 {
            break;
        }
        let mark = if n == line { '>' } else { ' ' };
        out.push_str(&format!("{mark}{n:>7} | {text}\n"));
    }
    out
}

fn restore_error(command: &str, ran: &Ran, write: &mut dyn FnMut(&mut dyn Out)) -> BackendError {
    let message = format!(
        "{command}: exit status {}: {}",
        ran.code.map_or("signal".into(), |c| c.to_string()),
        ran.output.trim()
    );
    match failed_line(&ran.output) {
        Some(line) => {
            let mut payload = String::new();
            write(&mut payload);
            BackendError::RestoreLine {
                line,
                message,
                context: context_lines(&payload, line),
            }
        }
        None => BackendError::Command {
            command: command.to_string(),
            message,
        },
    }
}

/// Chain names declared in `iptables-save` output.
pub fn chains_in_save(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|rest| rest.split(' ').next())
}

impl Backend for CliBackend {
    fn ensure_nfacct(&mut self) -> Option<bool> {
        Some(super::nfacct::ensure_objects())
    }

    fn family(&self) -> IpFamily {
        self.tools.family
    }

    fn ensure_jump_rules(&mut self) -> Result<(), BackendError> {
        self.ensure_missing_jump_rules(&[])
    }

    fn ensure_missing_jump_rules(&mut self, present: &[bool]) -> Result<(), BackendError> {
        for (i, j) in JUMP_RULES.iter().enumerate() {
            if present.get(i) == Some(&true) {
                continue;
            }
            let new = ["-N", j.dst_chain, "-t", j.table];
            let ran = self.iptables(&new)?;
            // Exit status 1 = the chain already exists.
            if !ran.ok() && ran.code != Some(1) {
                return Err(self.iptables_err(&new, &ran));
            }
            let rule = j.rule_args();
            let mut check = vec!["-C", j.src_chain, "-t", j.table];
            check.extend_from_slice(&rule);
            let ran = self.iptables(&check)?;
            match ran.code {
                Some(0) => continue,
                Some(1) => {}
                _ => return Err(self.iptables_err(&check, &ran)),
            }
            let mut insert = vec!["-I", j.src_chain, "-t", j.table];
            insert.extend_from_slice(&rule);
            let ran = self.iptables(&insert)?;
            if !ran.ok() {
                return Err(self.iptables_err(&insert, &ran));
            }
        }
        Ok(())
    }

    fn restore(&mut self, payload: &str) -> Result<(), BackendError> {
        self.restore_with(&[], payload)
    }

    fn test_restore(&mut self, payload: &str) -> Result<(), BackendError> {
        self.restore_with(&["--test"], payload)
    }

    fn snapshot(&mut self) -> Result<Option<String>, BackendError> {
        let mut all = String::new();
        for table in ["filter", "nat"] {
            all.push_str(&self.save_table_with(&["-c", "-t", table])?);
        }
        Ok(Some(all))
    }

    fn rollback(&mut self, snapshot: &str) -> Result<(), BackendError> {
        let mut args: Vec<&str> = self.tools.caps.restore_wait_flags.clone();
        args.push("--counters");
        let command = describe(&self.tools.bins.restore, &args);
        let mut feed = |o: &mut dyn Out| o.push_str(snapshot);
        let out = process::run(
            Command::new(&self.tools.bins.restore).args(&args),
            RESTORE_DEADLINE,
            Some(&mut feed),
        )
        .map_err(|e| BackendError::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
        let ran = Ran::from(&out);
        if ran.ok() && !out.killed {
            return Ok(());
        }
        Err(BackendError::Command {
            command,
            message: ran.output.trim().to_string(),
        })
    }

    fn restore_from(&mut self, write: &mut dyn FnMut(&mut dyn Out)) -> Result<(), BackendError> {
        self.restore_streamed(&[], write)
    }

    fn nat_chains(&mut self) -> Result<HashSet<ChainKey>, BackendError> {
        let text = self.save_table("nat")?;
        Ok(chains_in_save(&text).filter_map(ChainKey::named).collect())
    }

    fn live_tables(&mut self) -> Result<Option<String>, BackendError> {
        let mut all = self.save_table("filter")?;
        all.push_str(&self.save_table("nat")?);
        Ok(Some(all))
    }

    fn create_canary(&mut self, table: &str) -> Result<(), BackendError> {
        let args = ["-N", super::CANARY_CHAIN, "-t", table];
        let ran = self.iptables(&args)?;
        // Exit status 1 = the chain already exists.
        if !ran.ok() && ran.code != Some(1) {
            return Err(self.iptables_err(&args, &ran));
        }
        Ok(())
    }

    fn supports_random_fully(&self) -> bool {
        self.tools.caps.random_fully
    }

    fn canary_exists(&mut self, table: &str) -> Result<bool, BackendError> {
        let ran = self.iptables(&["-S", super::CANARY_CHAIN, "-t", table])?;
        // Exit status 4 (resource problem, e.g. the lock) counts as "still there", as upstream.
        Ok(ran.ok() || ran.code == Some(4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_line_from_both_backends() {
        assert_eq!(failed_line("iptables-restore: line 42 failed\n"), Some(42));
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (legacy): Couldn't load target `NOPE':No such file or directory\n\nError occurred at line: 4\nTry `iptables-restore -h'"),
            Some(4)
        );
        assert_eq!(
            failed_line("iptables-nft-restore v1.8.9 (nf_tables): Chain 'NOPE' does not exist\nError occurred at line: 5\n"),
            Some(5)
        );
        assert_eq!(
            failed_line("Another app is currently holding the xtables lock"),
            None
        );
    }

    #[test]
    fn context_is_numbered_and_clipped() {
        let payload = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let c = context_lines(payload, 2);
        assert_eq!(
            c,
            "       1 | a\n>      2 | b\n       3 | c\n       4 | d\n       5 | e\n"
        );
        let c = context_lines(payload, 9);
        assert!(c.starts_with("       6 | f\n"));
        assert!(c.ends_with(">      9 | i\n"));
    }

    #[test]
    fn save_chains() {
        let save = "# Generated\n*nat\n:PREROUTING ACCEPT [0:0]\n:KUBE-SVC-ABC - [0:0]\n-A PREROUTING -j KUBE-SVC-ABC\nCOMMIT\n";
        assert_eq!(
            chains_in_save(save).collect::<Vec<_>>(),
            ["PREROUTING", "KUBE-SVC-ABC"]
        );
    }

    #[test]
    fn not_found_messages() {
        assert!(is_not_found(
            "iptables: No chain/target/match by that name."
        ));
        assert!(is_not_found(
            "iptables: Bad rule (does a matching rule exist in that chain?)."
        ));
        assert!(!is_not_found("iptables: Permission denied"));
    }

    #[test]
    fn random_fully_follows_the_version() {
        use crate::iptables::detect::{Binaries, Capabilities, Mode, Version};
        let backend = |v: Version| {
            CliBackend::new(Toolset {
                family: IpFamily::V4,
                mode: Mode::Legacy,
                bins: Binaries::new(IpFamily::V4, Mode::Legacy),
                caps: Capabilities::from_version(v, true),
            })
        };
        assert!(!backend(Version(1, 6, 1)).supports_random_fully());
        assert!(!backend(Version(1, 4, 11)).supports_random_fully());
        assert!(backend(Version(1, 6, 2)).supports_random_fully());
        assert!(backend(Version(1, 8, 9)).supports_random_fully());
    }
}
