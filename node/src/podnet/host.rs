//! The host's side of the pod network: routes, the VXLAN device and firewall rules, made with
//! iproute2's `ip` and `bridge` and with `iptables` (the one the container engine uses).
//! Behind the [`HostNet`] trait so that the task runs against a recording fake in tests.

use std::net::{IpAddr, Ipv4Addr};

use async_trait::async_trait;

use super::plan::{
    self, ROUTE_PROTO, Route, Rule, VXLAN_DEVICE, VXLAN_ID, VXLAN_PORT, tunnel_address, vxlan_mac,
};
use super::subnet::{PodRange, Subnet24};

/// A host command that failed, with what it said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{command}` failed: {message}")]
pub struct HostError {
    pub command: String,
    pub message: String,
}

/// What the pod network needs of the host.
#[async_trait]
pub trait HostNet: Send + Sync + 'static {
    /// The gateway the host uses to reach `addr` (`None`: directly on a local network).
    async fn gateway_to(&self, addr: IpAddr) -> Result<Option<IpAddr>, HostError>;
    /// The MTU of the interface that holds `addr`, if one does.
    async fn mtu_of(&self, addr: IpAddr) -> Result<Option<u32>, HostError>;
    /// This node's routes within `range` (those marked with [`ROUTE_PROTO`]).
    async fn routes(&self, range: &PodRange) -> Result<Vec<Subnet24>, HostError>;
    /// Adds or replaces a route (and, for the overlay, its neighbour and forwarding entries).
    async fn set_route(&self, route: &Route) -> Result<(), HostError>;
    /// Removes the node's route to `subnet`.
    async fn remove_route(&self, subnet: Subnet24) -> Result<(), HostError>;
    /// Makes the VXLAN device for the node holding `index` of `range`, reached at `local`.
    async fn ensure_vxlan(
        &self,
        index: u32,
        subnet: Subnet24,
        local: Ipv4Addr,
        mtu: u32,
    ) -> Result<(), HostError>;
    /// Makes the rules present, and removes rules tagged with `prefix` but not `tag`.
    async fn ensure_rules(&self, rules: &[Rule], prefix: &str, tag: &str) -> Result<(), HostError>;
}

/// The real host, through `ip`, `bridge` and `iptables`.
#[derive(Debug, Clone, Default)]
pub struct Commands;

async fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    let command = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| HostError {
            command: command.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not installed (the pod network needs it)")
            } else {
                e.to_string()
            },
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `iptables`, waiting for the lock the engine may hold.
async fn iptables(table: &str, args: &[&str]) -> Result<String, HostError> {
    let mut all = vec!["-w", "5", "-t", table];
    all.extend_from_slice(args);
    run("iptables", &all).await
}

#[async_trait]
impl HostNet for Commands {
    async fn gateway_to(&self, addr: IpAddr) -> Result<Option<IpAddr>, HostError> {
        let a = addr.to_string();
        let out = run("ip", &["-j", "route", "get", &a]).await?;
        plan::gateway_of(&out).ok_or_else(|| HostError {
            command: format!("ip -j route get {a}"),
            message: format!("unreadable answer {out:?}"),
        })
    }

    async fn mtu_of(&self, addr: IpAddr) -> Result<Option<u32>, HostError> {
        let out = run("ip", &["-j", "addr", "show"]).await?;
        let Ok(serde_json::Value::Array(links)) = serde_json::from_str(&out) else {
            return Ok(None);
        };
        let want = addr.to_string();
        Ok(links
            .iter()
            .find(|l| {
                l.get("addr_info")
                    .and_then(|a| a.as_array())
                    .is_some_and(|a| {
                        a.iter()
                            .any(|i| i.get("local").and_then(|v| v.as_str()) == Some(&want))
                    })
            })
            .and_then(|l| l.get("mtu")?.as_u64())
            .and_then(|m| u32::try_from(m).ok()))
    }

    async fn routes(&self, range: &PodRange) -> Result<Vec<Subnet24>, HostError> {
        let proto = ROUTE_PROTO.to_string();
        let out = run("ip", &["-j", "-4", "route", "show", "proto", &proto]).await?;
        Ok(plan::own_routes(&out, range)
            .into_iter()
            .map(|(s, _, _)| s)
            .collect())
    }

