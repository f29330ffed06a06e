//! Registry credentials from a pod's `imagePullSecrets`, matched to an image as kubelet does.
//!
//! Pure. A Secret of type `kubernetes.io/dockerconfigjson` holds a Docker `config.json`
//! (`{"auths": {KEY: {...}}}`) under `.dockerconfigjson`; the older
//! `kubernetes.io/dockercfg` holds the map itself under `.dockercfg`. Each entry gives a
//! username and password (or `auth`, their base64 `user:pass`) or an identity token. A key
//! names a registry, optionally with a scheme, a port, a path prefix and `*` globs for whole
//! host labels (`*.lan`). A key matches an image when its host matches label for label, its
//! port equals the image's, and its path is a prefix of the image's repository; of several
//! matching keys the longest wins. Docker Hub answers to `docker.io`, `index.docker.io` and
//! `registry-1.docker.io`.
//!
//! Secrets of other types are skipped, as kubelet skips them; their names come back so that
//! the pod's events can say so. Passwords never appear in `Debug` output
//! ([`crate::runtime::RegistryAuth`]).

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::reference::{DOCKER_HUB, ImageRef};
use crate::runtime::RegistryAuth;

pub const DOCKERCONFIGJSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKERCFG: &str = "kubernetes.io/dockercfg";

/// One Secret named by `imagePullSecrets`, as the agent fetched it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSecret {
    pub name: String,
    pub type_: String,
    pub data: BTreeMap<String, Vec<u8>>,
}

// No Debug: entries hold passwords.
#[derive(Default, Deserialize)]
struct ConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default, alias = "identityToken")]
    identitytoken: Option<String>,
}

/// What could not be used, for the pod's events (never with a secret's content).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Secrets named but not of a pull-secret type, or unreadable, each with why.
    pub secrets: Vec<(String, String)>,
}

/// The credentials for `image` out of `secrets`, in the order of `imagePullSecrets`.
pub fn credentials_for(
    image: &ImageRef,
    secrets: &[PullSecret],
) -> (Option<RegistryAuth>, Skipped) {
    let mut skipped = Skipped::default();
    let mut best: Option<(usize, RegistryAuth)> = None;
    for s in secrets {
        let entries = match entries(s) {
            Ok(e) => e,
            Err(why) => {
                skipped.secrets.push((s.name.clone(), why));
                continue;
            }
        };
        for (key, entry) in entries {
            let Some(specificity) = key_matches(&key, image) else {
                continue;
            };
            let Some(auth) = to_auth(&key, entry) else {
                continue;
            };
            // The first secret wins a tie, as kubelet tries them in order.
            if best.as_ref().is_none_or(|(b, _)| specificity > *b) {
                best = Some((specificity, auth));
            }
        }
    }
    (best.map(|(_, a)| a), skipped)
}

