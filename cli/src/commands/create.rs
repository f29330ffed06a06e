//! `create secret generic|docker-registry`: builds a Secret from flags as kubectl 1.32 does,
//! then prints it (`--dry-run=client`) or creates it through the batch apply route, the path of
//! `shoal apply`, after checking that no Secret of that name exists: the API has no create-only
//! mode, and an apply would replace it.
//!
//! Building the object is pure ([`parse_literal`], [`parse_file_spec`], [`build_generic`],
//! [`build_docker_registry`], [`manifest`], [`render`]); only [`read_file_sources`] and [`run`]
//! touch files and the network. Secret values never appear in an error: a literal without `=`
//! may be a bare password, so errors say which flag is wrong, not what it holds.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Result, anyhow, bail};
use base64::Engine;
use serde::Serialize;
use serde_json::{Map, Value};
use shoal_protocol::api::ApplyAction;
use shoal_protocol::kinds::Secret;
use shoal_protocol::validation::check_config_key;
use shoal_protocol::{FieldError, Kind, ObjectMeta, Resource};

use super::Session;
use crate::args::{
    CreateCommand, CreateFormat, CreateOutputArgs, CreateSecretCommand, DockerRegistrySecretArgs,
    DryRun, GenericSecretArgs,
};
use crate::client;

/// The type of a Secret that holds a docker `config.json`.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Its key.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// `--docker-server`'s default, Docker Hub, as kubectl has it.
pub const DEFAULT_DOCKER_SERVER: &str = "https://index.docker.io/v1/";

/// Why a Secret could not be built from the flags. No variant holds a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// The `index`-th `--from-literal` (from 1) is not `KEY=VALUE`.
    Literal { index: usize, why: &'static str },
    /// A `--from-file` that is not `[KEY=]PATH`.
    FileSpec { spec: String, why: String },
    /// A path of `--from-file` that cannot be read or listed.
    Read { path: String, cause: String },
    /// `KEY=` given for a directory, whose files are keyed by their names.
    KeyForDirectory { spec: String },
    /// A key that a Secret cannot have; `source` names the flag.
    Key { source: String, why: String },
    /// Two sources give the same key.
    DuplicateKey { source: String, key: String },
    /// `docker-registry` without `--from-file` lacks these flags (or they are empty).
    MissingDockerFlags(Vec<&'static str>),
    /// `.dockerconfigjson` is not a JSON object.
    DockerConfig(String),
    /// The object breaks a rule of the API (its name, its size, a key its type requires).
    Invalid(Vec<FieldError>),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Literal { index, why } => write!(
                f,
                "--from-literal #{index} {why}: expected KEY=VALUE (its text is not shown, as it \
                 may be secret)"
            ),
            CreateError::FileSpec { spec, why } => write!(f, "--from-file={spec}: {why}"),
            CreateError::Read { path, cause } => write!(f, "error reading {path}: {cause}"),
            CreateError::KeyForDirectory { spec } => write!(
                f,
                "--from-file={spec}: cannot give a key name for a directory path (each file \
                 in it is keyed by its name)"
            ),
            CreateError::Key { source, why } => write!(f, "{source}: {why}"),
            CreateError::DuplicateKey { source, key } => write!(
                f,
                "{source}: cannot add key {key}, another key by that name already exists"
            ),
            CreateError::MissingDockerFlags(flags) => write!(
                f,
                "missing {}: give --docker-username and --docker-password (and --docker-server, \
                 by default {DEFAULT_DOCKER_SERVER}), or --from-file with a docker config.json",
                flags.join(" and ")
            ),
            CreateError::DockerConfig(why) => write!(
                f,
                "data[{DOCKER_CONFIG_JSON_KEY}]: must be a docker config.json (a JSON object), \
                 but {why}"
            ),
            CreateError::Invalid(errors) => {
                let lines: Vec<String> = errors.iter().map(FieldError::to_string).collect();
                write!(f, "the Secret is invalid: {}", lines.join("; "))
            }
        }
    }
}

impl std::error::Error for CreateError {}

/// One key of the Secret's data, and the flag it came from (for errors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: Vec<u8>,
    pub source: String,
}

/// `KEY=VALUE` of the `index`-th `--from-literal` (from 1), split at the first `=` as kubectl
/// does: the value may hold `=` and may be empty, the key may not.
pub fn parse_literal(index: usize, spec: &str) -> Result<Entry, CreateError> {
    match spec.split_once('=') {
        None => Err(CreateError::Literal {
            index,
            why: "has no '='",
        }),
        Some(("", _)) => Err(CreateError::Literal {
            index,
            why: "has no key before its '='",
        }),
        Some((key, value)) => Ok(Entry {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            source: format!("--from-literal #{index}"),
        }),
    }
}

