//! The node's identity and the cluster's: created once on an empty data directory, reused on
//! every restart.
//!
//! Files in the data directory (secrets with mode 0600):
//! - `cluster.json`: cluster id and creation time (not secret).
//! - `cluster.secret`: 32 random bytes, hex; gates peer admission and keys secret encryption.
//! - `node.key`: 32 random bytes, hex; the seed of the node's peer identity.
//! - `node.json`: the node's name.
//! - `admin.token`: the API's bearer token (256 random bits, hex).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything a node knows about who it is.
#[derive(Clone)]
pub struct Identity {
    pub cluster_id: String,
    pub cluster_secret: [u8; 32],
    pub node_key: [u8; 32],
    pub node_name: String,
    pub admin_token: String,
    /// True when this start created the identity of a new cluster (not when it joined one).
    pub created: bool,
    pub data_dir: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, even in debug output.
        f.debug_struct("Identity")
            .field("cluster_id", &self.cluster_id)
            .field("node_name", &self.node_name)
            .field("created", &self.created)
            .field("data_dir", &self.data_dir)
            .finish_non_exhaustive()
    }
}

/// Errors of identity files: each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    OtherCluster(String),
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterFile {
    cluster_id: String,
    created_at: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeFile {
    name: String,
}

pub const CLUSTER_FILE: &str = "cluster.json";
pub const SECRET_FILE: &str = "cluster.secret";
pub const NODE_KEY_FILE: &str = "node.key";
pub const NODE_FILE: &str = "node.json";
pub const TOKEN_FILE: &str = "admin.token";

/// Loads the identity from `data_dir`, or creates a new cluster there when the directory is
/// empty (or absent). `node_name` (when not empty) overrides the stored name.
pub fn load_or_init(data_dir: &Path, node_name: &str) -> Result<Identity, IdentityError> {
    load_or_join(data_dir, node_name, None)
}

/// Like [`load_or_init`], but an empty data directory with a join token becomes a node of the
/// token's cluster (same cluster id, secret and admin token; a new node key). On a directory
/// that already holds an identity, a token of another cluster (or with another secret) is an
/// error: a node never switches clusters silently.
pub fn load_or_join(
    data_dir: &Path,
    node_name: &str,
    join: Option<&crate::join::JoinToken>,
) -> Result<Identity, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io {
            path: path.clone(),
            source,
        }
    };
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    set_mode(data_dir, 0o700).map_err(io(data_dir))?;
    let cluster_path = data_dir.join(CLUSTER_FILE);
    if !cluster_path.exists() {
        return init(data_dir, node_name, join);
    }

    let cluster: ClusterFile = read_json(&cluster_path)?;
    let cluster_secret = read_hex32(&data_dir.join(SECRET_FILE))?;
    let node_key = read_hex32(&data_dir.join(NODE_KEY_FILE))?;
    let node_path = data_dir.join(NODE_FILE);
    let mut node: NodeFile = read_json(&node_path)?;
    if !node_name.is_empty() && node.name != node_name {
        node.name = node_name.to_string();
        write_file(&node_path, &to_json(&node)?, 0o644)?;
    }
    let token_path = data_dir.join(TOKEN_FILE);
    let admin_token = fs::read_to_string(&token_path)
        .map_err(io(&token_path))?
        .trim()
        .to_string();
    if admin_token.len() < 32 {
        return Err(IdentityError::Invalid {
            path: token_path,
            message: "the admin token is shorter than 128 bits; write a new random token \
                      there (e.g. `openssl rand -hex 32`) and restart"
                .into(),
        });
    }
    if let Some(t) = join
        && (t.cluster_id != cluster.cluster_id || t.cluster_secret != cluster_secret)
    {
        let what = if t.cluster_id != cluster.cluster_id {
            format!("is of cluster {}", t.cluster_id)
        } else {
            "holds another cluster secret".to_string()
        };
        return Err(IdentityError::OtherCluster(format!(
            "the join token (--token) {what}, but the data directory {} already belongs to \
             cluster {}; a node never switches clusters: start it without --token, or use \
             an empty --data-dir to join the other cluster",
            data_dir.display(),
            cluster.cluster_id
        )));
    }
    Ok(Identity {
        cluster_id: cluster.cluster_id,
        cluster_secret,
        node_key,
        node_name: node.name,
        admin_token,
        created: false,
        data_dir: data_dir.to_path_buf(),
    })
}