    async fn set_route(&self, route: &Route) -> Result<(), HostError> {
        let proto = ROUTE_PROTO.to_string();
        match *route {
            Route::Via { subnet, peer } => {
                let (s, p) = (subnet.to_string(), peer.to_string());
                run("ip", &["route", "replace", &s, "via", &p, "proto", &proto]).await?;
            }
            Route::Overlay {
                subnet,
                index,
                peer,
            } => {
                let (s, p) = (subnet.to_string(), peer.to_string());
                let tunnel = tunnel_address(subnet).to_string();
                let mac = vxlan_mac(index);
                run(
                    "ip",
                    &[
                        "neigh",
                        "replace",
                        &tunnel,
                        "lladdr",
                        &mac,
                        "dev",
                        VXLAN_DEVICE,
                        "nud",
                        "permanent",
                    ],
                )
                .await?;
                run(
                    "bridge",
                    &[
                        "fdb",
                        "replace",
                        &mac,
                        "dev",
                        VXLAN_DEVICE,
                        "dst",
                        &p,
                        "self",
                        "permanent",
                    ],
                )
                .await?;
                run(
                    "ip",
                    &[
                        "route",
                        "replace",
                        &s,
                        "via",
                        &tunnel,
                        "dev",
                        VXLAN_DEVICE,
                        "onlink",
                        "proto",
                        &proto,
                    ],
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn remove_route(&self, subnet: Subnet24) -> Result<(), HostError> {
        let (s, proto) = (subnet.to_string(), ROUTE_PROTO.to_string());
        run("ip", &["route", "del", &s, "proto", &proto]).await?;
        Ok(())
    }

    async fn ensure_vxlan(
        &self,
        index: u32,
        subnet: Subnet24,
        local: Ipv4Addr,
        mtu: u32,
    ) -> Result<(), HostError> {
        let tunnel = format!("{}/32", tunnel_address(subnet));
        let have = run("ip", &["-j", "addr", "show", "dev", VXLAN_DEVICE]).await;
        if let Ok(out) = &have {
            // Made for this subnet and address already.
            if out.contains(&format!("\"{}\"", tunnel_address(subnet)))
                && out.contains(&vxlan_mac(index))
            {
                return Ok(());
            }
            run("ip", &["link", "del", VXLAN_DEVICE]).await?;
        }
        let (id, port, l, m) = (
            VXLAN_ID.to_string(),
            VXLAN_PORT.to_string(),
            local.to_string(),
            mtu.to_string(),
        );
        let mac = vxlan_mac(index);
        run(
            "ip",
            &[
                "link",
                "add",
                VXLAN_DEVICE,
                "address",
                &mac,
                "mtu",
                &m,
                "type",
                "vxlan",
                "id",
                &id,
                "local",
                &l,
                "dstport",
                &port,
                "nolearning",
            ],
        )
        .await?;
        run("ip", &["addr", "add", &tunnel, "dev", VXLAN_DEVICE]).await?;
        run("ip", &["link", "set", VXLAN_DEVICE, "up"]).await?;
        Ok(())
    }

    async fn ensure_rules(&self, rules: &[Rule], prefix: &str, tag: &str) -> Result<(), HostError> {
        // Every rule is tried, whatever failed before it: the guards of the node's ports must
        // not wait on a chain the engine did not make.
        let mut first_error = None;
        let mut chains: Vec<(&str, &str)> = rules.iter().map(|r| (r.table, r.chain)).collect();
        chains.dedup();
        for (table, chain) in &chains {
            let listing = match iptables(table, &["-S", chain]).await {
                Ok(l) => l,
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            };
            for stale in plan::stale_rules(&listing, prefix, tag) {
                let mut args = vec!["-D", chain];
                args.extend(stale.iter().map(String::as_str));
                if let Err(e) = iptables(table, &args).await {
                    first_error.get_or_insert(e);
                }
            }
        }
        for rule in rules {
            let args: Vec<&str> = rule.args.iter().map(String::as_str).collect();
            let mut check = vec!["-C", rule.chain];
            check.extend_from_slice(&args);
            if iptables(rule.table, &check).await.is_ok() {
                continue;
            }
            let mut add = if rule.first {
                vec!["-I", rule.chain, "1"]
            } else {
                vec!["-A", rule.chain]
            };
            add.extend_from_slice(&args);
            if let Err(e) = iptables(rule.table, &add).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
