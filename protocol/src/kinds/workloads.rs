//! Deployment and StatefulSet: pods kept running from a template; ReplicaSets and
//! ControllerRevisions, the revisions their controllers keep.

use serde::{Deserialize, Serialize};

use crate::intstr::IntOrString;
use crate::kinds::{PersistentVolumeClaim, PodTemplateSpec};
use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::serde_util::{is_default, is_false, is_zero};

/// A Deployment (`apps/v1`): interchangeable replicas of a pod template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Deployment {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: DeploymentSpec,
}

/// What a Deployment runs and how it rolls out changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentSpec {
    /// 1 by default.
    #[serde(default = "one")]
    pub replicas: i32,
    /// Required, and must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    #[serde(default)]
    pub strategy: DeploymentStrategy,
    /// 0 by default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_seconds: i32,
    /// 10 by default.
    #[serde(default = "ten")]
    pub revision_history_limit: i32,
    /// 600 by default.
    #[serde(default = "six_hundred")]
    pub progress_deadline_seconds: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub paused: bool,
}

fn one() -> i32 {
    1
}
fn ten() -> i32 {
    10
}
fn six_hundred() -> i32 {
    600
}

/// How a Deployment replaces old pods.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentStrategy {
    /// `RollingUpdate` by default.
    #[serde(rename = "type", default)]
    pub type_: DeploymentStrategyType,
    /// Set (25%/25% by default) for `RollingUpdate`; not allowed for `Recreate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

/// The kind of Deployment strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentStrategyType {
    #[default]
    RollingUpdate,
    Recreate,
}

/// Bounds of a rolling update: a number of pods or a percentage of `replicas`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdateDeployment {
    /// Pods above `replicas` during the update (rounded up); `25%` by default.
    #[serde(default = "quarter")]
    pub max_surge: IntOrString,
    /// Pods below `replicas` during the update (rounded down); `25%` by default.
    #[serde(default = "quarter")]
    pub max_unavailable: IntOrString,
}

fn quarter() -> IntOrString {
    IntOrString::String("25%".into())
}

impl Default for RollingUpdateDeployment {
    fn default() -> Self {
        RollingUpdateDeployment {
            max_surge: quarter(),
            max_unavailable: quarter(),
        }
    }
}

impl Deployment {
    /// Fills the defaults that depend on other fields: the rolling update's bounds, and the
    /// pod template's.
    pub fn default_fields(&mut self) {
        let s = &mut self.spec.strategy;
        if s.type_ == DeploymentStrategyType::RollingUpdate && s.rolling_update.is_none() {
            s.rolling_update = Some(RollingUpdateDeployment::default());
        }
        self.spec.template.spec.default_fields();
    }
}

/// A ReplicaSet (`apps/v1`): the pods of one template revision of a Deployment. shoal's
/// Deployment controller creates and scales them; users do not apply them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ReplicaSetSpec,
}

/// How many pods of which template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaSetSpec {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_seconds: i32,
}

impl ReplicaSet {
    /// Nothing depends on other fields beyond the pod template's defaults.
    pub fn default_fields(&mut self) {
        self.spec.template.spec.default_fields();
    }
}

/// A StatefulSet (`apps/v1`): replicas with stable names (`<name>-0`, `<name>-1`...) and
/// their own volumes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: StatefulSetSpec,
}

/// What a StatefulSet runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetSpec {
    /// The headless Service that gives each pod its DNS name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_name: String,
    /// 1 by default.
    #[serde(default = "one")]
    pub replicas: i32,
    /// Required, and must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    /// One claim per template and pod, named `<template>-<statefulset>-<ordinal>`; the pod's
    /// containers mount it by the template's name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_claim_templates: Vec<PersistentVolumeClaim>,
    /// `OrderedReady` by default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub pod_management_policy: PodManagementPolicy,
    #[serde(default)]
    pub update_strategy: StatefulSetUpdateStrategy,
    /// 0 by default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_ready_seconds: i32,
    /// 10 by default.
    #[serde(default = "ten")]
    pub revision_history_limit: i32,
}

/// Whether pods start and stop one at a time in order, or all at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PodManagementPolicy {
    #[default]
    OrderedReady,
    Parallel,
}

/// How a StatefulSet replaces pods when its template changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulSetUpdateStrategy {
    /// `RollingUpdate` by default.
    #[serde(rename = "type", default)]
    pub type_: StatefulSetUpdateStrategyType,
    /// Set for `RollingUpdate` (partition 0 by default); not allowed for `OnDelete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateStatefulSetStrategy>,
}

/// The kind of StatefulSet update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatefulSetUpdateStrategyType {
    #[default]
    RollingUpdate,
    OnDelete,
}

/// A rolling update of a StatefulSet: only ordinals at or above `partition` are updated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollingUpdateStatefulSetStrategy {
    #[serde(default)]
    pub partition: i32,
}

impl StatefulSet {
    /// Fills the defaults that depend on other fields: the update's partition, the pod
    /// template's.
    pub fn default_fields(&mut self) {
        let s = &mut self.spec.update_strategy;
        if s.type_ == StatefulSetUpdateStrategyType::RollingUpdate && s.rolling_update.is_none() {
            s.rolling_update = Some(RollingUpdateStatefulSetStrategy::default());
        }
        self.spec.template.spec.default_fields();
        for c in &mut self.spec.volume_claim_templates {
            c.default_fields();
        }
    }
}

/// A ControllerRevision (`apps/v1`): one template revision of a StatefulSet, named
/// `<statefulset>-<revision hash>`, kept so that each pod is (re)made from the template of its
/// own revision while an update is under way, below a rolling update's partition, or under
/// `OnDelete`. Written by the controllers only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControllerRevision {
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The revision's template, as Kubernetes keeps it: `{"spec": {"template": ...}}`.
    pub data: RevisionData,
    /// 1 for the first template, then one more for each new one.
    #[serde(default)]
    pub revision: i64,
}

/// The state a ControllerRevision keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionData {
    pub spec: RevisionSpec,
}

/// The part of a StatefulSet's spec a revision keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionSpec {
    pub template: PodTemplateSpec,
}

impl ControllerRevision {
    /// The template's defaults.
    pub fn default_fields(&mut self) {
        self.data.spec.template.spec.default_fields();
    }
}