/// A `--from-file` spec: the key it names, if any, and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub key: Option<String>,
    pub path: String,
}

/// `[KEY=]PATH`, with kubectl's rules: at most one `=`, and neither side empty.
pub fn parse_file_spec(spec: &str) -> Result<FileSpec, CreateError> {
    let bad = |why: String| CreateError::FileSpec {
        spec: spec.to_string(),
        why,
    };
    match spec.matches('=').count() {
        0 if spec.is_empty() => Err(bad("the path is empty".into())),
        0 => Ok(FileSpec {
            key: None,
            path: spec.to_string(),
        }),
        1 => match spec.split_once('=') {
            Some(("", path)) => Err(bad(format!("key name for file path {path} missing"))),
            Some((key, "")) => Err(bad(format!("file path for key name {key} missing"))),
            Some((key, path)) => Ok(FileSpec {
                key: Some(key.to_string()),
                path: path.to_string(),
            }),
            None => Err(bad("expected [KEY=]PATH".into())),
        },
        _ => Err(bad("key names or file paths cannot contain '='".into())),
    }
}

/// The last element of a slash-separated path, as Go's `path.Base`: kubectl's key for a file
/// given without one (`dir/tls.crt` is `tls.crt`).
pub fn base_name(path: &str) -> String {
    if path.is_empty() {
        return ".".to_string();
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return "/".to_string();
    }
    match trimmed.rsplit_once('/') {
        Some((_, last)) => last.to_string(),
        None => trimmed.to_string(),
    }
}

/// Reads every `--from-file`: a file under its key (or `default_key`, else its name), a
/// directory as one key per regular file in it, in name order, as kubectl does (symbolic links
/// and subdirectories inside it are skipped).
pub fn read_file_sources(
    specs: &[String],
    default_key: Option<&str>,
) -> Result<Vec<Entry>, CreateError> {
    let mut entries = Vec::new();
    for spec in specs {
        let parsed = parse_file_spec(spec)?;
        let read_err = |path: &Path, e: std::io::Error| CreateError::Read {
            path: path.display().to_string(),
            cause: io_cause(&e),
        };
        let path = Path::new(&parsed.path);
        let meta = std::fs::metadata(path).map_err(|e| read_err(path, e))?;
        if meta.is_dir() {
            if parsed.key.is_some() {
                return Err(CreateError::KeyForDirectory { spec: spec.clone() });
            }
            let mut files = Vec::new();
            for item in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
                let item = item.map_err(|e| read_err(path, e))?;
                let is_file = item.file_type().map_err(|e| read_err(path, e))?.is_file();
                if is_file {
                    files.push((item.file_name().to_string_lossy().into_owned(), item.path()));
                }
            }
            files.sort();
            for (name, file) in files {
                let value = std::fs::read(&file).map_err(|e| read_err(&file, e))?;
                entries.push(Entry {
                    source: format!("--from-file={spec} (file {name})"),
                    key: name,
                    value,
                });
            }
        } else {
            let value = std::fs::read(path).map_err(|e| read_err(path, e))?;
            let key = match (parsed.key, default_key) {
                (Some(k), _) => k,
                (None, Some(k)) => k.to_string(),
                (None, None) => base_name(&parsed.path),
            };
            entries.push(Entry {
                key,
                value,
                source: format!("--from-file={spec}"),
            });
        }
    }
    Ok(entries)
}

/// `No such file or directory`, without Rust's ` (os error 2)`.
fn io_cause(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// An empty Secret as kubectl starts one: the namespace only when `-n` was given (else the
/// node puts it in the context's), and `type` left out when empty (the node reads `Opaque`).
fn new_secret(name: &str, namespace: Option<&str>, type_: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: name.to_string(),
            namespace: namespace.map(str::to_string),
            ..ObjectMeta::default()
        },
        type_: type_.to_string(),
        data: BTreeMap::new(),
        immutable: false,
    }
}

/// Adds entries in order; a bad or repeated key is an error, as in kubectl.
fn add_entries(secret: &mut Secret, entries: Vec<Entry>) -> Result<(), CreateError> {
    for e in entries {
        if let Err(why) = check_config_key(&e.key) {
            return Err(CreateError::Key {
                source: e.source,
                why,
            });
        }
        if secret.data.contains_key(&e.key) {
            return Err(CreateError::DuplicateKey {
                source: e.source,
                key: e.key,
            });
        }
        secret.data.insert(e.key, e.value);
    }
    Ok(())
}

