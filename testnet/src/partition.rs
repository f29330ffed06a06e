//! Network partitions between the nodes of a testnet, made by the kernel with nftables.
//!
//! Every node of a testnet has its own loopback address, and its outgoing TCP and QUIC
//! connections leave from that address. A partition is one nftables table per testnet
//! (`inet shoal_tn_<id>`) whose chain on the `output` hook drops every packet whose source is
//! a node of one group and whose destination is a node of another group, in both directions.
//! Loopback packets pass `output` and then `input`, so `output` alone cuts them. Addresses that
//! belong to no group (the test process's 127.0.0.1, nodes left out of every group) pass.
//!
//! Nothing in shoal's own code is involved: the nodes see what a real network split shows
//! them — silence, timeouts — and no test hook can hide a bug in that path.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The nft binary (root's PATH may not hold /usr/sbin when run from a test harness).
fn nft_path() -> &'static str {
    if std::path::Path::new("/usr/sbin/nft").exists() {
        "/usr/sbin/nft"
    } else {
        "nft"
    }
}

/// The name of the table of testnet `id` (an id of hex digits).
pub fn table_name(id: &str) -> String {
    format!("shoal_tn_{id}")
}

/// Where a partition cuts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Nodes on loopback addresses: the `output` hook of the `inet` family.
    Loopback,
    /// Test hosts on a LAN bridge ([`crate::hosts`]): the `forward` hook of the `bridge`
    /// family, which sees every frame the bridge passes from one host to another (and none
    /// between the machine and a host, so the observer is never cut off).
    Bridge,
}

impl Cut {
    /// `(family, table, chain header)`.
    fn parts(self, id: &str) -> (&'static str, String, &'static str) {
        match self {
            Cut::Loopback => (
                "inet",
                table_name(id),
                "chain output {\n    type filter hook output priority 0; policy accept;\n",
            ),
            Cut::Bridge => (
                "bridge",
                format!("shoal_tnb_{id}"),
                "chain forward {\n    type filter hook forward priority -200; policy accept;\n",
            ),
        }
    }
}

/// The nft script that replaces testnet `id`'s table with one that drops traffic between
/// `groups` of addresses (a packet from a member of one group to a member of another). The
/// `add`/`delete` pair first removes an older table, so that a new partition replaces the
/// previous one in a single atomic transaction.
pub fn partition_script(id: &str, groups: &[Vec<Ipv4Addr>]) -> String {
    partition_script_at(Cut::Loopback, id, groups)
}

/// [`partition_script`] for the place `cut`.
pub fn partition_script_at(cut: Cut, id: &str, groups: &[Vec<Ipv4Addr>]) -> String {
    let (family, table, chain) = cut.parts(id);
    let mut s = format!(
        "add table {family} {table}\ndelete table {family} {table}\ntable {family} {table} {{\n  {chain}"
    );
    for (i, from) in groups.iter().enumerate() {
        for (j, to) in groups.iter().enumerate() {
            if i == j || from.is_empty() || to.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "    ip saddr {} ip daddr {} drop\n",
                addr_set(from),
                addr_set(to)
            ));
        }
    }
    s.push_str("  }\n}\n");
    s
}

/// The nft script that removes testnet `id`'s table, whether or not it exists.
pub fn heal_script(id: &str) -> String {
    heal_script_at(Cut::Loopback, id)
}

fn heal_script_at(cut: Cut, id: &str) -> String {
    let (family, table, _) = cut.parts(id);
    format!("add table {family} {table}\ndelete table {family} {table}\n")
}

fn addr_set(addrs: &[Ipv4Addr]) -> String {
    let list: Vec<String> = addrs.iter().map(Ipv4Addr::to_string).collect();
    format!("{{ {} }}", list.join(", "))
}

/// Checks that groups of addresses make a partition: at least two groups, none empty, no
/// address in two groups, every address on loopback (the testnet's only network).
pub fn check_groups(groups: &[Vec<Ipv4Addr>]) -> anyhow::Result<()> {
    check_shape(groups)?;
    if let Some(a) = groups.iter().flatten().find(|a| !a.is_loopback()) {
        bail!("{a} is not a loopback address: testnets live on 127.0.0.0/8 only");
    }
    Ok(())
}

/// At least two groups, none empty, no address in two groups.
fn check_shape(groups: &[Vec<Ipv4Addr>]) -> anyhow::Result<()> {
    if groups.len() < 2 {
        bail!(
            "a partition needs at least two groups, got {}",
            groups.len()
        );
    }
    let mut seen: Vec<Ipv4Addr> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        if g.is_empty() {
            bail!("group {} of the partition is empty", i + 1);
        }
        for a in g {
            if seen.contains(a) {
                bail!("{a} is in two groups of the partition");
            }
            seen.push(*a);
        }
    }
    Ok(())
}

