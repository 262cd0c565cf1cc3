//! Shell prompts in pasted dumps: the command after one (`root@node:~# iptables -t nat -S`,
//! `➜  ~ sudo iptables-save`, `❯ kubectl exec ...`), a bare prompt with no command, and the
//! table an `iptables -S` command lists. Only the first few words of a line are looked at.

/// Words that start a command after a prompt (`#` alone also starts save comments).
const COMMANDS: &[&str] = &[
    "sudo",
    "iptables",
    "ip6tables",
    "nft",
    "kubectl",
    "cat",
    "grep",
    "egrep",
    "ssh",
    "docker",
    "crictl",
    "less",
    "head",
    "tail",
    "sort",
    "kube-proxy",
    "kube-proxy-rs",
    "sh",
    "bash",
    "nsenter",
];

pub(super) fn is_command(rest: &str) -> bool {
    let w = rest.split_whitespace().next().unwrap_or("");
    COMMANDS.contains(&w) || w.starts_with("iptables") || w.starts_with("ip6tables")
}

/// Prompt characters that end a shell prompt word (bash, zsh, sh, PowerShell, cmd).
fn prompt_end(w: &str) -> bool {
    w.ends_with(['#', '$', '%', '>'])
}

/// oh-my-zsh's `➜`, starship's and pure's `❯`, and `λ`: a prompt of its own.
const ARROWS: &[&str] = &["➜", "❯", "λ"];

/// A one-word prompt with nothing after it: `$`, `root@node:~#`, `bash-5.1$`, `C:\>`.
fn bare_prompt_word(w: &str) -> bool {
    prompt_end(w)
        && (w.len() == 1
            || w.contains('@')
            || w.contains(":\\")
            || ["sh-", "bash-", "zsh-"].iter().any(|p| w.starts_with(p)))
}

/// The command after an arrow prompt: `➜  ~ cmd`, `➜  kube git:(main) ✗ cmd`, `❯ cmd`.
fn arrow_command(line: &str) -> Option<&str> {
    let arrow = ARROWS.iter().find(|a| line.starts_with(*a))?;
    let mut rest = line[arrow.len()..].trim_start();
    if rest.is_empty() {
        return Some(rest);
    }
    if *arrow == "➜" && !is_command(rest) {
        // The directory's name, then the git branch and its dirty mark when in a repository.
        let mut skip = |pred: &dyn Fn(&str) -> bool| {
            let w = rest.split_whitespace().next().unwrap_or("");
            if !w.is_empty() && pred(w) {
                rest = rest[w.len()..].trim_start();
            }
        };
        skip(&|_| true);
        skip(&|w| w.starts_with("git:(") || w.starts_with("hg:("));
        skip(&|w| w == "✗" || w == "✔");
    }
    Some(rest)
}

/// The command after a shell prompt: `root@node:~# cmd`, `bash-5.1$ cmd`, `sh-4.2# cmd`,
/// zsh's `user@host ~ % cmd`, PowerShell's `PS C:\Users\me> cmd`, `C:\> cmd`, the arrow
/// prompts; `Some("")` for a bare prompt.
pub(super) fn prompt_command(line: &str) -> Option<&str> {
    if let Some(cmd) = arrow_command(line) {
        return Some(cmd);
    }
    // The prompt is in the first few words: look no further (a rule line can be 1 MB).
    let mut words = Vec::with_capacity(4);
    let mut at = 0;
    for _ in 0..4 {
        let r = &line[at..];
        let start = at + (r.len() - r.trim_start().len());
        if start >= line.len() {
            break;
        }
        let end = line[start..]
            .find(char::is_whitespace)
            .map_or(line.len(), |e| start + e);
        words.push((start, end));
        at = end;
    }
    let word = |i: usize| &line[words[i].0..words[i].1];
    let after = |i: usize| line[words[i].1..].trim_start();
    words.first()?;
    let first = word(0);
    // PowerShell: `PS <path>> cmd` (the path may hold spaces), or the bare `PS <path>>`.
    if first == "PS" {
        let end = line
            .find("> ")
            .or_else(|| line.ends_with('>').then(|| line.len() - 1));
        if let Some(p) = end {
            // "PS" is two ASCII bytes; what follows may be any space (U+2003, U+3000).
            let path = line[2..p].trim_start();
            if path.contains([':', '\\', '/', '~']) {
                return Some(line[p + 1..].trim_start());
            }
        }
    }
    if words.len() < 2 {
        return bare_prompt_word(first).then_some("");
    }
    // One word ending the prompt: `root@n:~#`, `bash-5.1$`, `host%`, `C:\>`.
    if first.len() > 1 && prompt_end(first) && (first.contains('@') || is_command(after(0))) {
        return Some(after(0));
    }
    // `user@host ~ % cmd`, `user@host ~ $ cmd`, `host ~ # cmd`: a lone prompt character.
    for i in 1..words.len() {
        let w = word(i);
        if w.len() == 1 && prompt_end(w) && (first.contains('@') || is_command(after(i))) {
            return Some(after(i));
        }
    }
    None
}