/// The checks the node would make, so that nothing invalid is sent or printed: the name, the
/// namespace, the keys, the size, the keys a type requires, and a `.dockerconfigjson` that
/// is a JSON object (as Kubernetes requires). Messages never quote a value.
fn check(secret: &Secret) -> Result<(), CreateError> {
    let mut typed = secret.clone();
    typed.default_fields();
    let errors = Resource::Secret(typed).validate();
    if !errors.is_empty() {
        return Err(CreateError::Invalid(errors));
    }
    if secret.type_ == DOCKER_CONFIG_JSON_TYPE
        && let Some(bytes) = secret.data.get(DOCKER_CONFIG_JSON_KEY)
    {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(_)) => {}
            Ok(_) => return Err(CreateError::DockerConfig("it is not a JSON object".into())),
            Err(e) => {
                return Err(CreateError::DockerConfig(format!(
                    "it is not JSON (error at line {}, column {})",
                    e.line(),
                    e.column()
                )));
            }
        }
    }
    Ok(())
}

/// `create secret generic`: literals first, then files, as kubectl adds them. `type_` empty
/// leaves `type` out (Opaque).
pub fn build_generic(
    name: &str,
    namespace: Option<&str>,
    type_: &str,
    literals: Vec<Entry>,
    files: Vec<Entry>,
) -> Result<Secret, CreateError> {
    let mut secret = new_secret(name, namespace, type_);
    add_entries(&mut secret, literals)?;
    add_entries(&mut secret, files)?;
    check(&secret)?;
    Ok(secret)
}

/// The `--docker-*` flags of `create secret docker-registry`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DockerLogin<'a> {
    pub server: &'a str,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub email: Option<&'a str>,
}

/// `create secret docker-registry`: the files of `--from-file` when there are any (the
/// `--docker-*` flags are then ignored, as by kubectl), else a config built from the login.
pub fn build_docker_registry(
    name: &str,
    namespace: Option<&str>,
    login: &DockerLogin<'_>,
    files: Vec<Entry>,
) -> Result<Secret, CreateError> {
    let mut secret = new_secret(name, namespace, DOCKER_CONFIG_JSON_TYPE);
    if files.is_empty() {
        let username = login.username.filter(|s| !s.is_empty());
        let password = login.password.filter(|s| !s.is_empty());
        let mut missing = Vec::new();
        if username.is_none() {
            missing.push("--docker-username");
        }
        if password.is_none() {
            missing.push("--docker-password");
        }
        if login.server.is_empty() {
            missing.push("--docker-server");
        }
        let (Some(username), Some(password)) = (username, password) else {
            return Err(CreateError::MissingDockerFlags(missing));
        };
        if !missing.is_empty() {
            return Err(CreateError::MissingDockerFlags(missing));
        }
        let config = docker_config_json(
            login.server,
            username,
            password,
            login.email.unwrap_or_default(),
        );
        secret
            .data
            .insert(DOCKER_CONFIG_JSON_KEY.to_string(), config.into_bytes());
    } else {
        add_entries(&mut secret, files)?;
    }
    check(&secret)?;
    Ok(secret)
}

/// One registry's entry of a docker config, its fields in kubectl's order; empty ones are
/// left out, as Go's `omitempty` does.
#[derive(Serialize)]
struct DockerConfigEntry<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    username: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    password: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    email: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    auth: String,
}

#[derive(Serialize)]
struct DockerConfigJson<'a> {
    auths: BTreeMap<&'a str, DockerConfigEntry<'a>>,
}

/// The `.dockerconfigjson` kubectl writes: `{"auths":{SERVER:{"username":U,"password":P,
/// "email":E,"auth":base64("U:P")}}}`, compact, byte for byte as Go's `json.Marshal` (which
/// also escapes `<`, `>`, `&`, U+2028 and U+2029).
pub fn docker_config_json(server: &str, username: &str, password: &str, email: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let config = DockerConfigJson {
        auths: BTreeMap::from([(
            server,
            DockerConfigEntry {
                username,
                password,
                email,
                auth,
            },
        )]),
    };
    // Serializing plain strings and maps of them cannot fail.
    go_html_escape(&serde_json::to_string(&config).unwrap_or_default())
}

