//! `pod-routes`: the routes a machine of the LAN needs to reach pods by their own addresses
//! (what headless Services and StatefulSet pod names answer): each node's pod subnet via the
//! node's address, as `ip route` commands to run on a Linux client or to copy into a home
//! router's static routes.

use anyhow::Result;
use serde_json::Value;

use super::Session;
use crate::output;

pub fn run(s: &Session) -> Result<()> {
    let list = s.client.get("/api/v1/nodes", &[])?;
    output::print(&routes(output::list(&list, "/items")))
}

/// One `ip route add SUBNET via ADDRESS` line per node that holds a pod subnet and has an
/// address, with its name; a line saying so when none does. Pure.
pub fn routes(nodes: &[Value]) -> String {
    let mut out = String::new();
    for n in nodes {
        let (Some(name), Some(cidr), Some(address)) = (
            output::text(n, "/metadata/name"),
            output::text(n, "/spec/podCIDR"),
            output::node_address(n, "InternalIP"),
        ) else {
            continue;
        };
        out.push_str(&format!("ip route add {cidr} via {address}   # {name}\n"));
    }
    if out.is_empty() {
        out.push_str("# no node holds a pod subnet yet\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_route_per_node_with_a_subnet_and_an_address() {
        let node = |name: &str, cidr: Option<&str>, ip: &str| {
            let mut n = json!({"metadata": {"name": name}, "spec": {},
                "status": {"addresses": [{"type": "InternalIP", "address": ip},
                                         {"type": "Hostname", "address": name}]}});
            if let Some(c) = cidr {
                n["spec"]["podCIDR"] = json!(c);
            }
            n
        };
        let nodes = [
            node("pi1", Some("10.42.17.0/24"), "192.168.1.11"),
            node("pi2", None, "192.168.1.12"),
            node("pi3", Some("10.42.96.0/24"), "192.168.1.13"),
        ];
        assert_eq!(
            routes(&nodes),
            "ip route add 10.42.17.0/24 via 192.168.1.11   # pi1\n\
             ip route add 10.42.96.0/24 via 192.168.1.13   # pi3\n"
        );
        assert_eq!(routes(&nodes[1..2]), "# no node holds a pod subnet yet\n");
    }
}
