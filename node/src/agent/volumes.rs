//! Pod volumes: where each one lives on the node (pure: [`layout`], [`projected_files`]) and
//! the file-system work that makes them exist ([`sync_projected`], [`prepare`]).
//!
//! Layout of a pod directory, `<data_dir>/pods/<ns>_<pod>/`:
//! - `volumes/<volume>/`: configMap and secret files, emptyDir (disk) contents;
//! - `agent.json`: what the agent must remember across restarts of `shoald` (restart counts,
//!   back-off, last termination, start time, condition times).
//!
//! The directory goes with the pod. PersistentVolumeClaims are Docker named volumes
//! `shoal-pvc-<ns>-<claim>` that are never removed with a pod; nfs volumes are named volumes
//! with the local driver's nfs options.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use shoal_protocol::kinds::{HostPathType, KeyToPath, StorageMedium, VolumeSource};

use super::spec::{ConfigSources, SourceKind, labels, safe_relative, sanitize};
use crate::pods::DesiredPod;
use crate::runtime::{Runtime, RuntimeError, VolumeSpec};

/// Where a volume's data lives on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backing {
    /// A directory of the pod directory (configMap, secret, emptyDir).
    Dir(PathBuf),
    /// A host path (hostPath).
    HostPath(PathBuf),
    /// A Docker named volume, created before use (persistentVolumeClaim, nfs).
    Named(VolumeSpec),
    /// emptyDir with medium Memory.
    Tmpfs { size_bytes: Option<u64> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaidOut {
    pub backing: Backing,
    /// Whether every mount of it is read-only (configMap, secret, read-only claims).
    pub read_only: bool,
}

/// Every volume of a pod, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeLayout {
    pub volumes: BTreeMap<String, LaidOut>,
}

/// The volumes directory of a pod directory.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// The named volume of a claim. Deliberately without the node or pod: every pod of the claim
/// on this engine shares it, and it outlives them.
pub fn pvc_volume_name(namespace: &str, claim: &str) -> String {
    format!("shoal-pvc-{}-{}", sanitize(namespace), sanitize(claim))
}

/// Where each volume of `pod` lives. Errors name the volume.
pub fn layout(pod: &DesiredPod, pod_dir: &Path, cluster_id: &str) -> Result<VolumeLayout, String> {
    let ns = pod.slot.namespace.as_str();
    let base = volumes_dir(pod_dir);
    let mut volumes = BTreeMap::new();
    for v in &pod.spec.volumes {
        if !safe_relative(&v.name) {
            return Err(format!("volume name {:?} is not a plain name", v.name));
        }
        let dir = base.join(&v.name);
        let laid = if v.sources().is_empty() {
            // A volume without a source is an emptyDir, as in Kubernetes.
            LaidOut {
                backing: Backing::Dir(dir),
                read_only: false,
            }
        } else {
            match v.source() {
                None => {
                    return Err(format!(
                        "volume \"{}\" must have exactly one source",
                        v.name
                    ));
                }
                Some(VolumeSource::ConfigMap(_)) | Some(VolumeSource::Secret(_)) => LaidOut {
                    backing: Backing::Dir(dir),
                    read_only: true,
                },
                Some(VolumeSource::EmptyDir(e)) => LaidOut {
                    backing: match e.medium {
                        Some(StorageMedium::Memory) => Backing::Tmpfs {
                            size_bytes: e
                                .size_limit
                                .as_ref()
                                .and_then(|q| u64::try_from(q.bytes()).ok())
                                .filter(|b| *b > 0),
                        },
                        None => Backing::Dir(dir),
                    },
                    read_only: false,
                },
                Some(VolumeSource::HostPath(h)) => {
                    if !Path::new(&h.path).is_absolute() {
                        return Err(format!(
                            "volume \"{}\": hostPath {:?} must be absolute",
                            v.name, h.path
                        ));
                    }
                    LaidOut {
                        backing: Backing::HostPath(PathBuf::from(&h.path)),
                        read_only: false,
                    }
                }
                Some(VolumeSource::PersistentVolumeClaim(c)) => LaidOut {
                    backing: Backing::Named(VolumeSpec {
                        name: pvc_volume_name(ns, &c.claim_name),
                        driver: None,
                        driver_opts: BTreeMap::new(),
                        labels: [
                            (labels::CLUSTER.to_string(), cluster_id.to_string()),
                            (labels::PVC.to_string(), format!("{ns}/{}", c.claim_name)),
                        ]
                        .into(),
                    }),
                    read_only: c.read_only,
                },
                Some(VolumeSource::Nfs(n)) => LaidOut {
                    backing: Backing::Named(nfs_volume(
                        cluster_id,
                        &n.server,
                        &n.path,
                        n.read_only,
                    )),
                    read_only: n.read_only,
                },
            }
        };
        volumes.insert(v.name.clone(), laid);
    }
    Ok(VolumeLayout { volumes })
}

/// A named volume of Docker's local driver that mounts `server:path` over NFS. Named by a hash
/// of its options: pods that mount the same export share it.
pub fn nfs_volume(cluster_id: &str, server: &str, path: &str, read_only: bool) -> VolumeSpec {
    use sha2::{Digest, Sha256};
    let o = if read_only {
        format!("addr={server},ro")
    } else {
        format!("addr={server}")
    };
    let device = format!(":{path}");
    let digest = Sha256::digest(format!("{o}\n{device}").as_bytes());
    VolumeSpec {
        name: format!("shoal-nfs-{}", hex::encode(&digest[..6])),
        driver: Some("local".into()),
        driver_opts: [
            ("type".to_string(), "nfs".to_string()),
            ("o".to_string(), o),
            ("device".to_string(), device),
        ]
        .into(),
        labels: [(labels::CLUSTER.to_string(), cluster_id.to_string())].into(),
    }
}

