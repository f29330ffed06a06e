//! `DockerRuntime` against the real Docker engine, with the test image the suite builds.
//!
//! Every test names its objects with a random suffix, labels its containers
//! `shoal.test=<suffix>`, and removes what it made through a guard, also when it fails.
//! Without a reachable engine a test prints why and passes, except where `CI` is set: CI may
//! not skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use shoal_node::runtime::{
    ContainerInfo, ContainerSpec, ContainerState, DockerRuntime, ExecChunk, ExecSpec, LogOptions,
    MountSpec, PortSpec, Protocol, Runtime, RuntimeError, VolumeSpec,
};
use shoal_testnet::image::{ECHO_IMAGE, ECHO_PORT, ensure_echo_image};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TEST_LABEL: &str = "shoal.test";

/// The engine, or `None` (after saying why) when there is none and `CI` is not set.
async fn engine() -> Option<DockerRuntime> {
    match DockerRuntime::connect().await {
        Ok(rt) => Some(rt),
        Err(e @ RuntimeError::Unavailable { .. }) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set and the Docker engine is unreachable: {e}");
            }
            eprintln!("skipping: no Docker engine here ({e})");
            None
        }
        Err(e) => panic!("cannot connect to the Docker engine: {e}"),
    }
}

/// The engine and the test image, or `None` to skip.
async fn setup() -> Option<(DockerRuntime, Cleanup)> {
    let rt = engine().await?;
    ensure_echo_image().await.expect("building the test image");
    let cleanup = Cleanup::new();
    Some((rt, cleanup))
}

fn random_suffix() -> String {
    format!(
        "{:012x}",
        RandomState::new().hash_one(Instant::now()) & 0xffff_ffff_ffff
    )
}

/// Removes, when dropped, every container labelled with its id, then its volumes and networks.
/// Runs on its own thread with its own runtime: Drop cannot await, and may run while a test's
/// runtime is unwinding.
struct Cleanup {
    id: String,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Cleanup {
    fn new() -> Cleanup {
        Cleanup {
            id: random_suffix(),
            volumes: Vec::new(),
            networks: Vec::new(),
        }
    }

    fn name(&self, what: &str) -> String {
        format!("shoal-test-{what}-{}", self.id)
    }

    fn labels(&self) -> BTreeMap<String, String> {
        [(TEST_LABEL.to_string(), self.id.clone())].into()
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let id = self.id.clone();
        let volumes = std::mem::take(&mut self.volumes);
        let networks = std::mem::take(&mut self.networks);
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(rt) = DockerRuntime::connect().await else {
                    return;
                };
                for c in rt.list(&[(TEST_LABEL, &id)]).await.unwrap_or_default() {
                    let _ = rt.remove(&c.id).await;
                }
                for v in volumes {
                    let _ = rt.remove_volume(&v).await;
                }
                for n in networks {
                    let _ = rt.remove_network(&n).await;
                }
            });
        });
        let _ = done.join();
    }
}

fn echo_spec(cleanup: &Cleanup, name: &str) -> ContainerSpec {
    ContainerSpec {
        name: cleanup.name(name),
        image: ECHO_IMAGE.into(),
        labels: cleanup.labels(),
        ports: vec![PortSpec {
            container_port: ECHO_PORT,
            protocol: Protocol::Tcp,
            host_ip: Some("127.0.0.1".into()),
            host_port: 0,
        }],
        ..Default::default()
    }
}

/// A GET over a fresh connection: (status, body).
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

