//! The typed resources, in Kubernetes' shape and field names.
//!
//! Every struct refuses fields it does not know (`deny_unknown_fields`): a field shoal does
//! not support is an error naming its path, never silently dropped. None has a `status`:
//! status is observed state, which the API adds when it answers.
//!
//! Defaults are filled when an object is read (serde defaults, then each kind's
//! `default_fields`), so that the same manifest always gives the same value, and
//! serializing then reading again gives it back unchanged.

mod core;
mod pod;
mod service;
mod workloads;

pub use self::core::{
    AccessMode, ConfigMap, Namespace, NamespaceSpec, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, SECRET_TYPE_OPAQUE, Secret, VolumeMode,
};
pub use self::pod::{
    Affinity, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, ExecAction, HostPathType, HostPathVolumeSource, HttpGetAction,
    HttpHeader, KeySelector, KeyToPath, LocalObjectReference, NameRef, NfsVolumeSource,
    NodeAffinity, NodeSelector, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, Pod, PodSpec, PodTemplateSpec, Probe,
    Protocol, PullPolicy, ResourceRequirements, RestartPolicy, Scheme, SecretVolumeSource,
    StorageMedium, TaintEffect, TcpSocketAction, Toleration, TolerationOperator, Volume,
    VolumeMount, VolumeSource,
};
pub use self::service::{
    Service, ServiceAffinity, ServicePort, ServiceSpec, ServiceType, TrafficPolicy,
};
pub use self::workloads::{
    ControllerRevision, Deployment, DeploymentSpec, DeploymentStrategy, DeploymentStrategyType,
    PodManagementPolicy, ReplicaSet, ReplicaSetSpec, RevisionData, RevisionSpec,
    RollingUpdateDeployment, RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec,
    StatefulSetUpdateStrategy, StatefulSetUpdateStrategyType,
};
