//! Network partitions between groups of loopback addresses, with iptables DROP rules on
//! the OUTPUT chain (every loopback packet passes it): packets vanish, connections hang
//! and retransmit, as across a cut inter-region link; other addresses are untouched.
//!
//! [`Cut::lossy`] drops only a random share of the packets (iptables' `statistic`
//! match): TCP retransmits and slows down as on a lossy long-haul link, UDP gossip loses
//! datagrams.
//!
//! Needs root and `iptables` (Debian package iptables); [`Cut::available`] says whether
//! this machine can. Dropping the value heals the link, so a failing test never leaves a
//! cut behind. When regions live in network namespaces ([`super::netns`]) the same
//! rules are installed inside a namespace ([`Cut::in_namespaces`]).

use std::process::Command;

use crate::error::ChaosError;

/// An active cut between two address groups, both directions.
#[derive(Debug)]
pub struct Cut {
    /// The comment on every rule of this cut: finds their counters among other runs' rules
    /// (tests in parallel share the harness's OUTPUT chain).
    tag: String,
    /// Each rule's network namespace (`None`: this one) and match part (everything
    /// between `OUTPUT` and `-j DROP`, the comment included).
    rules: Vec<(Option<String>, Vec<String>)>,
}

/// Numbers the cuts of this process, for their tags.
static CUTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Runs a system tool and says what failed with its own words when it does.
pub(crate) fn run_tool(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| ChaosError::Io {
            what: format!("run {program} {}", args.join(" ")),
            source: e,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ChaosError::Io {
            what: format!("{program} {}", args.join(" ")),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        })
    }
}

/// `iptables` in network namespace `netns` (`None`: the harness's own); its output.
pub(crate) fn iptables_in(netns: Option<&str>, args: &[&str]) -> Result<String, ChaosError> {
    match netns {
        None => run_tool("iptables", args),
        Some(ns) => {
            let mut all = vec!["netns", "exec", ns, "iptables"];
            all.extend_from_slice(args);
            run_tool("ip", &all)
        }
    }
}

/// The `/24` an address is in, as iptables and ip take it (`a.b.c.0/24`): every region of
/// a chaos run is one.
pub(crate) fn slash24(address: std::net::Ipv4Addr) -> String {
    let [a, b, c, _] = address.octets();
    format!("{a}.{b}.{c}.0/24")
}

/// The match that drops `percent`% of the packets (of `protocol` only, when given).
pub(crate) fn loss_match(percent: u8, protocol: Option<&str>) -> Vec<String> {
    let probability = format!("{:.2}", f64::from(percent.min(100)) / 100.0);
    let mut extra: Vec<String> = Vec::new();
    if let Some(p) = protocol {
        extra.extend(["-p".to_string(), p.to_string()]);
    }
    extra.extend(
        [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            &probability,
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    extra
}

/// Whether `program args…` succeeds here, and if not, why in words a user can act on:
/// `refused` and the tool's own message, or the Debian `package` to install.
pub(crate) fn tool_works(
    program: &str,
    args: &[&str],
    refused: &str,
    package: &str,
) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{refused}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "{program} is not installed (apt-get install {package}): {e}"
        )),
    }
}

impl Cut {
    /// Whether this machine can cut loopback links, and if not, why.
    pub fn available() -> Result<(), String> {
        tool_works(
            "iptables",
            &["-L", "OUTPUT", "-n"],
            "iptables cannot change rules here (needs root)",
            "iptables",
        )
    }

    /// Drops every packet between an address of `a` and one of `b` (each `ADDR` or
    /// `ADDR/PREFIX`, like `127.0.1.0/24`), both ways, until healed.
    pub fn between(a: &[&str], b: &[&str]) -> Result<Cut, ChaosError> {
        Self::install(a, b, &[])
    }

    /// Drops `percent`% of the packets between `a` and `b` (of `protocol` only, e.g.
    /// `udp` for gossip, when given), both ways, until healed.
    pub fn lossy(
        a: &[&str],
        b: &[&str],
        percent: u8,
        protocol: Option<&str>,
    ) -> Result<Cut, ChaosError> {
        Self::install(a, b, &loss_match(percent, protocol))
    }

    /// Installs `-j DROP` rules on the OUTPUT chain of network namespaces, each given as
    /// (namespace, match), until healed: a namespace's OUTPUT sees what its own nodes send.
    pub fn in_namespaces(rules: Vec<(String, Vec<String>)>) -> Result<Cut, ChaosError> {
        let mut cut = Cut::new();
        for (ns, rule) in rules {
            cut.add(Some(ns), rule)?;
        }
        Ok(cut)
    }

    fn new() -> Cut {
        let n = CUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Cut {
            tag: format!("chaos-cut-{}-{n}", std::process::id()),
            rules: Vec::new(),
        }
    }

    /// Installs one rule; kept for removal even if a later one fails.
    fn add(&mut self, netns: Option<String>, mut rule: Vec<String>) -> Result<(), ChaosError> {
        rule.extend(["-m", "comment", "--comment", &self.tag].map(String::from));
        let mut args = vec!["-I", "OUTPUT"];
        args.extend(rule.iter().map(String::as_str));
        args.extend(["-j", "DROP"]);
        iptables_in(netns.as_deref(), &args)?;
        self.rules.push((netns, rule));
        Ok(())
    }

    fn install(a: &[&str], b: &[&str], extra: &[String]) -> Result<Cut, ChaosError> {
        let mut cut = Cut::new();
        for x in a {
            for y in b {
                for (src, dst) in [(x, y), (y, x)] {
                    let mut rule = vec![
                        "-s".to_string(),
                        src.to_string(),
                        "-d".to_string(),
                        dst.to_string(),
                    ];
                    rule.extend(extra.iter().cloned());
                    cut.add(None, rule)?;
                }
            }
        }
        Ok(cut)
    }

    /// Packets this cut's rules have dropped so far (the evidence that it met traffic),
    /// from iptables' own counters.
    pub fn dropped(&self) -> u64 {
        let mut namespaces: Vec<Option<&str>> =
            self.rules.iter().map(|(ns, _)| ns.as_deref()).collect();
        namespaces.dedup();
        let marker = format!("--comment {} -c ", self.tag);
        namespaces
            .into_iter()
            .filter_map(|ns| {
                let listing = match ns {
                    None => run_tool("iptables", &["-S", "OUTPUT", "-v"]),
                    Some(ns) => run_tool(
                        "ip",
                        &["netns", "exec", ns, "iptables", "-S", "OUTPUT", "-v"],
                    ),
                };
                listing.ok()
            })
            .flat_map(|listing| {
                listing
                    .lines()
                    .filter_map(|line| {
                        let counters = &line[line.find(&marker)? + marker.len()..];
                        counters.split_whitespace().next()?.parse::<u64>().ok()
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Restores the link now (also done on drop).
    pub fn heal(mut self) -> Result<(), ChaosError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), ChaosError> {
        let mut first_error = None;
        for (ns, rule) in std::mem::take(&mut self.rules) {
            let mut args = vec!["-D", "OUTPUT"];
            args.extend(rule.iter().map(String::as_str));
            args.extend(["-j", "DROP"]);
            if let Err(err) = iptables_in(ns.as_deref(), &args) {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = self.remove();
    }
}