/// [`http_get`], retried until the server answers (it starts within milliseconds).
async fn get_when_up(port: u16, path: &str) -> (u16, String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match http_get(port, path).await {
            Ok(r) => return r,
            Err(e) if Instant::now() > deadline => panic!("GET {path} on :{port}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn host_port(info: &ContainerInfo) -> u16 {
    let b = info
        .host_port(ECHO_PORT, Protocol::Tcp)
        .unwrap_or_else(|| panic!("no host port for {ECHO_PORT}/tcp: {:?}", info.ports));
    assert_eq!(b.host_ip, "127.0.0.1");
    assert_ne!(b.host_port, 0);
    b.host_port
}

async fn wait_exited(rt: &DockerRuntime, id: &str) -> ContainerInfo {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = rt.inspect(id).await.unwrap();
        if matches!(info.state, ContainerState::Exited | ContainerState::Dead) {
            return info;
        }
        assert!(Instant::now() < deadline, "{id} still {:?}", info.state);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn read_logs(rt: &DockerRuntime, id: &str) -> String {
    let chunks: Vec<_> = rt
        .logs(id, &LogOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    let bytes: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn container_lifecycle() {
    let Some((rt, mut cleanup)) = setup().await else {
        return;
    };
    let network = cleanup.name("net");
    cleanup.networks.push(network.clone());
    rt.ensure_network(
        &network,
        &shoal_node::runtime::NetworkSpec::engine_default(),
    )
    .await
    .unwrap();
    rt.ensure_network(
        &network,
        &shoal_node::runtime::NetworkSpec::engine_default(),
    )
    .await
    .unwrap();

    let greeting = format!("hello-{}", cleanup.id);
    let mut spec = echo_spec(&cleanup, "life");
    spec.env = vec![("GREETING".into(), greeting.clone())];
    spec.hostname = Some("life-pod".into());
    spec.network = Some(network.clone());
    let id = rt.create(&spec).await.unwrap();
    assert_eq!(
        rt.inspect(&id).await.unwrap().state,
        ContainerState::Created
    );

    rt.start(&id).await.unwrap();
    let info = rt.inspect(&id).await.unwrap();
    assert_eq!(info.state, ContainerState::Running);
    assert_eq!(info.name, spec.name);
    assert_eq!(info.image, ECHO_IMAGE);
    assert_eq!(info.labels.get(TEST_LABEL), Some(&cleanup.id));
    assert_eq!(info.network.as_deref(), Some(network.as_str()));
    assert!(info.ip.is_some(), "an address on {network}");
    assert!(info.started_at.is_some());
    assert_eq!(info.exit_code, None);
    let port = host_port(&info);

    let (status, body) = get_when_up(port, "/").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["greeting"], greeting.as_str());
    assert_eq!(doc["pod"], "life-pod");

    let listed = rt.list(&[(TEST_LABEL, &cleanup.id)]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert!(
        rt.list(&[(TEST_LABEL, "no-such-run")])
            .await
            .unwrap()
            .is_empty()
    );

    let logs = read_logs(&rt, &id).await;
    assert!(logs.contains("shoal-echo listening on :8080"), "{logs}");
    assert!(logs.contains("GET / 200"), "{logs}");

    let out = rt
        .exec_output(&id, &["/shoal-echo".into(), "--version".into()])
        .await
        .unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("shoal-echo "));

    let stats = rt.stats(&id).await.unwrap();
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert!(stats.cpu_nanos > 0, "{stats:?}");

    let started = Instant::now();
    rt.stop(&id, Duration::from_secs(20)).await.unwrap();
    let info = rt.inspect(&id).await.unwrap();
    eprintln!("stop took {:?}", started.elapsed());
    assert_eq!(info.state, ContainerState::Exited);
    // 0, not 137: the echo server handled SIGTERM rather than being killed after the grace.
    assert_eq!(info.exit_code, Some(0));
    assert!(!info.oom_killed);
    assert!(info.finished_at.is_some());
    rt.stop(&id, Duration::from_secs(1)).await.unwrap();
    rt.kill(&id).await.unwrap();

    rt.remove(&id).await.unwrap();
    assert_eq!(
        rt.inspect(&id).await,
        Err(RuntimeError::NotFound { id: id.clone() })
    );
    assert!(rt.remove(&id).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn missing_image_is_named() {
    let Some((rt, cleanup)) = setup().await else {
        return;
    };
    let image = format!("shoal-test/absent:{}", cleanup.id);
    assert!(!rt.image_present(&image).await.unwrap());
    assert!(rt.image_present(ECHO_IMAGE).await.unwrap());
    let mut spec = echo_spec(&cleanup, "noimage");
    spec.image = image.clone();
    let err = rt.create(&spec).await.unwrap_err();
    assert_eq!(
        err,
        RuntimeError::ImageNotFound {
            image: image.clone()
        }
    );
    assert!(err.to_string().contains(&image));

    // A missing network is named too, not mistaken for a missing image: the engine of API
    // 1.41 notices it at start, newer ones at create.
    let mut spec = echo_spec(&cleanup, "nonet");
    let network = cleanup.name("absent-net");
    spec.network = Some(network.clone());
    let err = match rt.create(&spec).await {
        Ok(id) => rt.start(&id).await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(
        err,
        RuntimeError::NotFound {
            id: format!("network {network}")
        }
    );
}

#[tokio::test]
async fn memory_limit_oom_kills() {
    let Some((rt, cleanup)) = setup().await else {
        return;
    };
    let mut spec = echo_spec(&cleanup, "oom");
    spec.memory_limit = Some(32 << 20);
    spec.args = Some(vec!["--alloc-mb".into(), "256".into()]);
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    let info = wait_exited(&rt, &id).await;
    assert!(info.oom_killed, "{info:?}");
    assert_eq!(info.exit_code, Some(137));
}

#[tokio::test]
async fn named_volume_outlives_its_container() {
    let Some((rt, mut cleanup)) = setup().await else {
        return;
    };
    let volume = cleanup.name("vol");
    cleanup.volumes.push(volume.clone());
    let created = rt
        .create_volume(&VolumeSpec {
            name: volume.clone(),
            labels: cleanup.labels(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(created.driver, "local");
    let listed = rt.list_volumes(&[(TEST_LABEL, &cleanup.id)]).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, volume);

    let with_volume = |name: &str| {
        let mut spec = echo_spec(&cleanup, name);
        spec.mounts = vec![
            MountSpec::Volume {
                name: volume.clone(),
                container_path: "/data".into(),
                read_only: false,
            },
            MountSpec::Tmpfs {
                container_path: "/scratch".into(),
                size_bytes: Some(1 << 20),
            },
        ];
        spec
    };

    let first = rt.create(&with_volume("writer")).await.unwrap();
    rt.start(&first).await.unwrap();
    let port = host_port(&rt.inspect(&first).await.unwrap());
    let (status, _) = get_when_up(port, "/write?path=/data/sub/note.txt&data=kept%20safe").await;
    assert_eq!(status, 200);
    assert_eq!(
        get_when_up(port, "/write?path=/scratch/x&data=1").await.0,
        200
    );
    assert!(matches!(
        rt.remove_volume(&volume).await,
        Err(RuntimeError::Conflict { .. })
    ));
    rt.remove(&first).await.unwrap();

    let second = rt.create(&with_volume("reader")).await.unwrap();
    rt.start(&second).await.unwrap();
    let port = host_port(&rt.inspect(&second).await.unwrap());
    let (status, body) = get_when_up(port, "/file?path=/data/sub/note.txt").await;
    assert_eq!((status, body.as_str()), (200, "kept safe"));
    // The tmpfs did not survive; the volume did.
    assert_eq!(get_when_up(port, "/file?path=/scratch/x").await.0, 404);
    rt.remove(&second).await.unwrap();

    rt.remove_volume(&volume).await.unwrap();
    assert!(rt.remove_volume(&volume).await.unwrap_err().is_not_found());
    assert!(
        rt.list_volumes(&[(TEST_LABEL, &cleanup.id)])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn exits_kills_exec_and_following_logs() {
    let Some((rt, cleanup)) = setup().await else {
        return;
    };
    let spec = echo_spec(&cleanup, "main");
    let id = rt.create(&spec).await.unwrap();
    assert!(matches!(
        rt.create(&spec).await,
        Err(RuntimeError::Conflict { .. })
    ));
    rt.start(&id).await.unwrap();
    rt.start(&id).await.unwrap();
    let port = host_port(&rt.inspect(&id).await.unwrap());
    get_when_up(port, "/healthz").await;

    // A non-zero exec exit code, with its stderr.
    let out = rt
        .exec_output(
            &id,
            &["/shoal-echo".into(), "--exit-on-start".into(), "5".into()],
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exiting at start"));

    // Interactive exec: stdin in, stdout out, then the exit code.
    let mut session = rt
        .exec(
            &id,
            &ExecSpec {
                cmd: vec!["/shoal-echo".into(), "--cat".into()],
                tty: false,
                stdin: true,
            },
        )
        .await
        .unwrap();
    let mut input = session.input.take().unwrap();
    input.write_all(b"through stdin\n").await.unwrap();
    input.shutdown().await.unwrap();
    let mut echoed = Vec::new();
    let read = async {
        while let Some(chunk) = session.output.next().await {
            if let ExecChunk::Stdout(b) = chunk.unwrap() {
                echoed.extend_from_slice(&b);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("exec output ends when the process does");
    assert_eq!(echoed, b"through stdin\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(code) = rt.exec_exit_code(&session.exec_id).await.unwrap() {
            break code;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 0);

    // Following logs sees a line written after the stream opened. The request goes out at
    // the first poll, so read an old line first to know the stream is live.
    let mut follow = rt
        .logs(
            &id,
            &LogOptions {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        let mut asked = false;
        while let Some(chunk) = follow.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if !asked && seen.contains("listening on") {
                asked = true;
                get_when_up(port, "/followed").await;
            }
            if seen.contains("GET /followed 404") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "followed logs: {seen:?}");
    drop(follow);

    // An exit asked for over HTTP.
    assert_eq!(get_when_up(port, "/crash?code=7").await.0, 200);
    let info = wait_exited(&rt, &id).await;
    assert_eq!(info.exit_code, Some(7));
    assert!(!info.oom_killed);

    // A container that fails at once, and one killed.
    let mut failing = echo_spec(&cleanup, "failing");
    failing.args = Some(vec!["--exit-on-start".into(), "3".into()]);
    let failing = rt.create(&failing).await.unwrap();
    rt.start(&failing).await.unwrap();
    assert_eq!(wait_exited(&rt, &failing).await.exit_code, Some(3));
    assert!(read_logs(&rt, &failing).await.contains("exiting at start"));

    let killed = rt.create(&echo_spec(&cleanup, "killed")).await.unwrap();
    rt.start(&killed).await.unwrap();
    rt.kill(&killed).await.unwrap();
    assert_eq!(wait_exited(&rt, &killed).await.exit_code, Some(137));
    rt.kill(&killed).await.unwrap();

    assert_eq!(
        rt.list(&[(TEST_LABEL, &cleanup.id)]).await.unwrap().len(),
        3
    );
    assert!(
        rt.inspect(&cleanup.name("never-made"))
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn taken_host_port_is_a_conflict() {
    let Some((rt, cleanup)) = setup().await else {
        return;
    };
    // A port held by this process: the engine cannot bind it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut spec = echo_spec(&cleanup, "clash");
    spec.ports[0].host_port = port;
    let id = rt.create(&spec).await.unwrap();
    let err = rt.start(&id).await.unwrap_err();
    assert!(matches!(err, RuntimeError::Conflict { .. }), "{err:?}");
}