/// A file of a configMap or secret volume: contents and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projected {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// The serde default of `defaultMode` (0644): indistinguishable from an explicit 0644, so a
/// secret volume with it gets 0400, the mode shoal promises for secrets.
const SERDE_DEFAULT_MODE: i32 = 0o644;
const SECRET_DEFAULT_MODE: u32 = 0o400;

/// The files of every configMap and secret volume of `pod`, by volume name, as relative paths.
/// `Ok(None)` for a volume whose optional source is missing (an empty directory).
pub fn projected_files(
    pod: &DesiredPod,
    sources: &ConfigSources,
) -> Result<BTreeMap<String, BTreeMap<String, Projected>>, String> {
    let ns = pod.slot.namespace.as_str();
    let mut out = BTreeMap::new();
    for v in &pod.spec.volumes {
        let (kind, name, items, default_mode, optional) = match v.source() {
            Some(VolumeSource::ConfigMap(s)) => (
                SourceKind::ConfigMap,
                &s.name,
                &s.items,
                mode_bits(s.default_mode),
                s.optional,
            ),
            Some(VolumeSource::Secret(s)) => (
                SourceKind::Secret,
                &s.secret_name,
                &s.items,
                if s.default_mode == SERDE_DEFAULT_MODE {
                    SECRET_DEFAULT_MODE
                } else {
                    mode_bits(s.default_mode)
                },
                s.optional,
            ),
            _ => continue,
        };
        let files = match sources.get(kind, ns, name) {
            None if optional => BTreeMap::new(),
            None => {
                return Err(format!(
                    "volume \"{}\": {} \"{name}\" not found",
                    v.name,
                    kind.lower()
                ));
            }
            Some(data) => project(&v.name, kind, name, data, items, default_mode, optional)?,
        };
        out.insert(v.name.clone(), files);
    }
    Ok(out)
}

fn mode_bits(mode: i32) -> u32 {
    u32::try_from(mode).unwrap_or(0o644) & 0o777
}

fn project(
    volume: &str,
    kind: SourceKind,
    name: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[KeyToPath],
    default_mode: u32,
    optional: bool,
) -> Result<BTreeMap<String, Projected>, String> {
    let mut files = BTreeMap::new();
    if items.is_empty() {
        for (k, v) in data {
            if safe_relative(k) && !k.contains('/') {
                files.insert(
                    k.clone(),
                    Projected {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        return Ok(files);
    }
    for item in items {
        let Some(v) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(format!(
                "volume \"{volume}\": couldn't find key {} in {} {name}",
                item.key,
                kind.title()
            ));
        };
        if !safe_relative(&item.path) {
            return Err(format!(
                "volume \"{volume}\": item path {:?} must be relative without \"..\"",
                item.path
            ));
        }
        files.insert(
            item.path.clone(),
            Projected {
                data: v.clone(),
                mode: item.mode.map_or(default_mode, mode_bits),
            },
        );
    }
    Ok(files)
}

/// Makes `dir` hold exactly `files`. A changed file is written to a temporary file in its own
/// directory, then renamed over the old one, so that a container that bind-mounts `dir` sees
/// either the old or the new contents, never a partial file. Returns whether anything changed.
pub fn sync_projected(dir: &Path, files: &BTreeMap<String, Projected>) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mut changed = false;
    for (rel, want) in files {
        let path = dir.join(rel);
        let same = match (std::fs::read(&path), std::fs::metadata(&path)) {
            (Ok(have), Ok(meta)) => {
                have == want.data && meta.permissions().mode() & 0o777 == want.mode
            }
            _ => false,
        };
        if same {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!("..tmp.{file_name}"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&want.data)?;
            f.sync_all()?;
        }
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(want.mode))?;
        std::fs::rename(&tmp, &path)?;
        changed = true;
    }
    // Files of keys that are gone leave (top-level and nested).
    for entry in walk(dir)? {
        let rel = entry
            .strip_prefix(dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !files.contains_key(&rel) {
            std::fs::remove_file(&entry)?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Every regular file under `dir`, recursively.
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let ty = entry.file_type()?;
            if ty.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.path());
            }
        }
    }
    Ok(out)
}

/// Why a pod's volumes could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("volume \"{volume}\": {source}")]
    Io {
        volume: String,
        #[source]
        source: std::io::Error,
    },
    #[error("volume \"{volume}\": {source}")]
    Runtime {
        volume: String,
        #[source]
        source: RuntimeError,
    },
}

/// Makes every non-projected volume of `pod` exist before its containers are created:
/// emptyDir directories, hostPath `*OrCreate` paths, named volumes (claims, nfs).
pub async fn prepare(
    rt: &dyn Runtime,
    pod: &DesiredPod,
    layout: &VolumeLayout,
) -> Result<(), VolumeError> {
    for v in &pod.spec.volumes {
        let Some(laid) = layout.volumes.get(&v.name) else {
            continue;
        };
        let io = |source| VolumeError::Io {
            volume: v.name.clone(),
            source,
        };
        match &laid.backing {
            Backing::Dir(dir) => std::fs::create_dir_all(dir).map_err(io)?,
            Backing::HostPath(path) => match v.host_path.as_ref().and_then(|h| h.type_) {
                Some(HostPathType::DirectoryOrCreate) => {
                    std::fs::create_dir_all(path).map_err(io)?
                }
                Some(HostPathType::FileOrCreate) => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)
                        .map_err(io)?;
                }
                _ => {}
            },
            Backing::Named(spec) => {
                rt.create_volume(spec)
                    .await
                    .map_err(|source| VolumeError::Runtime {
                        volume: v.name.clone(),
                        source,
                    })?;
            }
            Backing::Tmpfs { .. } => {}
        }
    }
    Ok(())
}
