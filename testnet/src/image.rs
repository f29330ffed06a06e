//! The test image `shoal-test/echo:latest`, built here because no registry exists on the test
//! machines.
//!
//! The image holds the `shoal-echo` binary of this workspace and the shared libraries `ldd`
//! says it needs, at the paths the dynamic loader looks for them, plus an empty `/tmp`: no
//! shell, no package manager. It is written as a `docker save` tarball in memory (one layer,
//! an image config, `manifest.json`) and loaded into the local engine (`docker load`) through
//! bollard. Layer entries carry fixed times and owners, so the same binary gives the same
//! image id.
//!
//! Used by the integration tests (through [`ensure_echo_image`], once per test process) and by
//! hand with `shoal-testnet image build`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use bollard::query_parameters::ImportImageOptions;
use futures_util::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The tag of the test image.
pub const ECHO_IMAGE: &str = "shoal-test/echo:latest";

/// The port `shoal-echo` listens on by default.
pub const ECHO_PORT: u16 = 8080;

/// Builds the test image from the current `shoal-echo` binary (building that if needed),
/// loads it into the local Docker engine and returns its tag. Always reimports: it takes
/// about a second, and a stale image would test stale code.
pub async fn build_echo_image() -> anyhow::Result<String> {
    let binary = tokio::task::spawn_blocking(|| crate::bin_path("shoal-echo"))
        .await
        .context("the build task failed")??;
    let tarball = tokio::task::spawn_blocking(move || image_tarball(&binary, ECHO_IMAGE))
        .await
        .context("the packing task failed")??;
    load(tarball).await?;
    Ok(ECHO_IMAGE.to_string())
}

/// [`build_echo_image`] once per process: tests call this first. Parallel test processes may
/// each load the image; loading the same image concurrently is harmless.
pub async fn ensure_echo_image() -> anyhow::Result<String> {
    static BUILT: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    BUILT.get_or_try_init(build_echo_image).await.cloned()
}

/// Whether the machine's engine holds `image` (`docker image inspect`).
pub fn image_present(image: &str) -> bool {
    std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn load(tarball: Vec<u8>) -> anyhow::Result<()> {
    let docker = bollard::Docker::connect_with_local_defaults()
        .context("cannot connect to the Docker engine")?
        .negotiate_version()
        .await
        .context("cannot reach the Docker engine: is dockerd running?")?;
    let options = ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let _progress: Vec<_> = docker
        .import_image(options, bollard::body_full(tarball.into()), None)
        .try_collect()
        .await
        .context("docker load of the test image failed")?;
    docker
        .inspect_image(ECHO_IMAGE)
        .await
        .with_context(|| format!("{ECHO_IMAGE} is not in the engine after docker load"))?;
    Ok(())
}

/// The files of the image: the binary at `/shoal-echo` and each library at the path `ldd`
/// names (its real contents, even where that path is a symlink on the host).
fn image_files(binary: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd (needed to find the test binary's libraries)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    // ldd exits non-zero for a static binary ("not a dynamic executable"): then there is
    // nothing to add.
    let libs = if out.status.success() {
        parse_ldd(&stdout)?
    } else {
        Vec::new()
    };
    let mut files = vec![("shoal-echo".to_string(), binary.to_path_buf())];
    for lib in libs {
        let inside = lib.trim_start_matches('/').to_string();
        if !files.iter().any(|(p, _)| *p == inside) {
            files.push((inside, PathBuf::from(lib)));
        }
    }
    Ok(files)
}

/// The absolute library paths in `ldd` output: `name => /path (0x..)` and the loader's own
/// `/lib64/ld-linux-x86-64.so.2 (0x..)` line; the vDSO has no file and is skipped.
fn parse_ldd(output: &str) -> anyhow::Result<Vec<String>> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            bail!("ldd cannot find a library of the test binary: {line}");
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(path.to_string());
        }
    }
    Ok(libs)
}

