//! The registry of resource kinds: how each is named in manifests, in REST paths and on the
//! command line, and whether it lives in a namespace.

use std::fmt;

/// A kind of resource that shoal knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Node,
    ConfigMap,
    Secret,
    PersistentVolumeClaim,
    Service,
    Pod,
    Deployment,
    ReplicaSet,
    StatefulSet,
    ControllerRevision,
    /// Computed from Services and pods on every read; never stored (not in [`Kind::ALL`]).
    Endpoints,
    /// Cluster events: soft state each node keeps in a bounded ring, read-only through the
    /// API; never stored (not in [`Kind::ALL`]).
    Event,
}

struct KindInfo {
    kind: Kind,
    name: &'static str,
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    short: &'static [&'static str],
    namespaced: bool,
    /// Whether users may apply it (Nodes are registered by `shoald` itself).
    appliable: bool,
}

const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: Kind::Namespace,
        name: "Namespace",
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        short: &["ns"],
        namespaced: false,
        appliable: true,
    },
    KindInfo {
        kind: Kind::Node,
        name: "Node",
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        short: &["no"],
        namespaced: false,
        appliable: false,
    },
    KindInfo {
        kind: Kind::ConfigMap,
        name: "ConfigMap",
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        short: &["cm"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::Secret,
        name: "Secret",
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        short: &[],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::PersistentVolumeClaim,
        name: "PersistentVolumeClaim",
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        short: &["pvc"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::Service,
        name: "Service",
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        short: &["svc"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::Pod,
        name: "Pod",
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        short: &["po"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::Deployment,
        name: "Deployment",
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        short: &["deploy"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::ReplicaSet,
        name: "ReplicaSet",
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        short: &["rs"],
        namespaced: true,
        // Deployments own their ReplicaSets: one per template revision.
        appliable: false,
    },
    KindInfo {
        kind: Kind::StatefulSet,
        name: "StatefulSet",
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        singular: "statefulset",
        short: &["sts"],
        namespaced: true,
        appliable: true,
    },
    KindInfo {
        kind: Kind::ControllerRevision,
        name: "ControllerRevision",
        group: "apps",
        version: "v1",
        plural: "controllerrevisions",
        singular: "controllerrevision",
        short: &[],
        namespaced: true,
        // StatefulSets own their revisions: one per template.
        appliable: false,
    },
    KindInfo {
        kind: Kind::Endpoints,
        name: "Endpoints",
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        short: &["ep"],
        namespaced: true,
        // The pods each Service's selector matches, computed on read.
        appliable: false,
    },
    KindInfo {
        kind: Kind::Event,
        name: "Event",
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        short: &["ev"],
        namespaced: true,
        // Recorded by the nodes, kept in memory.
        appliable: false,
    },
];

impl Kind {
    /// Every stored kind (all but [`Kind::Endpoints`]), in the order in which a batch is applied (namespaces first, so that objects
    /// in the same file can live in a namespace the file creates).
    pub const ALL: [Kind; 11] = [
        Kind::Namespace,
        Kind::Node,
        Kind::ConfigMap,
        Kind::Secret,
        Kind::PersistentVolumeClaim,
        Kind::Service,
        Kind::Pod,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::StatefulSet,
        Kind::ControllerRevision,
    ];

    fn info(self) -> &'static KindInfo {
        // KINDS holds one entry per variant, in the same order as the enum.
        &KINDS[self as usize]
    }

    /// The `kind` field: `Deployment`.
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The API group: `""` for the core group, `apps` for workloads.
    pub fn group(self) -> &'static str {
        self.info().group
    }

    /// The `apiVersion` field: `v1` or `apps/v1`.
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => self.info().version,
            "apps" => "apps/v1",
            _ => self.info().version,
        }
    }

    /// The lower-case plural used in REST paths: `deployments`.
    pub fn plural(self) -> &'static str {
        self.info().plural
    }

    /// The lower-case singular: `deployment`.
    pub fn singular(self) -> &'static str {
        self.info().singular
    }

    /// Short names accepted on the command line: `deploy`.
    pub fn short_names(self) -> &'static [&'static str] {
        self.info().short
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// Whether objects of this kind are kept in the desired state (Endpoints are computed,
    /// Events are soft state).
    pub fn stored(self) -> bool {
        !matches!(self, Kind::Endpoints | Kind::Event)
    }

    /// Whether users may apply objects of this kind.
    pub fn appliable(self) -> bool {
        self.info().appliable
    }

    /// The kind of a list of these objects: `DeploymentList`.
    pub fn list_kind(self) -> String {
        format!("{}List", self.name())
    }

    /// How kubectl names the resource in its messages: `deployment.apps`, `configmap`.
    pub fn display(self) -> String {
        if self.group().is_empty() {
            self.singular().to_string()
        } else {
            format!("{}.{}", self.singular(), self.group())
        }
    }

    /// The REST path of the collection, in a namespace when the kind is namespaced and one is
    /// given: `/apis/apps/v1/namespaces/default/deployments`, `/api/v1/namespaces`.
    pub fn collection_path(self, namespace: Option<&str>) -> String {
        let base = if self.group().is_empty() {
            format!("/api/{}", self.info().version)
        } else {
            format!("/apis/{}/{}", self.group(), self.info().version)
        };
        match namespace {
            Some(ns) if self.namespaced() => format!("{base}/namespaces/{ns}/{}", self.plural()),
            _ => format!("{base}/{}", self.plural()),
        }
    }

    /// The REST path of one object.
    pub fn object_path(self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// The kind named by a manifest's `apiVersion` and `kind`.
    pub fn from_manifest(api_version: &str, kind: &str) -> Option<Kind> {
        KINDS
            .iter()
            .find(|k| k.name == kind && k.kind.api_version() == api_version)
            .map(|k| k.kind)
    }

    /// The kind whose `kind` field is `name`, whatever its apiVersion.
    pub fn from_kind_name(name: &str) -> Option<Kind> {
        KINDS.iter().find(|k| k.name == name).map(|k| k.kind)
    }

    /// The kind named on the command line, as kubectl accepts it: singular, plural, short name
    /// or `kind.group`, in any case (`deploy`, `Deployments`, `deployment.apps`).
    pub fn from_cli(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b.to_string(), Some(g.to_string())),
            None => (lower, None),
        };
        KINDS
            .iter()
            .find(|k| {
                let group_ok = group.as_deref().is_none_or(|g| g == k.group);
                group_ok
                    && (base == k.plural || base == k.singular || k.short.contains(&base.as_str()))
            })
            .map(|k| k.kind)
    }

    /// The kind whose REST path has this group and plural.
    pub fn from_path(group: &str, plural: &str) -> Option<Kind> {
        KINDS
            .iter()
            .find(|k| k.group == group && k.plural == plural)
            .map(|k| k.kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_order_matches_enum() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(KINDS[i].kind, *k);
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn cli_names_resolve_like_kubectl() {
        let cases = [
            ("deploy", Some(Kind::Deployment)),
            ("deployments", Some(Kind::Deployment)),
            ("Deployment", Some(Kind::Deployment)),
            ("deployment.apps", Some(Kind::Deployment)),
            ("deployment.core", None),
            ("sts", Some(Kind::StatefulSet)),
            ("svc", Some(Kind::Service)),
            ("cm", Some(Kind::ConfigMap)),
            ("ns", Some(Kind::Namespace)),
            ("po", Some(Kind::Pod)),
            ("pvc", Some(Kind::PersistentVolumeClaim)),
            ("no", Some(Kind::Node)),
            ("rs", Some(Kind::ReplicaSet)),
            ("secret", Some(Kind::Secret)),
            ("widgets", None),
        ];
        for (input, want) in cases {
            assert_eq!(Kind::from_cli(input), want, "{input}");
        }
    }

    #[test]
    fn paths_follow_kubernetes_layout() {
        assert_eq!(
            Kind::Deployment.object_path(Some("default"), "web"),
            "/apis/apps/v1/namespaces/default/deployments/web"
        );
        assert_eq!(
            Kind::ConfigMap.collection_path(Some("x")),
            "/api/v1/namespaces/x/configmaps"
        );
        assert_eq!(Kind::ConfigMap.collection_path(None), "/api/v1/configmaps");
        assert_eq!(
            Kind::Namespace.collection_path(Some("x")),
            "/api/v1/namespaces"
        );
        assert_eq!(
            Kind::from_path("apps", "statefulsets"),
            Some(Kind::StatefulSet)
        );
        assert_eq!(
            Kind::from_manifest("apps/v1", "Deployment"),
            Some(Kind::Deployment)
        );
        assert_eq!(Kind::from_manifest("v1", "Deployment"), None);
        assert_eq!(Kind::Deployment.display(), "deployment.apps");
        assert_eq!(Kind::Service.display(), "service");
    }

    #[test]
    fn events_are_read_only_soft_state() {
        assert_eq!(Kind::from_cli("ev"), Some(Kind::Event));
        assert_eq!(Kind::from_cli("events"), Some(Kind::Event));
        assert_eq!(Kind::from_path("", "events"), Some(Kind::Event));
        assert!(!Kind::Event.stored() && !Kind::Event.appliable() && Kind::Event.namespaced());
        assert!(!Kind::ALL.contains(&Kind::Event));
        assert_eq!(
            Kind::Event.collection_path(Some("prod")),
            "/api/v1/namespaces/prod/events"
        );
    }
}