fn entries(s: &PullSecret) -> Result<BTreeMap<String, Entry>, String> {
    let (key, wrapped) = match s.type_.as_str() {
        DOCKERCONFIGJSON => (".dockerconfigjson", true),
        DOCKERCFG => (".dockercfg", false),
        other => {
            return Err(format!(
                "it is of type {other}, not {DOCKERCONFIGJSON} or {DOCKERCFG}"
            ));
        }
    };
    let Some(raw) = s.data.get(key) else {
        return Err(format!("it has no key {key}"));
    };
    let parsed = if wrapped {
        serde_json::from_slice::<ConfigJson>(raw).map(|c| c.auths)
    } else {
        serde_json::from_slice::<BTreeMap<String, Entry>>(raw)
    };
    // serde_json's message may quote the input: say only where it failed.
    parsed.map_err(|e| {
        format!(
            "its {key} is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

fn to_auth(key: &str, e: Entry) -> Option<RegistryAuth> {
    let (mut username, mut password) = (e.username, e.password);
    if (username.is_none() || password.is_none())
        && let Some(auth) = &e.auth
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(auth.trim())
        && let Ok(text) = String::from_utf8(raw)
        && let Some((u, p)) = text.split_once(':')
    {
        username = Some(u.to_string());
        password = Some(p.to_string());
    }
    if username.is_none() && e.identitytoken.is_none() {
        return None;
    }
    Some(RegistryAuth {
        server: key.to_string(),
        username: username.unwrap_or_default(),
        password: password.unwrap_or_default(),
        identity_token: e.identitytoken,
    })
}

/// The host's canonical spelling: Docker Hub's several names are one.
fn canonical_host(host: &str) -> String {
    let host = host.to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => host,
    }
}

/// How specific `key` is when it matches `image` (longer is more), `None` when it does not.
fn key_matches(key: &str, image: &ImageRef) -> Option<usize> {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let (hostport, path) = match rest.split_once('/') {
        Some((h, p)) => (h, p.trim_end_matches('/')),
        None => (rest, ""),
    };
    // `https://index.docker.io/v1/` is how Docker writes the Hub's key: its path is an API
    // version, not a repository prefix.
    let path = if canonical_host(hostport) == DOCKER_HUB && path.starts_with("v1") {
        ""
    } else {
        path
    };
    let (key_host, key_port) = split_port(hostport);
    let (img_host, img_port) = split_port(&image.registry);
    if key_port != img_port {
        return None;
    }
    let (key_host, img_host) = (canonical_host(key_host), canonical_host(img_host));
    let key_labels: Vec<&str> = key_host.split('.').collect();
    let img_labels: Vec<&str> = img_host.split('.').collect();
    if key_labels.len() != img_labels.len() {
        return None;
    }
    for (k, i) in key_labels.iter().zip(&img_labels) {
        if !glob_label(k, i) {
            return None;
        }
    }
    if !path.is_empty() {
        let repo = &image.repository;
        let prefixed = repo == path
            || repo
                .strip_prefix(path)
                .is_some_and(|after| after.starts_with('/'));
        if !prefixed {
            return None;
        }
    }
    Some(hostport.len() + path.len())
}

fn split_port(hostport: &str) -> (&str, Option<&str>) {
    match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (hostport, None),
    }
}

/// `*` matches any run of characters within one label.
fn glob_label(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((before, after)) => {
            label.len() >= before.len() + after.len()
                && label.starts_with(before)
                && glob_label_tail(after, &label[before.len()..])
        }
    }
}

fn glob_label_tail(pattern: &str, label: &str) -> bool {
    if !pattern.contains('*') {
        return label.ends_with(pattern);
    }
    (0..=label.len()).any(|i| label.is_char_boundary(i) && glob_label(pattern, &label[i..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn secret(name: &str, json: &str) -> PullSecret {
        PullSecret {
            name: name.into(),
            type_: DOCKERCONFIGJSON.into(),
            data: [(".dockerconfigjson".to_string(), json.as_bytes().to_vec())].into(),
        }
    }

    fn user_for(image: &str, secrets: &[PullSecret]) -> Option<String> {
        credentials_for(&ImageRef::parse(image).unwrap(), secrets)
            .0
            .map(|a| a.username)
    }

    #[test]
    fn keys_match_as_kubelet_matches_them() {
        let cases: &[(&str, &str, bool)] = &[
            ("127.0.0.1:5000", "127.0.0.1:5000/team/echo:v1", true),
            ("http://127.0.0.1:5000", "127.0.0.1:5000/team/echo:v1", true),
            ("127.0.0.1:5000", "127.0.0.1:5001/team/echo:v1", false),
            ("127.0.0.1", "127.0.0.1:5000/team/echo:v1", false),
            ("reg.lan/team", "reg.lan/team/echo", true),
            ("reg.lan/team", "reg.lan/teamx/echo", false),
            ("*.lan", "reg.lan/x", true),
            ("*.lan", "a.reg.lan/x", false),
            ("reg-*.lan", "reg-1.lan/x", true),
            ("https://index.docker.io/v1/", "nginx", true),
            ("docker.io", "bitnami/redis:7", true),
            ("index.docker.io", "ghcr.io/x/y", false),
            ("REG.LAN", "reg.lan/x", true),
        ];
        for (key, image, want) in cases {
            let got = key_matches(key, &ImageRef::parse(image).unwrap()).is_some();
            assert_eq!(got, *want, "{key} against {image}");
        }
    }

    #[test]
    fn the_most_specific_key_wins_and_auth_is_decoded() {
        let s = secret(
            "pull",
            r#"{"auths": {
                "reg.lan": {"username": "wide", "password": "a"},
                "reg.lan/team": {"auth": "bmFycm93OnNlY3JldA=="}
            }}"#,
        );
        assert_eq!(
            user_for("reg.lan/team/echo", std::slice::from_ref(&s)).as_deref(),
            Some("narrow")
        );
        assert_eq!(user_for("reg.lan/other", &[s]).as_deref(), Some("wide"));
        let (auth, _) = credentials_for(
            &ImageRef::parse("reg.lan/team/x").unwrap(),
            &[secret(
                "pull",
                r#"{"auths": {"reg.lan": {"auth": "bmFycm93OnNlY3JldA=="}}}"#,
            )],
        );
        assert_eq!(auth.map(|a| a.password).as_deref(), Some("secret"));
    }

    #[test]
    fn the_first_secret_wins_a_tie() {
        let a = secret(
            "a",
            r#"{"auths": {"reg.lan": {"username": "a", "password": "x"}}}"#,
        );
        let b = secret(
            "b",
            r#"{"auths": {"reg.lan": {"username": "b", "password": "x"}}}"#,
        );
        assert_eq!(user_for("reg.lan/x", &[a, b]).as_deref(), Some("a"));
    }

    #[test]
    fn dockercfg_is_read_too() {
        let s = PullSecret {
            name: "old".into(),
            type_: DOCKERCFG.into(),
            data: [(
                ".dockercfg".to_string(),
                br#"{"reg.lan": {"username": "u", "password": "p"}}"#.to_vec(),
            )]
            .into(),
        };
        assert_eq!(user_for("reg.lan/x", &[s]).as_deref(), Some("u"));
    }

    #[test]
    fn unusable_secrets_are_skipped_with_why_and_never_quoted() {
        let opaque = PullSecret {
            name: "plain".into(),
            type_: "Opaque".into(),
            data: BTreeMap::new(),
        };
        let broken = secret("broken", "{\"auths\": {\"reg.lan\": hunter2");
        let (auth, skipped) =
            credentials_for(&ImageRef::parse("reg.lan/x").unwrap(), &[opaque, broken]);
        assert!(auth.is_none());
        assert_eq!(skipped.secrets.len(), 2);
        assert!(skipped.secrets[0].1.contains("Opaque"));
        assert!(!skipped.secrets[1].1.contains("hunter2"), "{:?}", skipped);
    }

    #[test]
    fn globs_are_per_label() {
        let cases = [
            ("*", "anything", true),
            ("a*c", "abc", true),
            ("a*c", "ab", false),
            ("*x*", "axb", true),
            ("*x*", "ab", false),
        ];
        for (p, l, want) in cases {
            assert_eq!(glob_label(p, l), want, "{p} {l}");
        }
    }
}
