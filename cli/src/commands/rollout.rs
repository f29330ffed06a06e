//! `rollout status|history|undo|restart` of a deployment. The decisions are pure functions of
//! the objects the node answers, so they are tested without a node.

use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde_json::{Value, json};
use shoal_protocol::Kind;
use shoal_protocol::cluster::{RESTARTED_AT_ANNOTATION, REVISION_ANNOTATION};

use super::{Session, list_items, parse_duration, parse_target};
use crate::args::{RolloutCommand, RolloutTarget};
use crate::client;
use crate::output::{int, list, print, render_table, text};

/// The annotation kubectl records a change's cause in.
pub const CHANGE_CAUSE_ANNOTATION: &str = "kubernetes.io/change-cause";

pub fn run(s: &Session, c: RolloutCommand) -> Result<()> {
    match c {
        RolloutCommand::Status {
            target,
            timeout,
            watch,
        } => status(s, &deployment_name(&target)?, &timeout, watch),
        RolloutCommand::History { target } => history(s, &deployment_name(&target)?),
        RolloutCommand::Undo {
            target,
            to_revision,
        } => undo(s, &deployment_name(&target)?, to_revision),
        RolloutCommand::Restart { target } => restart(s, &deployment_name(&target)?),
    }
}

fn deployment_name(t: &RolloutTarget) -> Result<String> {
    Ok(parse_target(&t.target, &[Kind::Deployment])?.1)
}

fn get_deployment(s: &Session, name: &str) -> Result<Value> {
    let path = client::object_path(Kind::Deployment, Some(&s.namespace), name);
    match s.client.get(&path, &[]) {
        Ok(v) => Ok(v),
        Err(e) if e.is_not_found() => Err(client::not_found(Kind::Deployment, name).into()),
        Err(e) => Err(e.into()),
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Not done yet; the line says why.
    Waiting(String),
    Done(String),
    /// It will not finish by itself.
    Failed(String),
}

/// kubectl's decision for a Deployment (its `DeploymentStatusViewer`).
pub fn rollout_state(d: &Value) -> Rollout {
    let name = text(d, "/metadata/name").unwrap_or_default();
    let generation = int(d, "/metadata/generation").unwrap_or(0);
    let observed = int(d, "/status/observedGeneration").unwrap_or(0);
    if generation > observed {
        return Rollout::Waiting("Waiting for deployment spec update to be observed...".into());
    }
    let timed_out = list(d, "/status/conditions").iter().any(|c| {
        text(c, "/type").as_deref() == Some("Progressing")
            && text(c, "/reason").as_deref() == Some("ProgressDeadlineExceeded")
    });
    if timed_out {
        return Rollout::Failed(format!(
            "deployment \"{name}\" exceeded its progress deadline"
        ));
    }
    let spec_replicas = int(d, "/spec/replicas").unwrap_or(1);
    let replicas = int(d, "/status/replicas").unwrap_or(0);
    let updated = int(d, "/status/updatedReplicas").unwrap_or(0);
    let available = int(d, "/status/availableReplicas").unwrap_or(0);
    if updated < spec_replicas {
        return Rollout::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {updated} out of \
             {spec_replicas} new replicas have been updated..."
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending \
             termination...",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} \
             updated replicas are available..."
        ));
    }
    Rollout::Done(format!("deployment \"{name}\" successfully rolled out"))
}