/// The table an `iptables [-t T] -S` command lists (filter when `-t` is not given), also
/// inside `sh -c "..."` and with `-tnat` / `--table=nat`.
pub(super) fn prompt_table(cmd: &str) -> Option<String> {
    let words: Vec<&str> = cmd
        .split_whitespace()
        .take(64)
        .map(|w| w.trim_matches(['"', '\'']))
        .collect();
    let at = words.iter().position(|w| {
        *w == "iptables"
            || *w == "ip6tables"
            || w.starts_with("iptables-") && !w.contains("save")
            || w.starts_with("ip6tables-") && !w.contains("save")
    })?;
    // This command's words: up to a pipe or the end of the command (`-S;`, `&&`).
    let mut args = Vec::new();
    for w in &words[at + 1..] {
        if matches!(*w, "|" | "||" | "&&" | ";") {
            break;
        }
        match w.strip_suffix(';') {
            Some(w) => {
                args.push(w);
                break;
            }
            None => args.push(w),
        }
    }
    if !args.iter().any(|w| *w == "-S" || *w == "--list-rules") {
        return None;
    }
    let mut table = None;
    for (i, w) in args.iter().enumerate() {
        let t = if *w == "-t" || *w == "--table" {
            args.get(i + 1).copied()
        } else if let Some(t) = w.strip_prefix("--table=") {
            Some(t)
        } else {
            w.strip_prefix("-t")
                .filter(|t| !t.is_empty() && !t.starts_with('-'))
        };
        if t.is_some() {
            table = t;
            break;
        }
    }
    Some(table.unwrap_or("filter").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_and_their_commands() {
        for (line, cmd) in [
            ("➜  ~ sudo iptables-save", Some("sudo iptables-save")),
            ("➜  kube git:(main) ✗ iptables -S", Some("iptables -S")),
            ("➜ iptables-save", Some("iptables-save")),
            ("❯ kubectl get pods", Some("kubectl get pods")),
            ("❯", Some("")),
            ("λ iptables-save", Some("iptables-save")),
            ("➜  ~", Some("")),
            ("root@node-1:~#", Some("")),
            ("ops@laptop:~$", Some("")),
            ("bash-5.1$", Some("")),
            ("$", Some("")),
            ("PS C:\\Users\\ops>", Some("")),
            ("PS C:\\Users\\ops> iptables-save", Some("iptables-save")),
            ("100%", None),
            ("Thanks!", None),
            ("see above >", None),
        ] {
            assert_eq!(prompt_command(line), cmd, "{line:?}");
        }
    }

    #[test]
    fn tables_of_s_commands() {
        for (cmd, t) in [
            ("sudo iptables -S KUBE-FORWARD", Some("filter")),
            ("iptables -t nat -S | grep KUBE", Some("nat")),
            ("iptables-save -t nat", None),
            ("sh -c \"iptables -t nat -S\"", Some("nat")),
            ("bash -c 'iptables -S -t mangle'", Some("mangle")),
            ("iptables -tnat -S", Some("nat")),
            ("iptables --table=raw -S", Some("raw")),
            ("nsenter -t 1 -n -- iptables -S", Some("filter")),
            ("iptables-legacy -t nat -S", Some("nat")),
            ("iptables-nft -t filter -S", Some("filter")),
            ("iptables -t nat -S; iptables -t filter -S", Some("nat")),
            ("for c in A B; do iptables -t nat -S $c; done", Some("nat")),
        ] {
            assert_eq!(prompt_table(cmd).as_deref(), t, "{cmd:?}");
        }
    }
}