/// Installs (or replaces) the partition of testnet `id`'s hosts between `groups` of their LAN
/// addresses, at the bridge.
pub fn apply_bridge(id: &str, groups: &[Vec<Ipv4Addr>]) -> anyhow::Result<()> {
    check_shape(groups)?;
    for a in groups.iter().flatten() {
        if a.octets()[..2] != crate::hosts::LAN_PREFIX {
            bail!("{a} is not a test host's address (10.213.0.0/16)");
        }
    }
    run_nft(&partition_script_at(Cut::Bridge, id, groups)).context("cannot install the partition")
}

/// Removes the partition of testnet `id`'s hosts; nothing to remove is no error.
pub fn heal_bridge(id: &str) -> anyhow::Result<()> {
    run_nft(&heal_script_at(Cut::Bridge, id)).context("cannot remove the partition")
}

/// Installs (or replaces) testnet `id`'s partition between `groups` of addresses.
pub fn apply(id: &str, groups: &[Vec<Ipv4Addr>]) -> anyhow::Result<()> {
    check_groups(groups)?;
    run_nft(&partition_script(id, groups)).context("cannot install the partition")
}

/// Removes testnet `id`'s partition (its whole table); nothing to remove is no error.
pub fn heal(id: &str) -> anyhow::Result<()> {
    run_nft(&heal_script(id)).context("cannot remove the partition")
}

/// Whether testnet `id`'s table exists now.
pub fn is_installed(id: &str) -> anyhow::Result<bool> {
    let out = Command::new(nft_path())
        .args(["list", "tables", "inet"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run nft")?;
    if !out.status.success() {
        bail!(
            "nft list tables failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let want = format!("table inet {}", table_name(id));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == want))
}

/// Whether partitions can be made here: `Err` says why not (no nft, not root).
pub fn available() -> Result<(), String> {
    match Command::new(nft_path())
        .args(["list", "tables"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Err(e) => Err(format!("nft cannot run ({e}); install nftables")),
        Ok(o) if !o.status.success() => Err(format!(
            "nft cannot list the ruleset (partitions need root or CAP_NET_ADMIN): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

pub(crate) fn run_nft(script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(nft_path())
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft (is nftables installed?)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft -f failed ({}): {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn two_groups_drop_both_directions() {
        let s = partition_script(
            "0a1b2c3d",
            &[
                vec![ip("127.9.8.1"), ip("127.9.8.2")],
                vec![ip("127.9.8.3")],
            ],
        );
        assert_eq!(
            s,
            "add table inet shoal_tn_0a1b2c3d\n\
             delete table inet shoal_tn_0a1b2c3d\n\
             table inet shoal_tn_0a1b2c3d {\n  \
             chain output {\n    \
             type filter hook output priority 0; policy accept;\n    \
             ip saddr { 127.9.8.1, 127.9.8.2 } ip daddr { 127.9.8.3 } drop\n    \
             ip saddr { 127.9.8.3 } ip daddr { 127.9.8.1, 127.9.8.2 } drop\n  \
             }\n}\n"
        );
    }

    #[test]
    fn three_groups_cut_every_ordered_pair() {
        let s = partition_script(
            "ff",
            &[
                vec![ip("127.1.1.1")],
                vec![ip("127.1.1.2")],
                vec![ip("127.1.1.3")],
            ],
        );
        let rules: Vec<&str> = s.lines().filter(|l| l.ends_with(" drop")).collect();
        assert_eq!(rules.len(), 6, "{s}");
        for (a, b) in [(1, 2), (1, 3), (2, 1), (2, 3), (3, 1), (3, 2)] {
            let want = format!("ip saddr {{ 127.1.1.{a} }} ip daddr {{ 127.1.1.{b} }} drop");
            assert!(rules.iter().any(|r| r.trim() == want), "{want} in\n{s}");
        }
        // Never traffic within a group, never the test client's address.
        assert!(!s.contains("127.0.0.1"));
    }

    #[test]
    fn heal_removes_the_whole_table_even_when_absent() {
        assert_eq!(
            heal_script("12345678"),
            "add table inet shoal_tn_12345678\ndelete table inet shoal_tn_12345678\n"
        );
    }

    #[test]
    fn groups_are_checked() {
        let one = vec![vec![ip("127.2.2.1")]];
        assert!(
            check_groups(&one)
                .unwrap_err()
                .to_string()
                .contains("at least two")
        );
        let twice = vec![vec![ip("127.2.2.1")], vec![ip("127.2.2.1")]];
        assert!(
            check_groups(&twice)
                .unwrap_err()
                .to_string()
                .contains("in two groups")
        );
        let empty = vec![vec![ip("127.2.2.1")], vec![]];
        assert!(
            check_groups(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let far = vec![vec![ip("127.2.2.1")], vec![ip("10.0.0.1")]];
        assert!(
            check_groups(&far)
                .unwrap_err()
                .to_string()
                .contains("not a loopback")
        );
        let ok = vec![
            vec![ip("127.2.2.1"), ip("127.2.2.2")],
            vec![ip("127.2.2.3")],
        ];
        check_groups(&ok).unwrap();
    }
}
