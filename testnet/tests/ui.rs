//! The web UI as a person uses it, in headless Chromium (Debian's `chromium`, driven over
//! WebDriver by `chromedriver` through fantoccini) against a real 3-node testnet and the real
//! Docker engine: a wrong token is refused, the right one logs in and the overview shows the
//! three nodes, a Deployment pasted into the apply form starts, the pods page (updating itself)
//! shows its pods running and ready, and a pod's logs page shows what the test image wrote
//! (also through the UI of the node that runs the pod). Then the Deployment is scaled down and
//! deleted after the confirmation page.
//!
//! Without chromium, chromedriver or a Docker engine this test says so and passes, except
//! where `CI` is set: there a missing one fails it (`.ci/run` installs the browser).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use shoal_testnet::{Cluster, Testnet, free_port};

const IMAGE: &str = "shoal-test/echo:latest";

/// The Deployment the test pastes into the apply form.
const MANIFEST: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: ui-web
spec:
  replicas: 2
  selector:
    matchLabels:
      app: ui-web
  template:
    metadata:
      labels:
        app: ui-web
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: shoal-test/echo:latest
";

/// What the test image writes when it starts.
const ECHO_LINE: &str = "shoal-echo listening on :";

/// A program on `PATH`, if there.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Chromium and chromedriver, or None (a failure under CI).
fn browser() -> Option<(PathBuf, PathBuf)> {
    let chromium = which("chromium").or_else(|| which("chromium-browser"));
    let driver = which("chromedriver");
    match (chromium, driver) {
        (Some(c), Some(d)) => Some((c, d)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set and chromium or chromedriver is missing (apt-get install chromium \
                 chromium-driver)"
            );
            eprintln!("skipping: chromium or chromedriver is not installed");
            None
        }
    }
}

/// A chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
    _log: tempfile::NamedTempFile,
}

impl Driver {
    fn start(path: &PathBuf) -> anyhow::Result<Driver> {
        let port = free_port("127.0.0.1")?;
        let log = tempfile::NamedTempFile::new()?;
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                bail!("chromedriver did not listen on port {port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn connect(driver: &Driver, chromium: &std::path::Path) -> anyhow::Result<Client> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
            ],
        },
    });
    let caps = match caps {
        Value::Object(m) => m,
        _ => unreachable!(),
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .context("cannot open a chromium session through chromedriver")
}

/// Polls `check` every 300 ms until it returns `Some`, or fails after `timeout` with the
/// last error.
async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last error: {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> anyhow::Result<String> {
    Ok(c.find(Locator::Css(css)).await?.text().await?)
}

async fn path_of(c: &Client) -> anyhow::Result<String> {
    Ok(c.current_url().await?.path().to_string())
}

/// Logs in at `base` with `token` and waits for the overview.
async fn log_in(c: &Client, base: &str, token: &str) -> anyhow::Result<()> {
    c.goto(&format!("{base}/login")).await?;
    let field = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("token"))
        .await?;
    field.send_keys(token).await?;
    c.find(Locator::Id("login-button")).await?.click().await?;
    eventually(
        Duration::from_secs(10),
        "the overview after login",
        || async {
            Ok(
                (path_of(c).await? == "/" && c.find(Locator::Id("nodes")).await.is_ok())
                    .then_some(()),
            )
        },
    )
    .await
}

/// The rows of the pods table as the page shows them now: name → (status, ready, node).
async fn pod_rows(c: &Client) -> anyhow::Result<BTreeMap<String, (String, String, String)>> {
    // One script call reads the whole table, so a refresh of the region in between cannot
    // leave half-read rows.
    let rows = c
        .execute(
            "return Array.from(document.querySelectorAll('#pods tbody tr')).map(function (r) {
               return [r.dataset.name, r.querySelector('.pod-status').textContent.trim(),
                       r.querySelector('.pod-ready').textContent.trim(),
                       r.querySelector('.pod-node').textContent.trim()];
             });",
            vec![],
        )
        .await?;
    let mut out = BTreeMap::new();
    for r in rows.as_array().cloned().unwrap_or_default() {
        let s = |i: usize| r[i].as_str().unwrap_or_default().to_string();
        out.insert(s(0), (s(1), s(2), s(3)));
    }
    Ok(out)
}