fn status(s: &Session, name: &str, timeout: &str, watch: bool) -> Result<()> {
    let limit = parse_duration(timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
    let deadline = (limit > 0).then(|| Instant::now() + Duration::from_secs(limit));
    let mut last = String::new();
    loop {
        let d = get_deployment(s, name)?;
        match rollout_state(&d) {
            Rollout::Done(msg) => return print(&format!("{msg}\n")),
            Rollout::Failed(msg) => return Err(anyhow!(msg)),
            Rollout::Waiting(msg) => {
                if msg != last {
                    print(&format!("{msg}\n"))?;
                    last = msg;
                }
                if !watch {
                    return Ok(());
                }
            }
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(anyhow!("timed out waiting for the condition"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One revision of a deployment: its number and change cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub number: i64,
    pub change_cause: Option<String>,
}

/// The revisions of the deployment `name` among `replicasets`, oldest first.
pub fn revisions(name: &str, replicasets: &[Value]) -> Vec<Revision> {
    let mut out: Vec<Revision> = replicasets
        .iter()
        .filter(|rs| owned_by(rs, name))
        .filter_map(|rs| {
            let annotations = rs.pointer("/metadata/annotations")?;
            let number = annotations
                .get(REVISION_ANNOTATION)?
                .as_str()?
                .parse()
                .ok()?;
            let change_cause = annotations
                .get(CHANGE_CAUSE_ANNOTATION)
                .and_then(Value::as_str)
                .map(str::to_string);
            Some(Revision {
                number,
                change_cause,
            })
        })
        .collect();
    out.sort_by_key(|r| r.number);
    out.dedup_by_key(|r| r.number);
    out
}

/// Whether a ReplicaSet belongs to the deployment `name`: its owner reference says so, or,
/// without one, its name is `<name>-<pod-template-hash>` (as the node's controller decides).
fn owned_by(rs: &Value, name: &str) -> bool {
    let refs = list(rs, "/metadata/ownerReferences");
    let owner = refs
        .iter()
        .find(|o| text(o, "/kind").as_deref() == Some("Deployment"));
    match owner {
        Some(o) => text(o, "/name").as_deref() == Some(name),
        None => {
            let hash = text(rs, "/metadata/labels/pod-template-hash");
            let rs_name = text(rs, "/metadata/name");
            matches!((hash, rs_name), (Some(h), Some(n)) if n == format!("{name}-{h}"))
        }
    }
}

/// kubectl's history table.
pub fn history_table(name: &str, revs: &[Revision]) -> String {
    let rows: Vec<Vec<String>> = revs
        .iter()
        .map(|r| {
            vec![
                r.number.to_string(),
                r.change_cause.clone().unwrap_or_else(|| "<none>".into()),
            ]
        })
        .collect();
    format!(
        "deployment.apps/{name}\n{}",
        render_table(&["REVISION", "CHANGE-CAUSE"], &rows)
    )
}

fn history(s: &Session, name: &str) -> Result<()> {
    get_deployment(s, name)?;
    let path = client::collection_path(Kind::ReplicaSet, Some(&s.namespace));
    let answer = s.client.get(&path, &[])?;
    let replicasets = list_items(&s.client, answer)?;
    let revs = revisions(name, &replicasets);
    if revs.is_empty() {
        return print(&format!(
            "deployment.apps/{name}\nNo rollout history found.\n"
        ));
    }
    print(&history_table(name, &revs))
}

fn undo(s: &Session, name: &str, to_revision: i64) -> Result<()> {
    if to_revision < 0 {
        anyhow::bail!("--to-revision must be >= 0");
    }
    let before = get_deployment(s, name)?;
    let path = format!(
        "/shoal/v1/namespaces/{}/deployments/{}/rollback",
        client::segment(&s.namespace),
        client::segment(name)
    );
    let after = s
        .client
        .post_json(&path, &json!({ "toRevision": to_revision }))?;
    let gen_of = |v: &Value| int(v, "/metadata/generation");
    if gen_of(&before) == gen_of(&after) {
        let which = if to_revision > 0 {
            format!("revision {to_revision}")
        } else {
            "the previous revision".into()
        };
        return print(&format!(
            "deployment.apps/{name} skipped rollback (current template already matches \
             {which})\n"
        ));
    }
    print(&format!("deployment.apps/{name} rolled back\n"))
}

/// The Deployment with its template annotated `restartedAt`, ready to be sent back: a new
/// template, hence a new revision that replaces every pod.
pub fn restarted(mut d: Value, now_rfc3339: &str) -> Result<Value> {
    let Some(obj) = d.as_object_mut() else {
        anyhow::bail!("the node answered a deployment that is not a JSON object");
    };
    obj.remove("status");
    let template = d
        .pointer_mut("/spec/template")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| anyhow!("the deployment has no spec.template"))?;
    let meta = template
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| anyhow!("spec.template.metadata is not an object"))?;
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .ok_or_else(|| anyhow!("spec.template.metadata.annotations is not an object"))?;
    annotations.insert(RESTARTED_AT_ANNOTATION.into(), Value::from(now_rfc3339));
    Ok(d)
}

fn restart(s: &Session, name: &str) -> Result<()> {
    let d = get_deployment(s, name)?;
    if d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) {
        anyhow::bail!("deployments.apps \"{name}\" is paused: resume it before restarting");
    }
    let body = restarted(d, &rfc3339(crate::output::now()))?;
    let path = client::object_path(Kind::Deployment, Some(&s.namespace), name);
    s.client.put_json(&path, &body)?;
    print(&format!("deployment.apps/{name} restarted\n"))
}

/// Seconds since the Unix epoch as RFC 3339 UTC: `2024-05-01T10:00:00Z`.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn dep(generation: i64, status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "generation": generation},
            "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": []}}},
            "status": status,
        })
    }

    #[test]
    fn rollout_decisions() {
        let w = |s: &str| Rollout::Waiting(s.to_string());
        let cases = [
            (
                dep(2, json!({"observedGeneration": 1})),
                w("Waiting for deployment spec update to be observed..."),
            ),
            (
                dep(
                    2,
                    json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 1}),
                ),
                w(
                    "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas \
                   have been updated...",
                ),
            ),
            (
                dep(
                    2,
                    json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3}),
                ),
                w(
                    "Waiting for deployment \"web\" rollout to finish: 1 old replicas are \
                   pending termination...",
                ),
            ),
            (
                dep(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                              "availableReplicas": 1}),
                ),
                w(
                    "Waiting for deployment \"web\" rollout to finish: 1 of 3 updated replicas \
                   are available...",
                ),
            ),
            (
                dep(
                    2,
                    json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 3,
                              "availableReplicas": 3}),
                ),
                Rollout::Done("deployment \"web\" successfully rolled out".into()),
            ),
            (
                dep(
                    2,
                    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
                    "conditions": [{"type": "Progressing", "status": "False",
                                    "reason": "ProgressDeadlineExceeded"}]}),
                ),
                Rollout::Failed("deployment \"web\" exceeded its progress deadline".into()),
            ),
        ];
        for (d, want) in cases {
            assert_eq!(rollout_state(&d), want, "{d}");
        }
    }

    #[test]
    fn history_from_owned_replicasets() {
        let rs = |name: &str, owner: &str, rev: &str, cause: Option<&str>| {
            let mut annotations = json!({ REVISION_ANNOTATION: rev });
            if let Some(c) = cause {
                annotations[CHANGE_CAUSE_ANNOTATION] = json!(c);
            }
            json!({"metadata": {"name": name, "annotations": annotations,
                "ownerReferences": [{"kind": "Deployment", "name": owner}]}})
        };
        let sets = [
            rs("web-b", "web", "2", Some("image 2")),
            rs("web-a", "web", "1", None),
            rs("api-a", "api", "7", None),
            json!({"metadata": {"name": "web-c", "labels": {"pod-template-hash": "c"},
                "annotations": {REVISION_ANNOTATION: "3"}}}),
            json!({"metadata": {"name": "webx-d", "labels": {"pod-template-hash": "d"},
                "annotations": {REVISION_ANNOTATION: "4"}}}),
            json!({"metadata": {"name": "loose"}}),
        ];
        let revs = revisions("web", &sets);
        assert_eq!(revs.len(), 3, "{revs:?}");
        assert_eq!(
            history_table("web", &revs),
            "deployment.apps/web\n\
             REVISION   CHANGE-CAUSE\n\
             1          <none>\n\
             2          image 2\n\
             3          <none>\n"
        );
    }

    #[test]
    fn restart_sets_the_template_annotation() {
        let d = dep(1, json!({"replicas": 3}));
        let r = restarted(d, "2024-05-01T10:00:00Z").unwrap();
        assert!(r.get("status").is_none());
        assert_eq!(
            r["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT_ANNOTATION],
            "2024-05-01T10:00:00Z"
        );
        assert_eq!(r["spec"]["template"]["metadata"]["labels"]["app"], "web");
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "2031-12-31T01:02:03Z",
        ] {
            let secs = crate::output::parse_rfc3339(t).unwrap();
            assert_eq!(rfc3339(secs), t);
        }
    }
}