/// Go's `encoding/json` escapes these inside strings where serde_json keeps them as they are;
/// everything else (control characters included) both escape alike. They occur only inside
/// strings, never in JSON's syntax, so replacing them in the whole text is safe.
pub fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The Secret as kubectl 1.32 prints it, fields in the API's order: `kind`, `apiVersion`,
/// `metadata` (`name`, `namespace` when given, `creationTimestamp: null`), `data` in base64
/// when not empty, `type` when set.
pub fn manifest(secret: &Secret) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), Value::from(secret.metadata.name.as_str()));
    if let Some(ns) = &secret.metadata.namespace {
        meta.insert("namespace".into(), Value::from(ns.as_str()));
    }
    meta.insert("creationTimestamp".into(), Value::Null);
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::from("Secret"));
    obj.insert("apiVersion".into(), Value::from("v1"));
    obj.insert("metadata".into(), Value::Object(meta));
    if !secret.data.is_empty() {
        let data: Map<String, Value> = secret
            .data
            .iter()
            .map(|(k, v)| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(v);
                (k.clone(), Value::from(b64))
            })
            .collect();
        obj.insert("data".into(), Value::Object(data));
    }
    if !secret.type_.is_empty() {
        obj.insert("type".into(), Value::from(secret.type_.as_str()));
    }
    Value::Object(obj)
}

/// A copy with the keys of every object sorted, as kubectl's YAML printer writes them.
fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let by_key: BTreeMap<&String, Value> = m.iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(by_key.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// `-o yaml|json|name` as kubectl prints an object: YAML with sorted keys; JSON in the
/// object's own order, indented by four spaces, with Go's escapes; `secret/NAME`.
pub fn render(value: &Value, format: CreateFormat) -> Result<String> {
    match format {
        CreateFormat::Yaml => {
            // A long base64 value stays on its line, as kubectl writes it, instead of the
            // folded block (`>-`) that `get -o yaml` uses.
            let mut options = serde_saphyr::SerializerOptions::default();
            options.prefer_block_scalars = false;
            let text = serde_saphyr::to_string_with_options(&sorted(value), options)
                .map_err(|e| anyhow!("cannot encode YAML: {e}"))?;
            Ok(if text.ends_with('\n') {
                text
            } else {
                text + "\n"
            })
        }
        CreateFormat::Json => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            value.serialize(&mut ser)?;
            let text = String::from_utf8(buf).map_err(|e| anyhow!("cannot encode JSON: {e}"))?;
            Ok(go_html_escape(&text) + "\n")
        }
        CreateFormat::Name => {
            let name = crate::output::text(value, "/metadata/name").unwrap_or_default();
            Ok(format!("{}/{name}\n", Kind::Secret.display()))
        }
    }
}

pub fn run(s: &Session, c: &CreateCommand) -> Result<()> {
    let CreateCommand::Secret(secret_command) = c;
    let namespace = s.namespace_explicit.then_some(s.namespace.as_str());
    let (secret, output) = match secret_command {
        CreateSecretCommand::Generic(a) => (generic(a, namespace)?, &a.output),
        CreateSecretCommand::DockerRegistry(a) => (docker_registry(a, namespace)?, &a.output),
    };
    let name = secret.metadata.name.clone();
    let object = manifest(&secret);
    if output.dry_run == DryRun::Client {
        let text = match output.output {
            Some(format) => render(&object, format)?,
            None => format!("{}/{name} created (dry run)\n", Kind::Secret.display()),
        };
        return crate::output::print(&text);
    }
    create(s, &name, &object, output)
}

fn generic(a: &GenericSecretArgs, namespace: Option<&str>) -> Result<Secret> {
    let literals = a
        .from_literal
        .iter()
        .enumerate()
        .map(|(i, l)| parse_literal(i + 1, &l.0))
        .collect::<Result<Vec<_>, _>>()?;
    let files = read_file_sources(&a.from_file, None)?;
    let type_ = a.type_.as_deref().unwrap_or_default();
    Ok(build_generic(&a.name, namespace, type_, literals, files)?)
}

fn docker_registry(a: &DockerRegistrySecretArgs, namespace: Option<&str>) -> Result<Secret> {
    // kubectl would key a file given without KEY by its name, which the API then refuses
    // for this type; the only key that works is the default here.
    let files = read_file_sources(&a.from_file, Some(DOCKER_CONFIG_JSON_KEY))?;
    let login = DockerLogin {
        server: &a.docker_server,
        username: a.docker_username.as_deref(),
        password: a.docker_password.as_ref().map(|p| p.0.as_str()),
        email: a.docker_email.as_deref(),
    };
    Ok(build_docker_registry(&a.name, namespace, &login, files)?)
}