async fn drive(c: &Client, cluster: &Cluster) -> anyhow::Result<()> {
    let urls: BTreeMap<String, String> = cluster
        .nodes()
        .iter()
        .map(|n| (n.opts.name.clone(), n.url()))
        .collect();
    let first = cluster.nodes()[0].opts.name.clone();
    let base = urls[&first].clone();
    let token = cluster.admin_token().to_string();

    // Without a cookie, the UI sends the browser to the login page.
    c.goto(&format!("{base}/")).await?;
    ensure!(path_of(c).await? == "/login", "not sent to /login");

    // A wrong token is refused: the login page again, with a message, and no cookie.
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("token"))
        .await?
        .send_keys("0000000000000000000000000000000000000000000000000000000000000000")
        .await?;
    c.find(Locator::Id("login-button")).await?.click().await?;
    let error = eventually(Duration::from_secs(10), "the login error", || async {
        Ok(text_of(c, "#login-error").await.ok())
    })
    .await?;
    ensure!(
        error.contains("not this cluster's admin token"),
        "login error: {error}"
    );
    ensure!(
        path_of(c).await? == "/login",
        "a wrong token left the login page"
    );
    let cookies = c.get_all_cookies().await?;
    ensure!(
        cookies
            .iter()
            .all(|k| k.name() != "shoal_token" || k.value().is_empty()),
        "a wrong token set a cookie: {cookies:?}"
    );
    // A forged cookie gets nowhere either.
    // (Set by script: the browser has no shoal_token cookie now, so it may.)
    c.execute(
        "document.cookie = 'shoal_token=forged-token-value; path=/; SameSite=Strict';",
        vec![],
    )
    .await?;
    c.goto(&format!("{base}/")).await?;
    ensure!(
        c.find(Locator::Id("nodes")).await.is_err(),
        "a forged cookie showed the overview"
    );
    ensure!(
        text_of(c, "#login-error")
            .await?
            .contains("not this cluster's admin token"),
        "a forged cookie is not refused with a message"
    );
    c.delete_all_cookies().await?;

    // The right token: the overview lists the three nodes.
    log_in(c, &base, &token).await?;
    let cookie = c.get_named_cookie("shoal_token").await?;
    ensure!(
        cookie.value() == token,
        "the cookie does not hold the token"
    );
    ensure!(
        cookie.http_only() == Some(true),
        "the cookie is not HttpOnly"
    );
    let same_site = cookie.same_site().map(|s| s.to_string());
    ensure!(
        same_site.as_deref() == Some("Strict"),
        "the cookie is not SameSite=Strict: {same_site:?}"
    );
    let script_sees = c.execute("return document.cookie;", vec![]).await?;
    ensure!(
        !script_sees
            .as_str()
            .unwrap_or_default()
            .contains("shoal_token"),
        "scripts can read the cookie"
    );
    let names = eventually(
        Duration::from_secs(20),
        "3 alive nodes on the overview",
        || async {
            let rows = c.find_all(Locator::Css("#nodes tbody tr")).await?;
            let mut names = Vec::new();
            for r in &rows {
                let text = r.text().await?;
                if text.contains("alive") {
                    names.push(
                        text.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
            Ok((rows.len() == 3 && names.len() == 3).then_some(names))
        },
    )
    .await?;
    for n in urls.keys() {
        ensure!(
            names.contains(n),
            "node {n} is not on the overview: {names:?}"
        );
    }
    ensure!(
        text_of(c, "#node-count").await?.starts_with("3 (3 alive)"),
        "node count: {}",
        text_of(c, "#node-count").await?
    );
    // Every node gossips its state digest: the overview says whether all hold the same state
    // (the page refreshes itself).
    eventually(
        Duration::from_secs(20),
        "all 3 nodes agree on the overview",
        || async {
            let text = text_of(c, "#agreement").await?;
            Ok(text
                .contains("all 3 alive nodes hold this state")
                .then_some(()))
        },
    )
    .await?;

    // Apply a Deployment from the text area.
    c.find(Locator::LinkText("Apply")).await?.click().await?;
    let area = c
        .wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("manifest"))
        .await?;
    area.send_keys(MANIFEST).await?;
    c.find(Locator::Id("apply-button")).await?.click().await?;
    let result = eventually(Duration::from_secs(15), "the apply result", || async {
        Ok(text_of(c, "#apply-result").await.ok())
    })
    .await?;
    ensure!(
        result.contains("deployment/ui-web in default created"),
        "apply said: {result}"
    );

    // The pods page shows both pods running and ready, by its own updates (no reload).
    c.find(Locator::LinkText("Pods")).await?.click().await?;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("div.live[data-src='/ui/fragments/pods']"))
        .await?;
    let pods = eventually(
        Duration::from_secs(180),
        "2 running, ready ui-web pods",
        || async {
            let rows: BTreeMap<_, _> = pod_rows(c)
                .await?
                .into_iter()
                .filter(|(name, _)| name.starts_with("ui-web-"))
                .collect();
            let done = rows.len() == 2
                && rows.values().all(|(status, ready, node)| {
                    status == "Running" && ready == "1/1" && !node.is_empty()
                });
            Ok(done.then_some(rows))
        },
    )
    .await?;
    ensure!(
        path_of(c).await? == "/ui/pods",
        "the pods page navigated away"
    );

    // Logs, from the pods page's link. A pod on this node shows its output. For a pod on
    // another node the API reads the local engine: on separate machines the page names the
    // pod's node; in a testnet all nodes share one Docker engine, so it may show the output.
    let mut read_logs = 0;
    let mut elsewhere = None;
    for (pod, (_, _, node)) in &pods {
        c.goto(&format!("{base}/ui/pods")).await?;
        let link = format!("#pods tr[data-name='{pod}'] a.logs");
        eventually(Duration::from_secs(20), "the logs link", || async {
            c.find(Locator::Css(&link)).await?.click().await?;
            Ok(Some(()))
        })
        .await?;
        let shown = eventually(Duration::from_secs(20), "the pod's log", || async {
            ensure!(path_of(c).await?.ends_with("/logs"), "not on a logs page");
            if let Ok(why) = text_of(c, "#logs-error").await {
                return Ok(Some(Err(why)));
            }
            Ok(text_of(c, "#logs")
                .await
                .ok()
                .filter(|t| t.contains(ECHO_LINE))
                .map(Ok))
        })
        .await?;
        match shown {
            Ok(_) => read_logs += u32::from(*node == first),
            Err(why) => ensure!(
                *node != first && why.contains(&format!("runs on node \"{node}\"")),
                "logs of {pod} on {node}: {why}"
            ),
        }
        if *node != first {
            elsewhere = Some((pod.clone(), node.clone()));
        }
    }
    if let Some((pod, node)) = elsewhere {
        let other = &urls[&node];
        log_in(c, other, &token).await?;
        c.goto(&format!("{other}/ui/pods")).await?;
        let link = format!("#pods tr[data-name='{pod}'] a.logs");
        eventually(Duration::from_secs(20), "the logs link", || async {
            c.find(Locator::Css(&link)).await?.click().await?;
            Ok(Some(()))
        })
        .await?;
        let logs = eventually(Duration::from_secs(20), "the pod's log", || async {
            Ok(text_of(c, "#logs")
                .await
                .ok()
                .filter(|t| t.contains(ECHO_LINE)))
        })
        .await?;
        ensure!(logs.contains(ECHO_LINE), "log of {pod}: {logs}");
        read_logs += 1;
    }
    ensure!(read_logs >= 1, "no pod's log was read");

    // Scale down from the workloads page, then delete after the confirmation page.
    c.goto(&format!("{base}/ui/workloads")).await?;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css("#workloads tr[data-name='ui-web'] form.scale"))
        .await?;
    // One script call sets the field and presses the form's button, so the region's 2 s
    // refresh cannot replace the form halfway.
    c.execute(
        "var f = document.querySelector(\"#workloads tr[data-name='ui-web'] form.scale\");
         f.elements.replicas.value = '1';
         f.querySelector('button').click();",
        vec![],
    )
    .await?;
    let notice = eventually(Duration::from_secs(15), "the scale notice", || async {
        Ok(text_of(c, "p.notice.ok").await.ok())
    })
    .await?;
    ensure!(
        notice.contains("Scaled deployment default/ui-web to 1"),
        "scale said: {notice}"
    );
    eventually(
        Duration::from_secs(60),
        "1/1 ready on the workloads page",
        || async {
            let ready = text_of(c, "#workloads tr[data-name='ui-web'] .ready").await?;
            Ok((ready == "1/1").then_some(()))
        },
    )
    .await?;
    eventually(Duration::from_secs(15), "the delete link", || async {
        c.find(Locator::Css("#workloads tr[data-name='ui-web'] a.delete"))
            .await?
            .click()
            .await?;
        Ok(Some(()))
    })
    .await?;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Id("delete-button"))
        .await?
        .click()
        .await?;
    let notice = eventually(Duration::from_secs(15), "the delete notice", || async {
        Ok(text_of(c, "p.notice.ok").await.ok())
    })
    .await?;
    ensure!(
        notice.contains("Deleted deployment default/ui-web"),
        "delete said: {notice}"
    );
    ensure!(
        c.find(Locator::Css("#workloads tr[data-name='ui-web']"))
            .await
            .is_err(),
        "the deleted deployment is still listed"
    );
    Ok(())
}

#[test]
fn the_web_ui_logs_in_applies_a_deployment_and_shows_its_pods_and_logs() {
    let Some((chromium, chromedriver)) = browser() else {
        return;
    };
    if !shoal_testnet::docker_ready() {
        return;
    }
    assert!(MANIFEST.contains(IMAGE));
    let dir = tempfile::tempdir().unwrap();
    // The nodes stop before their containers are removed.
    let t = Testnet::up(3, dir.path()).unwrap();
    let cluster = &t.cluster;
    let driver = Driver::start(&chromedriver).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt.block_on(async {
        let client = connect(&driver, &chromium).await?;
        let outcome = drive(&client, cluster).await;
        let page = client.source().await.unwrap_or_default();
        let _ = client.close().await;
        outcome.map_err(|e| e.context(format!("the page was:\n{page}")))
    });
    if let Err(e) = outcome {
        panic!("{e:#}\nnode logs:\n{}", cluster.log_tails(40));
    }
}
