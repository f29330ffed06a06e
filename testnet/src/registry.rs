//! A real Docker registry for tests: Debian's `docker-registry` (distribution 2.8) serving a
//! temporary directory, so that pulls, credentials and download counts are tested against what
//! production talks to.
//!
//! A [`Registry`] is one `docker-registry serve CONFIG` process with its own directory: the
//! config it was given (`config.yml`), filesystem storage (`data/`), an optional bcrypt
//! `htpasswd` file (made with `htpasswd -Bbn`, Debian's apache2-utils) and its log
//! (`registry.log`, stdout and stderr, with the access log on). It listens on loopback, or on
//! an address a test names such as a test LAN's bridge address (`10.213.B.1`); nothing else is
//! accepted, so it never serves beyond the machine. The process is killed and its directory
//! removed when the handle drops.
//!
//! Images go in with the machine's own engine ([`Registry::push`], the `docker` CLI), which
//! treats 127.0.0.0/8 as an insecure (plain HTTP) registry but no other address: a registry on
//! a LAN address therefore also runs a second process on 127.0.0.1 over the same storage (its
//! "side door", with a log of its own), and pushes go through that one. Downloads are counted
//! from the main process's access log ([`Registry::blob_gets`]).
//!
//! The access log is written by the registry before the response's last bytes leave it (the
//! logging handler wraps the server's handler, whose buffered output is flushed only after it
//! returns), so once a client has a whole response its line is in the file: counts read after
//! a `docker pull` returns are complete.

use std::fs;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a registry may take to answer `GET /v2/` after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many lines of its log a failure to start shows.
const LOG_TAIL_LINES: usize = 40;
/// The realm of the htpasswd auth (any string: the client only echoes it).
const REALM: &str = "shoal-test";

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Where it listens: loopback or an address on a test LAN (`10.213.0.0/16`). Default:
    /// 127.0.0.1 on a free port.
    pub addr: Option<SocketAddr>,
    /// A user and password that every request must carry (htpasswd, HTTP basic auth).
    /// Default: no auth.
    pub auth: Option<(String, String)>,
}

/// One request the registry logged in its access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRequest {
    /// `GET`, `HEAD`, `PUT`, …
    pub method: String,
    /// The request path, without the query string: `/v2/shoal-test/echo/blobs/sha256:…`.
    pub path: String,
    /// The status the registry answered with.
    pub status: u16,
}

impl LoggedRequest {
    /// A download of one of `repo`'s blobs (layers, image configs): a GET answered with the
    /// blob (200) or a redirect to it (307).
    pub fn is_blob_get(&self, repo: &str) -> bool {
        self.method == "GET"
            && matches!(self.status, 200 | 307)
            && self
                .path
                .strip_prefix("/v2/")
                .and_then(|p| p.strip_prefix(repo))
                .and_then(|p| p.strip_prefix("/blobs/sha256:"))
                .is_some_and(|hex| !hex.is_empty() && !hex.contains('/'))
    }

    /// A manifest fetch or check (GET or HEAD of `/v2/REPO/manifests/TAG-OR-DIGEST`) of any
    /// repository, answered with success (2xx).
    pub fn is_manifest_request(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
            && (200..300).contains(&self.status)
            && self.path.starts_with("/v2/")
            && self
                .path
                .rsplit_once("/manifests/")
                .is_some_and(|(repo, reference)| {
                    repo.len() > "/v2".len() && !reference.is_empty() && !reference.contains('/')
                })
    }
}

/// Parses one line of the registry's access log, the Apache combined format:
///
/// ```text
/// 127.0.0.1 - alice [07/Dec/2026:17:55:45 +0000] "GET /v2/a/tiny/blobs/sha256:9f9b… HTTP/1.1" 200 153 "" "docker/20.10.24 …"
/// ```
///
/// Any other line (the registry's own `time="…" level=info msg="…"` lines) gives `None`.
pub fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    // HOST IDENT USER [TIME] "METHOD URI PROTO" STATUS SIZE "REFERER" "AGENT"
    let (who, rest) = line.split_once(" [")?;
    if who.split(' ').count() != 3 {
        return None;
    }
    let (_time, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let (method, uri, proto) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || !proto.starts_with("HTTP/")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return None;
    }
    let status = rest.split(' ').next()?.parse::<u16>().ok()?;
    let path = uri.split_once('?').map_or(uri, |(p, _)| p);
    Some(LoggedRequest {
        method: method.to_string(),
        path: path.to_string(),
        status,
    })
}