fn init(
    data_dir: &Path,
    node_name: &str,
    join: Option<&crate::join::JoinToken>,
) -> Result<Identity, IdentityError> {
    let (cluster_id, cluster_secret, admin_token) = match join {
        Some(t) => (
            t.cluster_id.clone(),
            t.cluster_secret,
            t.admin_token.clone(),
        ),
        None => (
            hex::encode(random::<16>()?),
            random::<32>()?,
            hex::encode(random::<32>()?),
        ),
    };
    let node_key = random::<32>()?;
    let name = if node_name.is_empty() {
        crate::config::host_node_name()
    } else {
        node_name.to_string()
    };
    // Secrets first and the cluster file last: a start interrupted half-way leaves no
    // cluster.json, so the next start initializes again instead of loading half an identity.
    write_file(
        &data_dir.join(SECRET_FILE),
        hex::encode(cluster_secret).as_bytes(),
        0o600,
    )?;
    write_file(
        &data_dir.join(NODE_KEY_FILE),
        hex::encode(node_key).as_bytes(),
        0o600,
    )?;
    write_file(&data_dir.join(TOKEN_FILE), admin_token.as_bytes(), 0o600)?;
    write_file(
        &data_dir.join(NODE_FILE),
        &to_json(&NodeFile { name: name.clone() })?,
        0o644,
    )?;
    write_file(
        &data_dir.join(CLUSTER_FILE),
        &to_json(&ClusterFile {
            cluster_id: cluster_id.clone(),
            created_at: crate::time::rfc3339_now(),
        })?,
        0o644,
    )?;
    Ok(Identity {
        cluster_id,
        cluster_secret,
        node_key,
        node_name: name,
        admin_token,
        created: join.is_none(),
        data_dir: data_dir.to_path_buf(),
    })
}

fn random<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| IdentityError::Random(e.to_string()))?;
    Ok(buf)
}

fn to_json<T: Serialize>(v: &T) -> Result<Vec<u8>, IdentityError> {
    serde_json::to_vec_pretty(v).map_err(|e| IdentityError::Invalid {
        path: PathBuf::new(),
        message: e.to_string(),
    })
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| IdentityError::Invalid {
        path: path.to_path_buf(),
        message: format!(
            "cannot be read ({e}); restore it from a backup of the data directory, \
             or start with an empty data directory to create a new cluster"
        ),
    })
}

fn read_hex32(path: &Path) -> Result<[u8; 32], IdentityError> {
    let text = fs::read_to_string(path).map_err(|source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| IdentityError::Invalid {
        path: path.to_path_buf(),
        message: "must hold 64 hexadecimal digits; restore it from a backup of the data \
                  directory"
            .into(),
    })?;
    Ok(out)
}

/// Writes a file atomically (temp file, fsync, rename) with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let io = |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(mode);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    set_mode(&tmp, mode).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn init_then_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let a = load_or_init(&d, "n1").unwrap();
        assert!(a.created);
        assert_eq!(a.admin_token.len(), 64, "256 bits in hex");
        let b = load_or_init(&d, "").unwrap();
        assert!(!b.created);
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_eq!(a.cluster_secret, b.cluster_secret);
        assert_eq!(a.node_key, b.node_key);
        assert_eq!(a.admin_token, b.admin_token);
        assert_eq!(b.node_name, "n1");
        for f in [SECRET_FILE, NODE_KEY_FILE, TOKEN_FILE] {
            let mode = fs::metadata(d.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }

    #[test]
    fn damaged_secret_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        load_or_init(dir.path(), "n1").unwrap();
        fs::write(dir.path().join(SECRET_FILE), "zz").unwrap();
        let err = load_or_init(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("cluster.secret"), "{err}");
        assert!(err.contains("64 hexadecimal"), "{err}");
    }

    #[test]
    fn damaged_cluster_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        load_or_init(dir.path(), "n1").unwrap();
        fs::write(dir.path().join(CLUSTER_FILE), "{not json").unwrap();
        let err = load_or_init(dir.path(), "").unwrap_err().to_string();
        assert!(err.contains("cluster.json"), "{err}");
    }

    #[test]
    fn join_takes_the_cluster_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_init(&dir.path().join("a"), "n1").unwrap();
        let token = crate::join::JoinToken {
            cluster_id: first.cluster_id.clone(),
            cluster_secret: first.cluster_secret,
            admin_token: first.admin_token.clone(),
            addrs: vec![],
        };
        let d = dir.path().join("b");
        let joined = load_or_join(&d, "n2", Some(&token)).unwrap();
        assert!(!joined.created);
        assert_eq!(joined.cluster_id, first.cluster_id);
        assert_eq!(joined.cluster_secret, first.cluster_secret);
        assert_eq!(joined.admin_token, first.admin_token);
        assert_ne!(joined.node_key, first.node_key);
        // Again with the same token, or without: fine.
        load_or_join(&d, "", Some(&token)).unwrap();
        load_or_join(&d, "", None).unwrap();
        // Another cluster, or another secret: refused, naming --token.
        let mut other = token.clone();
        other.cluster_id = "ffff".into();
        let err = load_or_join(&d, "", Some(&other)).unwrap_err().to_string();
        assert!(err.contains("--token") && err.contains("ffff"), "{err}");
        let mut other = token.clone();
        other.cluster_secret = [1; 32];
        let err = load_or_join(&d, "", Some(&other)).unwrap_err().to_string();
        assert!(err.contains("another cluster secret"), "{err}");
    }
}