/// Creates the Secret in one apply request, refusing when it exists already, with kubectl's
/// message. The check and the apply are two requests: a Secret created by someone else in
/// between is replaced, and that is reported as an error, not hidden.
fn create(s: &Session, name: &str, object: &Value, output: &CreateOutputArgs) -> Result<()> {
    let path = client::object_path(Kind::Secret, Some(&s.namespace), name);
    match s.client.get(&path, &[]) {
        Ok(_) => bail!("{}", already_exists(name)),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    let (key, namespace) = super::apply::request_namespace(&s.namespace, s.namespace_explicit);
    let body = serde_json::to_string(object)?;
    let resp = s
        .client
        .apply((key, &namespace), body, "application/json")?;
    let Some(result) = resp
        .items
        .iter()
        .find(|r| r.kind == Kind::Secret.name() && r.name == name)
    else {
        bail!("the node's answer to the apply does not mention secret {name:?}");
    };
    if result.action != ApplyAction::Created {
        bail!(
            "failed to create secret: secrets {name:?} was created by another client while this \
             command ran, and this command's apply then {} it",
            match result.action {
                ApplyAction::Unchanged => "found it equal to",
                _ => "replaced",
            }
        );
    }
    let text = match output.output {
        None => super::apply::result_line(result) + "\n",
        Some(CreateFormat::Name) => render(object, CreateFormat::Name)?,
        Some(format) => {
            // What the node stored, masked as `get` masks it unless --show-secrets.
            let mut stored = s.client.get(&path, &[])?;
            if !s.show_secrets {
                crate::output::mask_secrets(&mut stored);
            }
            render(&stored, format)?
        }
    };
    crate::output::print(&text)
}

/// kubectl's error for a Secret that exists: `failed to create secret secrets "NAME" already
/// exists`.
pub fn already_exists(name: &str) -> String {
    format!("failed to create secret secrets \"{name}\" already exists")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// What kubectl 1.32 writes for `--docker-username=u --docker-password=p` and the default
    /// server (its well-known output), and for a password with characters Go escapes.
    const HUB_U_P: &str = "eyJhdXRocyI6eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJ1IiwicGFzc3dvcmQiOiJwIiwiYXV0aCI6ImRUcHcifX19";
    const ALICE: &str = "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbTo1MDAwIjp7InVzZXJuYW1lIjoiYWxpY2UiLCJwYXNzd29yZCI6InMzY3JcdTAwMjZ0XHUwMDNjXHUwMDNlXCJ4IiwiZW1haWwiOiJhbGljZUBleGFtcGxlLmNvbSIsImF1dGgiOiJZV3hwWTJVNmN6TmpjaVowUEQ0aWVBPT0ifX19";

    fn lit(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            source: "test".into(),
        }
    }

    fn login<'a>(user: Option<&'a str>, pass: Option<&'a str>) -> DockerLogin<'a> {
        DockerLogin {
            server: DEFAULT_DOCKER_SERVER,
            username: user,
            password: pass,
            email: None,
        }
    }

    #[test]
    fn literals_split_at_the_first_equals() {
        /// A literal and its key and value, or why it is refused.
        type Case = (
            &'static str,
            Result<(&'static str, &'static str), &'static str>,
        );
        let cases: &[Case] = &[
            ("a=b", Ok(("a", "b"))),
            ("a=", Ok(("a", ""))),
            ("k=x=y=z", Ok(("k", "x=y=z"))),
            ("tls.crt=  spaced ", Ok(("tls.crt", "  spaced "))),
            ("hunter2", Err("has no '='")),
            ("=hunter2", Err("has no key before its '='")),
            ("", Err("has no '='")),
        ];
        for (spec, want) in cases {
            let got = parse_literal(3, spec);
            match want {
                Ok((k, v)) => {
                    let e = got.unwrap();
                    assert_eq!((e.key.as_str(), e.value.as_slice()), (*k, v.as_bytes()));
                    assert_eq!(e.source, "--from-literal #3");
                }
                Err(why) => assert_eq!(got, Err(CreateError::Literal { index: 3, why }), "{spec}"),
            }
        }
    }

    #[test]
    fn literal_errors_never_show_the_value() {
        for spec in ["hunter2", "=hunter2"] {
            let msg = parse_literal(2, spec).unwrap_err().to_string();
            assert!(msg.starts_with("--from-literal #2 "), "{msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }

    #[test]
    fn file_specs_follow_kubectl() {
        let ok = |key: Option<&str>, path: &str| {
            Ok(FileSpec {
                key: key.map(str::to_string),
                path: path.into(),
            })
        };
        let bad = |spec: &str, why: &str| {
            Err(CreateError::FileSpec {
                spec: spec.into(),
                why: why.into(),
            })
        };
        let cases = [
            ("config.json", ok(None, "config.json")),
            (
                "/home/me/.docker/config.json",
                ok(None, "/home/me/.docker/config.json"),
            ),
            (
                ".dockerconfigjson=cfg.json",
                ok(Some(".dockerconfigjson"), "cfg.json"),
            ),
            (
                "=cfg.json",
                bad("=cfg.json", "key name for file path cfg.json missing"),
            ),
            ("key=", bad("key=", "file path for key name key missing")),
            (
                "a=b=c",
                bad("a=b=c", "key names or file paths cannot contain '='"),
            ),
            ("", bad("", "the path is empty")),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_file_spec(spec), want, "{spec}");
        }
    }

    #[test]
    fn keys_default_to_the_base_name_as_go_path_base() {
        for (path, want) in [
            ("tls.crt", "tls.crt"),
            ("certs/tls.crt", "tls.crt"),
            ("/a/b/", "b"),
            ("/", "/"),
            ("", "."),
        ] {
            assert_eq!(base_name(path), want, "{path}");
        }
    }

    #[test]
    fn docker_config_json_is_byte_for_byte_kubectls() {
        let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(
            b64(docker_config_json(DEFAULT_DOCKER_SERVER, "u", "p", "")),
            HUB_U_P
        );
        let alice = docker_config_json(
            "registry.example.com:5000",
            "alice",
            "s3cr&t<>\"x",
            "alice@example.com",
        );
        assert_eq!(
            alice,
            r#"{"auths":{"registry.example.com:5000":{"username":"alice","password":"s3cr\u0026t\u003c\u003e\"x","email":"alice@example.com","auth":"YWxpY2U6czNjciZ0PD4ieA=="}}}"#
        );
        assert_eq!(b64(alice), ALICE);
        // Control characters escape as Go 1.22+ escapes them; U+2028 as Go's HTML escaping.
        assert_eq!(
            docker_config_json("s", "u", "a\u{8}\u{c}\n\u{1}\u{2028}", ""),
            r#"{"auths":{"s":{"username":"u","password":"a\b\f\n\u0001\u2028","auth":"dTphCAwKAeKAqA=="}}}"#
        );
    }

    #[test]
    fn docker_registry_secrets_are_kubectls() {
        let cases: Vec<(&str, Option<&str>, DockerLogin<'_>, Value)> = vec![
            (
                "regcred",
                None,
                login(Some("u"), Some("p")),
                serde_json::json!({
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "metadata": {"name": "regcred", "creationTimestamp": null},
                    "data": {".dockerconfigjson": HUB_U_P},
                    "type": "kubernetes.io/dockerconfigjson",
                }),
            ),
            (
                "alice",
                Some("ci"),
                DockerLogin {
                    server: "registry.example.com:5000",
                    username: Some("alice"),
                    password: Some("s3cr&t<>\"x"),
                    email: Some("alice@example.com"),
                },
                serde_json::json!({
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "metadata": {"name": "alice", "namespace": "ci", "creationTimestamp": null},
                    "data": {".dockerconfigjson": ALICE},
                    "type": "kubernetes.io/dockerconfigjson",
                }),
            ),
            (
                // An empty --docker-email is left out, as Go's omitempty does.
                "regcred",
                None,
                DockerLogin {
                    email: Some(""),
                    ..login(Some("u"), Some("p"))
                },
                serde_json::json!({
                    "kind": "Secret",
                    "apiVersion": "v1",
                    "metadata": {"name": "regcred", "creationTimestamp": null},
                    "data": {".dockerconfigjson": HUB_U_P},
                    "type": "kubernetes.io/dockerconfigjson",
                }),
            ),
        ];
        for (name, ns, login, want) in cases {
            let secret = build_docker_registry(name, ns, &login, vec![]).unwrap();
            let got = manifest(&secret);
            // Same text, so the same fields in the same order.
            assert_eq!(got.to_string(), want.to_string(), "{name}");
        }
    }

    #[test]
    fn docker_registry_from_a_config_file() {
        let config = r#"{"auths":{"ghcr.io":{"auth":"eDp5"}}}"#;
        let file = Entry {
            key: DOCKER_CONFIG_JSON_KEY.into(),
            value: config.as_bytes().to_vec(),
            source: "--from-file=cfg.json".into(),
        };
        // The --docker-* flags are ignored then, as by kubectl.
        let secret =
            build_docker_registry("r", None, &login(Some("u"), None), vec![file.clone()]).unwrap();
        assert_eq!(secret.type_, DOCKER_CONFIG_JSON_TYPE);
        assert_eq!(
            secret.data,
            BTreeMap::from([(
                DOCKER_CONFIG_JSON_KEY.to_string(),
                config.as_bytes().to_vec()
            )])
        );

        let bad = |value: &str| Entry {
            value: value.as_bytes().to_vec(),
            ..file.clone()
        };
        let err = |entries| build_docker_registry("r", None, &login(None, None), entries);
        assert_eq!(
            err(vec![bad("[1, 2]")]),
            Err(CreateError::DockerConfig("it is not a JSON object".into()))
        );
        let msg = err(vec![bad("hunter2 is not json")])
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("it is not JSON (error at line 1, column 1)"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        // Another key than .dockerconfigjson leaves the required one missing.
        let other = Entry {
            key: "config.json".into(),
            ..file.clone()
        };
        let msg = err(vec![other]).unwrap_err().to_string();
        assert!(
            msg.contains("data[.dockerconfigjson]: required for a Secret of type"),
            "{msg}"
        );
    }

    #[test]
    fn docker_registry_names_the_missing_flags() {
        /// Username, password, server, and the flags named as missing.
        type Case = (
            Option<&'static str>,
            Option<&'static str>,
            &'static str,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                None,
                Some("p"),
                DEFAULT_DOCKER_SERVER,
                &["--docker-username"],
            ),
            (
                Some("u"),
                None,
                DEFAULT_DOCKER_SERVER,
                &["--docker-password"],
            ),
            (
                Some("u"),
                Some(""),
                DEFAULT_DOCKER_SERVER,
                &["--docker-password"],
            ),
            (
                None,
                None,
                DEFAULT_DOCKER_SERVER,
                &["--docker-username", "--docker-password"],
            ),
            (Some("u"), Some("p"), "", &["--docker-server"]),
        ];
        for (user, pass, server, missing) in cases {
            let l = DockerLogin {
                server,
                ..login(*user, *pass)
            };
            assert_eq!(
                build_docker_registry("r", None, &l, vec![]),
                Err(CreateError::MissingDockerFlags(missing.to_vec())),
                "{user:?} {pass:?} {server:?}"
            );
        }
        let msg = build_docker_registry("r", None, &login(None, Some("hunter2")), vec![])
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("missing --docker-username: "), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn generic_secrets_are_kubectls() {
        let cases: Vec<(&str, Vec<Entry>, Vec<Entry>, Value)> = vec![
            (
                "",
                vec![lit("a", "b"), lit("k", "x=y=z")],
                vec![],
                serde_json::json!({
                    "kind": "Secret", "apiVersion": "v1",
                    "metadata": {"name": "s", "creationTimestamp": null},
                    "data": {"a": "Yg==", "k": "eD15PXo="},
                }),
            ),
            (
                "kubernetes.io/basic-auth",
                vec![lit("empty", "")],
                vec![lit("tls.crt", "b")],
                serde_json::json!({
                    "kind": "Secret", "apiVersion": "v1",
                    "metadata": {"name": "s", "creationTimestamp": null},
                    "data": {"empty": "", "tls.crt": "Yg=="},
                    "type": "kubernetes.io/basic-auth",
                }),
            ),
            (
                // No data at all: kubectl leaves `data` out.
                "",
                vec![],
                vec![],
                serde_json::json!({
                    "kind": "Secret", "apiVersion": "v1",
                    "metadata": {"name": "s", "creationTimestamp": null},
                }),
            ),
        ];
        for (type_, literals, files, want) in cases {
            let secret = build_generic("s", None, type_, literals, files).unwrap();
            assert_eq!(manifest(&secret).to_string(), want.to_string(), "{type_}");
        }
    }

    #[test]
    fn generic_errors_name_what_is_wrong() {
        let invalid = |errs: Result<Secret, CreateError>| match errs {
            Err(CreateError::Invalid(errs)) => errs
                .iter()
                .map(|e| e.field.clone())
                .collect::<Vec<String>>(),
            other => panic!("{other:?}"),
        };
        let build = |name: &str, ns: Option<&str>, type_: &str, lits: Vec<Entry>| {
            build_generic(name, ns, type_, lits, vec![])
        };
        assert_eq!(
            invalid(build("Bad_Name", None, "", vec![])),
            vec!["metadata.name".to_string()]
        );
        assert_eq!(invalid(build("", None, "", vec![])), vec!["metadata.name"]);
        assert_eq!(
            invalid(build("ok", Some("Bad_NS"), "", vec![])),
            vec!["metadata.namespace"]
        );
        assert_eq!(
            invalid(build(
                "ok",
                None,
                "kubernetes.io/tls",
                vec![lit("tls.crt", "x")]
            )),
            vec!["data[tls.key]"]
        );
        let msg = build("Bad_Name", None, "", vec![]).unwrap_err().to_string();
        assert!(
            msg.starts_with("the Secret is invalid: metadata.name: must be a DNS-1123 subdomain"),
            "{msg}"
        );
        match build("s", None, "", vec![lit("a b", "hunter2")]) {
            Err(CreateError::Key { source, why }) => {
                assert_eq!(source, "test");
                assert!(
                    why.contains("got \"a b\"") && !why.contains("hunter2"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            build_generic("s", None, "", vec![lit("a", "1")], vec![lit("a", "2")]),
            Err(CreateError::DuplicateKey {
                source: "test".into(),
                key: "a".into()
            })
        );
        let big = "x".repeat(1024 * 1024 + 1);
        assert_eq!(
            invalid(build("s", None, "", vec![lit("a", &big)])),
            vec!["data"]
        );
    }

    #[test]
    fn files_and_directories_are_read_as_kubectl_reads_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        std::fs::create_dir(d.join("certs")).unwrap();
        std::fs::write(d.join("certs/tls.key"), "k").unwrap();
        std::fs::write(d.join("certs/tls.crt"), "c").unwrap();
        std::fs::create_dir(d.join("certs/sub")).unwrap();
        let p = |rel: &str| d.join(rel).display().to_string();
        let keys = |specs: &[String], default: Option<&str>| {
            read_file_sources(specs, default)
                .unwrap()
                .into_iter()
                .map(|e| (e.key, String::from_utf8(e.value).unwrap()))
                .collect::<Vec<_>>()
        };
        let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(keys(&[p("config.json")], None), [kv("config.json", "{}")]);
        assert_eq!(
            keys(&[p("config.json")], Some(DOCKER_CONFIG_JSON_KEY)),
            [kv(".dockerconfigjson", "{}")]
        );
        assert_eq!(
            keys(&[format!("cfg={}", p("config.json"))], Some(".x")),
            [kv("cfg", "{}")]
        );
        // A directory: its regular files in name order, subdirectories skipped.
        assert_eq!(
            keys(&[p("certs")], None),
            [kv("tls.crt", "c"), kv("tls.key", "k")]
        );

        let missing = p("nope.json");
        assert_eq!(
            read_file_sources(std::slice::from_ref(&missing), None),
            Err(CreateError::Read {
                path: missing.clone(),
                cause: "No such file or directory".into()
            })
        );
        assert_eq!(
            read_file_sources(&[format!("k={}", p("certs"))], None),
            Err(CreateError::KeyForDirectory {
                spec: format!("k={}", p("certs"))
            })
        );
    }

    #[test]
    fn output_is_printed_as_kubectl_prints_it() {
        let secret =
            build_docker_registry("regcred", Some("ci"), &login(Some("u"), Some("p")), vec![])
                .unwrap();
        let object = manifest(&secret);
        assert_eq!(
            render(&object, CreateFormat::Yaml).unwrap(),
            format!(
                "apiVersion: v1\ndata:\n  .dockerconfigjson: {HUB_U_P}\nkind: Secret\nmetadata:\n  \
                 creationTimestamp: null\n  name: regcred\n  namespace: ci\n\
                 type: kubernetes.io/dockerconfigjson\n"
            )
        );
        assert_eq!(
            render(&object, CreateFormat::Json).unwrap(),
            format!(
                "{{\n    \"kind\": \"Secret\",\n    \"apiVersion\": \"v1\",\n    \"metadata\": {{\n        \
                 \"name\": \"regcred\",\n        \"namespace\": \"ci\",\n        \
                 \"creationTimestamp\": null\n    }},\n    \"data\": {{\n        \
                 \".dockerconfigjson\": \"{HUB_U_P}\"\n    }},\n    \
                 \"type\": \"kubernetes.io/dockerconfigjson\"\n}}\n"
            )
        );
        assert_eq!(
            render(&object, CreateFormat::Name).unwrap(),
            "secret/regcred\n"
        );
    }

    #[test]
    fn the_yaml_output_applies_as_the_same_secret() {
        let secret = build_generic(
            "s",
            Some("ns"),
            "",
            vec![lit("a", "b"), lit("bin", "\u{0}\u{ff}")],
            vec![],
        )
        .unwrap();
        let yaml = render(&manifest(&secret), CreateFormat::Yaml).unwrap();
        let parsed = shoal_protocol::manifest::parse(&yaml).unwrap();
        let mut want = secret.clone();
        want.default_fields();
        assert_eq!(parsed, vec![Resource::Secret(want)]);
    }

    #[test]
    fn an_existing_secret_reads_like_kubectl() {
        assert_eq!(
            already_exists("regcred"),
            "failed to create secret secrets \"regcred\" already exists"
        );
    }
}