/// The registry's config file: filesystem storage under `root`, `http.addr`, log level info
/// with the access log on, and htpasswd auth when `htpasswd` is given. Test-only settings: a
/// fixed HTTP secret (it signs upload state; the side door and the main process share it) and
/// no upload purging.
pub fn config_yaml(addr: SocketAddr, root: &Path, htpasswd: Option<&Path>) -> String {
    let mut yaml = format!(
        "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: shoal-testnet-registry
",
        root = yaml_str(&root.to_string_lossy()),
        addr = yaml_str(&addr.to_string()),
    );
    if let Some(path) = htpasswd {
        yaml.push_str(&format!(
            "auth:
  htpasswd:
    realm: {realm}
    path: {path}
",
            realm = yaml_str(REALM),
            path = yaml_str(&path.to_string_lossy()),
        ));
    }
    yaml
}

/// A YAML double-quoted scalar: a JSON string is one (YAML's escapes include JSON's).
fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Whether a registry may listen on `ip`: loopback, or an address on a test LAN
/// (`10.213.0.0/16`, [`crate::hosts::LAN_PREFIX`]), where only this machine and its test hosts
/// are.
pub fn listen_allowed(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.octets()[..2] == crate::hosts::LAN_PREFIX,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

/// Whether registries can run here: `docker-registry` (Debian's docker-registry) and
/// `htpasswd` (apache2-utils) are installed. Without them this says so and returns false,
/// except where `CI` is set: there a missing one fails the test.
pub fn ready() -> bool {
    let missing: Vec<&str> = [
        ("docker-registry", "docker-registry"),
        ("htpasswd", "apache2-utils"),
    ]
    .into_iter()
    .filter(|(tool, _)| !runs(tool, &["--help"]))
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and registry tests cannot run: install {}",
        missing.join(", ")
    );
    eprintln!(
        "skipping: no registry here (Debian packages {})",
        missing.join(", ")
    );
    false
}

/// Whether `program` exists and can be started (its exit status does not matter: `htpasswd`
/// exits 2 after printing its usage).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running `docker-registry` with its own directory; killed and removed when dropped.
pub struct Registry {
    addr: SocketAddr,
    auth: Option<(String, String)>,
    main: Child,
    /// A second process on 127.0.0.1 over the same storage, for pushes from the machine's
    /// engine, when `addr` is not on loopback (the engine pushes over plain HTTP only there).
    side_door: Option<(Child, SocketAddr)>,
    log_path: PathBuf,
    /// Dropped last: the processes die before their directory goes.
    dir: tempfile::TempDir,
}