/// A `docker save` tarball of a one-layer image holding `binary` and its libraries, tagged
/// `tag`.
pub fn image_tarball(binary: &Path, tag: &str) -> anyhow::Result<Vec<u8>> {
    let files = image_files(binary)?;
    let layer = layer_tar(&files)?;
    let layer_digest = hex::encode(Sha256::digest(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": docker_arch(std::env::consts::ARCH),
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": ["/shoal-echo"],
            "ExposedPorts": {format!("{ECHO_PORT}/tcp"): {}},
            "Env": ["PATH=/"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "shoal-testnet image build"}],
    }))?;
    let config_digest = hex::encode(Sha256::digest(&config));
    let config_name = format!("{config_digest}.json");
    let layer_name = format!("{layer_digest}/layer.tar");
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }]))?;

    let mut outer = tar::Builder::new(Vec::new());
    append_dir(&mut outer, &format!("{layer_digest}/"), 0o755)?;
    append_bytes(&mut outer, &layer_name, 0o644, &layer)?;
    append_bytes(&mut outer, &config_name, 0o644, &config)?;
    append_bytes(&mut outer, "manifest.json", 0o644, &manifest)?;
    Ok(outer.into_inner()?)
}

/// The layer: each parent directory once, the files, and `/tmp` with the sticky bit.
fn layer_tar(files: &[(String, PathBuf)]) -> anyhow::Result<Vec<u8>> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (inside, _) in files {
        let mut prefix = String::new();
        let parts: Vec<&str> = inside.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            prefix.push_str(part);
            prefix.push('/');
            if !dirs.contains(&prefix) {
                dirs.push(prefix.clone());
            }
        }
    }
    for dir in &dirs {
        append_dir(&mut layer, dir, 0o755)?;
    }
    append_dir(&mut layer, "tmp/", 0o1777)?;
    for (inside, host) in files {
        // fs::read follows symlinks: the layer gets the real file under the name ldd used.
        let data =
            std::fs::read(host).with_context(|| format!("cannot read {}", host.display()))?;
        append_bytes(&mut layer, inside, 0o755, &data)?;
    }
    Ok(layer.into_inner()?)
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_dir(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> anyhow::Result<()> {
    let mut h = header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut h, path, std::io::empty())
        .with_context(|| format!("cannot add {path} to the image"))
}

fn append_bytes(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> anyhow::Result<()> {
    let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)
        .with_context(|| format!("cannot add {path} to the image"))
}

/// Rust's architecture names → the OCI/Docker ones.
fn docker_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd5d1f5000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f2a8b6a0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f2a8b4bf000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f2a8b72e000)
";

    #[test]
    fn ldd_output() {
        assert_eq!(
            parse_ldd(LDD).unwrap(),
            vec![
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("").unwrap().is_empty());
    }

    #[test]
    fn arch_names() {
        assert_eq!(docker_arch("x86_64"), "amd64");
        assert_eq!(docker_arch("aarch64"), "arm64");
    }

    #[test]
    fn tarball_layout() {
        // Any dynamically linked binary will do: this test's own executable.
        let me = std::env::current_exe().unwrap();
        let tarball = image_tarball(&me, "t/x:1").unwrap();
        let mut outer = tar::Archive::new(tarball.as_slice());
        let mut names = Vec::new();
        let mut manifest = None;
        let mut layer = None;
        for entry in outer.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            if name == "manifest.json" {
                manifest = Some(serde_json::from_slice::<serde_json::Value>(&data).unwrap());
            } else if name.ends_with("layer.tar") {
                layer = Some((name.clone(), data));
            }
            names.push(name);
        }
        let manifest = manifest.unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "t/x:1");
        let (layer_name, layer) = layer.unwrap();
        assert_eq!(manifest[0]["Layers"][0], layer_name.as_str());
        // The layer's name is its digest, which the config lists as the diff id.
        assert!(layer_name.starts_with(&hex::encode(Sha256::digest(&layer))));
        assert!(names.contains(&manifest[0]["Config"].as_str().unwrap().to_string()));

        let mut inner = tar::Archive::new(layer.as_slice());
        let mut files = Vec::new();
        for entry in inner.entries().unwrap() {
            let entry = entry.unwrap();
            let mode = entry.header().mode().unwrap();
            files.push((entry.path().unwrap().to_string_lossy().into_owned(), mode));
        }
        assert!(files.contains(&("shoal-echo".to_string(), 0o755)));
        assert!(files.contains(&("tmp/".to_string(), 0o1777)));
        assert!(
            files.iter().any(|(p, _)| p.contains("libc.so")),
            "libc is packed: {files:?}"
        );
        // Deterministic: the same input gives the same bytes (so the same image id).
        assert_eq!(image_tarball(&me, "t/x:1").unwrap(), tarball);
    }
}
