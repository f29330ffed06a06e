//! The registry fixture ([`shoal_testnet::Registry`]): a real `docker-registry` that the
//! machine's engine pushes to and pulls from, with and without auth, and that counts the blobs
//! a pull downloads; and one on a test LAN's bridge address, pushed to through its loopback
//! side door.
//!
//! Without a Docker engine or without `docker-registry` and `htpasswd` these tests say so and
//! pass, except where `CI` is set: there they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use shoal_testnet::image::{ECHO_IMAGE, image_present};
use shoal_testnet::{Registry, RegistryOptions, registry};

/// Where the copies of the test image go.
const REPO: &str = "shoal-test/echo";

fn ready() -> bool {
    shoal_testnet::docker_ready() && registry::ready()
}

/// A string no other test run uses.
fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{t}", std::process::id())
}

/// `docker [--config DIR] ARGS`.
fn docker(config: Option<&Path>, args: &[&str]) -> Output {
    let mut cmd = Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    cmd.args(args).stdin(Stdio::null()).output().unwrap()
}

fn docker_ok(config: Option<&Path>, args: &[&str]) -> String {
    let out = docker(config, args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn image_id(image: &str) -> String {
    docker_ok(None, &["image", "inspect", "--format", "{{.Id}}", image])
}

/// Local image tags removed when dropped, even when the test fails.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("docker")
                .args(["rmi", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A copy of the test image under a tag of its own, with a label that gives it an id of its
/// own: the engine downloads only what it lacks, and it would lack nothing of the test image
/// itself (its one layer is shared, so a pull of the copy downloads its config alone).
fn unique_copy(nonce: &str, images: &mut Images) -> String {
    let tag = format!("shoal-test/registry-copy:{nonce}");
    let container = docker_ok(None, &["create", ECHO_IMAGE]);
    let label = format!("LABEL shoal.test.registry={nonce}");
    let committed = docker(None, &["commit", "--change", &label, &container, &tag]);
    docker_ok(None, &["rm", &container]);
    assert!(
        committed.status.success(),
        "docker commit: {}",
        String::from_utf8_lossy(&committed.stderr)
    );
    images.0.push(tag.clone());
    tag
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

#[test]
fn push_then_pull_counts_the_downloads() {
    if !ready() {
        return;
    }
    let reg = Registry::start(RegistryOptions::default()).unwrap();
    assert!(reg.addr().ip().is_loopback(), "{}", reg.addr());
    assert_eq!(reg.host(), reg.addr().to_string());
    let n = nonce();
    let mut images = Images(Vec::new());
    let copy = unique_copy(&n, &mut images);
    let id = image_id(&copy);

    let reference = reg.push(&copy, &format!("{REPO}:{n}")).unwrap();
    assert_eq!(reference, format!("{}/{REPO}:{n}", reg.host()));
    images.0.push(reference.clone());
    assert!(
        !image_present(&reference),
        "push left its tag {reference} behind"
    );
    assert_eq!(reg.blob_gets(REPO).unwrap(), 0, "a push GETs no blob");

    // The engine must lack the image to download it.
    docker_ok(None, &["rmi", &copy]);
    let manifests = reg.manifest_requests().unwrap();
    docker_ok(None, &["pull", &reference]);
    assert_eq!(
        image_id(&reference),
        id,
        "the pulled image is the pushed one"
    );
    let downloads = reg.blob_gets(REPO).unwrap();
    assert!(
        downloads >= 1,
        "the pull downloaded nothing; log:\n{}",
        reg.log_tail()
    );
    assert!(reg.manifest_requests().unwrap() > manifests);
    assert_eq!(reg.blob_gets("shoal-test/other").unwrap(), 0);

    // A pull of an image the engine holds checks the manifest and downloads nothing.
    docker_ok(None, &["pull", &reference]);
    assert_eq!(reg.blob_gets(REPO).unwrap(), downloads);
}

#[test]
fn auth_registry_serves_only_who_logs_in() {
    if !ready() {
        return;
    }
    let n = nonce();
    let password = format!("pw-{n}");
    let reg = Registry::start(RegistryOptions {
        addr: None,
        auth: Some(("shoal".into(), password.clone())),
    })
    .unwrap();
    assert_eq!(reg.credentials(), Some(("shoal", password.as_str())));
    let v2 = format!("http://{}/v2/", reg.addr());
    assert_eq!(http().get(&v2).send().unwrap().status().as_u16(), 401);
    let wrong = http().get(&v2).basic_auth("shoal", Some("nope")).send();
    assert_eq!(wrong.unwrap().status().as_u16(), 401);
    let right = http().get(&v2).basic_auth("shoal", Some(&password)).send();
    assert_eq!(right.unwrap().status().as_u16(), 200);

    let mut images = Images(Vec::new());
    let copy = unique_copy(&n, &mut images);
    let id = image_id(&copy);
    let reference = reg.push(&copy, &format!("{REPO}:{n}")).unwrap();
    images.0.push(reference.clone());
    docker_ok(None, &["rmi", &copy]);

    // No login: an empty client config, whatever the machine's ~/.docker holds.
    let anonymous = tempfile::tempdir().unwrap();
    let out = docker(Some(anonymous.path()), &["pull", &reference]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a pull without login worked");
    assert!(
        stderr.contains("no basic auth credentials") || stderr.contains("unauthorized"),
        "unexpected error: {stderr}"
    );
    assert!(!image_present(&reference));
    assert_eq!(reg.blob_gets(REPO).unwrap(), 0);

    let login = reg.login_config().unwrap();
    docker_ok(Some(login.path()), &["pull", &reference]);
    assert_eq!(image_id(&reference), id);
    assert!(reg.blob_gets(REPO).unwrap() >= 1);
}

#[test]
fn registry_on_a_lan_address_takes_pushes_through_its_side_door() {
    if !ready() {
        return;
    }
    if let Err(e) = shoal_testnet::hosts::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and test LANs cannot be made: {e:#}"
        );
        eprintln!("skipping: {e:#}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let id = shoal_testnet::cluster::new_id();
    let lan = shoal_testnet::hosts::Lan::create(&id, dir.path(), true).unwrap();
    let gateway = shoal_testnet::hosts::gateway_addr(lan.octet());
    let port = shoal_testnet::free_port(&gateway.to_string()).unwrap();
    let addr = SocketAddr::new(gateway.into(), port);
    let reg = Registry::start(RegistryOptions {
        addr: Some(addr),
        auth: None,
    })
    .unwrap();
    assert_eq!(reg.host(), addr.to_string());

    let reference = reg.push(ECHO_IMAGE, &format!("{REPO}:lan")).unwrap();
    assert_eq!(reference, format!("{addr}/{REPO}:lan"));
    assert_eq!(
        reg.manifest_requests().unwrap(),
        0,
        "the push went to the LAN address, not the side door"
    );

    let tags: serde_json::Value = http()
        .get(format!("http://{addr}/v2/{REPO}/tags/list"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tags["tags"], serde_json::json!(["lan"]), "{tags}");
    let manifest = http()
        .get(format!("http://{addr}/v2/{REPO}/manifests/lan"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .unwrap();
    assert_eq!(manifest.status().as_u16(), 200);
    assert_eq!(reg.manifest_requests().unwrap(), 1);

    // Refused: a registry anywhere but loopback or a test LAN.
    let outside = Registry::start(RegistryOptions {
        addr: Some("0.0.0.0:5000".parse().unwrap()),
        auth: None,
    });
    assert!(outside.is_err());
    drop(reg);
    drop(lan);
}