impl Registry {
    /// Writes the config into a new temporary directory, starts `docker-registry serve` and
    /// waits until `GET /v2/` answers (200, or 401 with auth); fails with the tail of its log
    /// if it does not within 30 s.
    pub fn start(opts: RegistryOptions) -> anyhow::Result<Registry> {
        let addr = match opts.addr {
            Some(a) => a,
            None => SocketAddr::new([127, 0, 0, 1].into(), crate::free_port("127.0.0.1")?),
        };
        if !listen_allowed(addr.ip()) {
            bail!(
                "a test registry listens on loopback or a test LAN (10.213.0.0/16) only, not {addr}"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("shoal-registry-")
            .tempdir()
            .context("cannot create the registry's directory")?;
        let root = dir.path().join("data");
        fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
        let htpasswd = match &opts.auth {
            Some((user, password)) => Some(write_htpasswd(dir.path(), user, password)?),
            None => None,
        };
        let log_path = dir.path().join("registry.log");
        let main = spawn(
            dir.path(),
            "config.yml",
            &config_yaml(addr, &root, htpasswd.as_deref()),
            &log_path,
        )?;
        let mut reg = Registry {
            addr,
            auth: opts.auth,
            main,
            side_door: None,
            log_path,
            dir,
        };
        let authed = reg.auth.is_some();
        let log_path = reg.log_path.clone();
        wait_ready(&mut reg.main, addr, authed, &log_path)?;
        if !addr.ip().is_loopback() {
            let side = SocketAddr::new([127, 0, 0, 1].into(), crate::free_port("127.0.0.1")?);
            let side_log = reg.dir.path().join("side-door.log");
            let mut child = spawn(
                reg.dir.path(),
                "side-door.yml",
                &config_yaml(side, &root, htpasswd.as_deref()),
                &side_log,
            )?;
            let ready = wait_ready(&mut child, side, authed, &side_log);
            reg.side_door = Some((child, side));
            ready?;
        }
        Ok(reg)
    }

    /// Where the registry listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The registry's part of image names: `127.0.0.1:41234`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// The user and password every request needs, when it has auth.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's log (stdout and stderr: its own lines and the access log).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path)
    }

    /// Pushes `local_image` (an image in the machine's engine) to this registry as
    /// `repo_tag` (`shoal-test/echo:v1`) with the `docker` CLI, logged in through a temporary
    /// client config when the registry has auth (the machine's `~/.docker` is left alone),
    /// then removes the extra local tag. Returns the full reference, `HOST/repo_tag`.
    pub fn push(&self, local_image: &str, repo_tag: &str) -> anyhow::Result<String> {
        if repo_tag.is_empty()
            || repo_tag.starts_with('/')
            || repo_tag.contains(char::is_whitespace)
        {
            bail!("{repo_tag:?} is not a repository and tag (like shoal-test/echo:v1)");
        }
        let via = self.side_door.as_ref().map_or(self.addr, |(_, a)| *a);
        let target = format!("{via}/{repo_tag}");
        let config = self.login_at(via)?;
        docker(None, &["tag", local_image, &target], None)?;
        let pushed = docker(Some(config.path()), &["push", &target], None);
        let untagged = docker(None, &["rmi", &target], None);
        pushed.with_context(|| format!("pushing {local_image} as {target}"))?;
        untagged?;
        Ok(format!("{}/{repo_tag}", self.host()))
    }

    /// A temporary `docker` client config (for `docker --config DIR`) logged in to this
    /// registry; an empty one when it has no auth.
    pub fn login_config(&self) -> anyhow::Result<tempfile::TempDir> {
        self.login_at(self.addr)
    }

    fn login_at(&self, addr: SocketAddr) -> anyhow::Result<tempfile::TempDir> {
        let config = tempfile::Builder::new()
            .prefix("shoal-docker-config-")
            .tempdir()
            .context("cannot create a docker client config directory")?;
        if let Some((user, password)) = &self.auth {
            docker(
                Some(config.path()),
                &["login", &addr.to_string(), "-u", user, "--password-stdin"],
                Some(password),
            )
            .with_context(|| format!("docker login {addr}"))?;
        }
        Ok(config)
    }

    /// Every request in the access log so far.
    pub fn requests(&self) -> anyhow::Result<Vec<LoggedRequest>> {
        let text = fs::read_to_string(&self.log_path)
            .with_context(|| format!("cannot read {}", self.log_path.display()))?;
        Ok(text.lines().filter_map(parse_access_line).collect())
    }

    /// How many blobs of `repo` (`shoal-test/echo`) the registry has served: GETs answered
    /// 200 or 307. Pushes never GET a blob; a pull GETs only what the engine lacks.
    pub fn blob_gets(&self, repo: &str) -> anyhow::Result<usize> {
        Ok(self
            .requests()?
            .iter()
            .filter(|r| r.is_blob_get(repo))
            .count())
    }

    /// How many manifest GETs and HEADs of any repository the registry answered with success.
    pub fn manifest_requests(&self) -> anyhow::Result<usize> {
        Ok(self
            .requests()?
            .iter()
            .filter(|r| r.is_manifest_request())
            .count())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.main.kill();
        let _ = self.main.wait();
        if let Some((child, _)) = self.side_door.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `htpasswd -Bbn USER PASSWORD` (bcrypt, which is all the registry accepts) into
/// `dir/htpasswd`.
fn write_htpasswd(dir: &Path, user: &str, password: &str) -> anyhow::Result<PathBuf> {
    if user.is_empty() || user.contains(':') {
        bail!("a registry user may not be empty or contain ':' (got {user:?})");
    }
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
        .context("cannot run htpasswd (Debian package apache2-utils)")?;
    if !out.status.success() {
        bail!(
            "htpasswd failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = dir.join("htpasswd");
    fs::write(&path, &out.stdout).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes `config` as `dir/name` and starts `docker-registry serve` on it, logging to `log`.
fn spawn(dir: &Path, name: &str, config: &str, log: &Path) -> anyhow::Result<Child> {
    let config_path = dir.join(name);
    fs::write(&config_path, config)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    let out = fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    Command::new("docker-registry")
        .arg("serve")
        .arg(&config_path)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .context("cannot start docker-registry (Debian package docker-registry)")
}

/// Polls `GET http://addr/v2/` until it answers 200 (401 with auth), the process exits or the
/// deadline passes; the errors carry the log's tail.
fn wait_ready(child: &mut Child, addr: SocketAddr, authed: bool, log: &Path) -> anyhow::Result<()> {
    let expected = if authed { 401 } else { 200 };
    let http = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "docker-registry on {addr} exited with {status} before it was ready; log:\n{}",
                tail(log)
            );
        }
        let last = match http.get(format!("http://{addr}/v2/")).send() {
            Ok(r) if r.status().as_u16() == expected => return Ok(()),
            Ok(r) => format!("GET /v2/ answered {}", r.status()),
            Err(e) => format!("GET /v2/: {e}"),
        };
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "docker-registry on {addr} was not ready within {READY_TIMEOUT:?} ({last}); log:\n{}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines of the file at `path`, or why it cannot be read.
fn tail(path: &Path) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Runs `docker [--config DIR] ARGS`, with `stdin` written to it when given; fails with its
/// stderr.
fn docker(config: Option<&Path>, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new("docker");
    if let Some(dir) = config {
        cmd.arg("--config").arg(dir);
    }
    let mut child = cmd
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run docker")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .context("cannot write to docker's stdin")?;
    }
    let out = child.wait_with_output().context("docker did not finish")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UA: &str = "\"docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\\\(linux\\\\))\"";

    fn req(method: &str, path: &str, status: u16) -> LoggedRequest {
        LoggedRequest {
            method: method.into(),
            path: path.into(),
            status,
        }
    }

    #[test]
    fn parses_access_lines() {
        let blob = "sha256:9f9b9bc1f2a4a18fb9a33e1fce58526de98c6a2939754a524dd77d3a6b8ca53d";
        let cases: Vec<(String, Option<LoggedRequest>)> = vec![
            (
                format!(
                    "127.0.0.1 - - [07/Dec/2026:17:56:41 +0000] \"GET /v2/a/tiny/blobs/{blob} HTTP/1.1\" 200 153 \"\" {UA}"
                ),
                Some(req("GET", &format!("/v2/a/tiny/blobs/{blob}"), 200)),
            ),
            // An authenticated user in the third field; a query string is dropped.
            (
                "10.213.5.11 - alice [07/Dec/2026:17:56:41 +0000] \"PUT /v2/a/tiny/blobs/uploads/8ed6?_state=KV%3D&digest=sha256%3A70 HTTP/1.1\" 201 0 \"\" \"curl/7.88.1\"".into(),
                Some(req("PUT", "/v2/a/tiny/blobs/uploads/8ed6", 201)),
            ),
            (
                "127.0.0.1 - - [07/Dec/2026:17:55:39 +0000] \"GET /v2/ HTTP/1.1\" 401 87 \"\" \"curl/7.88.1\"".into(),
                Some(req("GET", "/v2/", 401)),
            ),
            (
                "127.0.0.1 - - [07/Dec/2026:17:55:45 +0000] \"HEAD /v2/tiny/manifests/1 HTTP/1.1\" 200 523 \"\" \"x\"".into(),
                Some(req("HEAD", "/v2/tiny/manifests/1", 200)),
            ),
            // The registry's own lines, even one that talks about a request.
            (
                "time=\"2026-12-07T17:55:39.89Z\" level=info msg=\"response completed\" http.request.method=GET http.request.uri=/v2/ http.response.status=200".into(),
                None,
            ),
            (
                "time=\"2026-12-07T17:55:37.88Z\" level=info msg=\"listening on 127.0.0.1:5999\"".into(),
                None,
            ),
            ("".into(), None),
            // Cut short, or not a request line.
            ("127.0.0.1 - - [07/Dec/2026:17:55:39 +0000] \"GET /v2/".into(), None),
            ("127.0.0.1 - - [07/Dec/2026:17:55:39 +0000] \"GET /v2/ HTTP/1.1\" abc 2".into(), None),
            ("127.0.0.1 - - [07/Dec/2026:17:55:39 +0000] \"get /v2/ HTTP/1.1\" 200 2".into(), None),
            ("127.0.0.1 - [07/Dec/2026:17:55:39 +0000] \"GET /v2/ HTTP/1.1\" 200 2".into(), None),
        ];
        for (line, want) in cases {
            assert_eq!(parse_access_line(&line), want, "line: {line}");
        }
    }

    #[test]
    fn blob_gets() {
        let d = "sha256:70dd789ca468030a88ababea12f07565e49376c04aca257da2748b61291e06e9";
        let cases = [
            (
                req("GET", &format!("/v2/shoal-test/echo/blobs/{d}"), 200),
                "shoal-test/echo",
                true,
            ),
            (
                req("GET", &format!("/v2/shoal-test/echo/blobs/{d}"), 307),
                "shoal-test/echo",
                true,
            ),
            (
                req("GET", &format!("/v2/tiny/blobs/{d}"), 200),
                "tiny",
                true,
            ),
            // Not a download: a check, a failure, an upload, another repository.
            (
                req("HEAD", &format!("/v2/shoal-test/echo/blobs/{d}"), 200),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", &format!("/v2/shoal-test/echo/blobs/{d}"), 404),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", &format!("/v2/shoal-test/echo/blobs/{d}"), 401),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", "/v2/shoal-test/echo/blobs/uploads/8ed6", 204),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", &format!("/v2/shoal-test/echo2/blobs/{d}"), 200),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", &format!("/v2/x/shoal-test/echo/blobs/{d}"), 200),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", &format!("/v2/shoal-test/echo/blobs/{d}"), 200),
                "echo",
                false,
            ),
            (
                req("GET", "/v2/shoal-test/echo/blobs/sha256:", 200),
                "shoal-test/echo",
                false,
            ),
            (
                req("GET", "/v2/shoal-test/echo/manifests/latest", 200),
                "shoal-test/echo",
                false,
            ),
        ];
        for (r, repo, want) in cases {
            assert_eq!(r.is_blob_get(repo), want, "{r:?} of {repo}");
        }
    }

    #[test]
    fn manifest_requests() {
        let cases = [
            (
                req("GET", "/v2/shoal-test/echo/manifests/latest", 200),
                true,
            ),
            (req("HEAD", "/v2/tiny/manifests/1", 200), true),
            (req("GET", "/v2/tiny/manifests/sha256:e0f9", 200), true),
            (req("PUT", "/v2/tiny/manifests/1", 201), false),
            (req("HEAD", "/v2/tiny/manifests/2", 404), false),
            (req("GET", "/v2/tiny/manifests/1", 401), false),
            (req("DELETE", "/v2/tiny/manifests/sha256:e0f9", 202), false),
            (req("GET", "/v2/tiny/manifests/", 200), false),
            (req("GET", "/v2/manifests/1", 200), false),
            (req("GET", "/v2/tiny/blobs/sha256:e0f9", 200), false),
            (req("GET", "/v2/", 200), false),
        ];
        for (r, want) in cases {
            assert_eq!(r.is_manifest_request(), want, "{r:?}");
        }
    }

    #[test]
    fn config_text() {
        let addr: SocketAddr = "127.0.0.1:41234".parse().unwrap_or_else(|e| panic!("{e}"));
        let plain = config_yaml(addr, Path::new("/tmp/r/data"), None);
        let authed = config_yaml(
            addr,
            Path::new("/tmp/r/data"),
            Some(Path::new("/tmp/r/htpasswd")),
        );
        let cases = [
            (&plain, "  level: info\n", true),
            (&plain, "  accesslog:\n    disabled: false\n", true),
            (&plain, "    rootdirectory: \"/tmp/r/data\"\n", true),
            (&plain, "http:\n  addr: \"127.0.0.1:41234\"\n", true),
            (&plain, "auth:", false),
            (
                &authed,
                "auth:\n  htpasswd:\n    realm: \"shoal-test\"\n    path: \"/tmp/r/htpasswd\"\n",
                true,
            ),
        ];
        for (text, part, want) in cases {
            assert_eq!(text.contains(part), want, "{part:?} in:\n{text}");
        }
        let lan: SocketAddr = "10.213.5.1:5000".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(config_yaml(lan, Path::new("/d"), None).contains("addr: \"10.213.5.1:5000\"\n"));
    }

    #[test]
    fn yaml_strings() {
        let cases = [
            ("/tmp/x", "\"/tmp/x\""),
            ("a \"b\"", "\"a \\\"b\\\"\""),
            ("c:\\d", "\"c:\\\\d\""),
            ("l1\nl2", "\"l1\\nl2\""),
            ("", "\"\""),
        ];
        for (s, want) in cases {
            assert_eq!(yaml_str(s), want, "{s:?}");
        }
    }

    #[test]
    fn listen_addresses() {
        let cases = [
            ("127.0.0.1", true),
            ("127.83.17.1", true),
            ("::1", true),
            ("10.213.5.1", true),
            ("10.213.5.11", true),
            ("0.0.0.0", false),
            ("::", false),
            ("10.214.5.1", false),
            ("192.168.1.10", false),
            ("172.17.0.1", false),
        ];
        for (ip, want) in cases {
            let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
            assert_eq!(listen_allowed(ip), want, "{ip}");
        }
    }
}
