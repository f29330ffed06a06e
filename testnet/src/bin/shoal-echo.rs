//! `shoal-echo`: the test workload, packed into the image `shoal-test/echo:latest` by
//! `shoal-testnet image build` (see `testnet/src/image.rs`).
//!
//! A small HTTP/1.1 server, std only (one thread per connection), that tests steer through its
//! routes and flags instead of a shell, since the image has none:
//! - `/` → `{"pod": POD_NAME or HOSTNAME, "node": SHOAL_NODE_NAME, "greeting": GREETING}`
//! - `/healthz`, `/ready` → 200 `ok`, or 500 `fail` when switched by
//!   `/set?healthz=fail|ok&ready=fail|ok` or while `/tmp/healthz-fail` / `/tmp/ready-fail`
//!   exists
//! - `/client` → the address the request came from (what the server sees as its source)
//! - `/env` → every environment variable as a JSON object
//! - `/file?path=P` → the file's contents (404 if absent); `/write?path=P&data=D` writes it
//! - `/crash?code=N` → answers, then exits with code N
//! - `/fetch?url=http://NAME:PORT/PATH` → GETs the URL from inside the container and answers
//!   its body (502 with the reason when the name does not resolve, nothing answers, or the
//!   answer is not 2xx). The name goes through the system resolver (`getaddrinfo`), which
//!   reads the container's `/etc/resolv.conf`, search path and `ndots` included: the image has
//!   no shell and no wget, so this is how tests look names up inside a pod
//!
//! Flags (and environment): `--port N` (`PORT`, default 8080), `--crash-after SECS`
//! (`CRASH_AFTER`: exit 1 then), `--exit-on-start CODE`, `--alloc-mb N` (`ALLOC_MB`: allocate
//! and touch N MiB at start, to provoke an OOM kill), `--cat` (copy stdin to stdout, for exec
//! tests), `--version`.
//!
//! As PID 1 in a container it would ignore SIGTERM unless it handled it: it does, and exits 0
//! at once, so stops are quick. Each request is logged as one line on stdout.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static HEALTHZ_FAIL: AtomicBool = AtomicBool::new(false);
static READY_FAIL: AtomicBool = AtomicBool::new(false);

/// The most request head we read; tests send tiny requests.
const MAX_HEAD: u64 = 64 * 1024;

#[derive(Debug, Default, PartialEq)]
struct Opts {
    port: u16,
    crash_after: Option<u64>,
    exit_on_start: Option<i32>,
    alloc_mb: Option<usize>,
    cat: bool,
    version: bool,
}

const USAGE: &str = "usage: shoal-echo [--port N] [--crash-after SECS] [--exit-on-start CODE] \
                     [--alloc-mb N] [--cat] [--version]";

fn parse_opts(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Opts, String> {
    fn num<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
        v.trim()
            .parse()
            .map_err(|_| format!("{flag}: not a number: {v:?}"))
    }
    let mut opts = Opts {
        port: 8080,
        ..Default::default()
    };
    if let Some(p) = env("PORT") {
        opts.port = num("PORT", Some(p))?;
    }
    if let Some(s) = env("CRASH_AFTER") {
        opts.crash_after = Some(num("CRASH_AFTER", Some(s))?);
    }
    if let Some(m) = env("ALLOC_MB") {
        opts.alloc_mb = Some(num("ALLOC_MB", Some(m))?);
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next());
        match flag.as_str() {
            "--port" => opts.port = num(&flag, value())?,
            "--crash-after" => opts.crash_after = Some(num(&flag, value())?),
            "--exit-on-start" => opts.exit_on_start = Some(num(&flag, value())?),
            "--alloc-mb" => opts.alloc_mb = Some(num(&flag, value())?),
            "--cat" => opts.cat = true,
            "--version" | "-V" => opts.version = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(opts)
}

fn main() {
    let opts = match parse_opts(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("shoal-echo: {e}\n{USAGE}");
            exit(2);
        }
    };
    if opts.version {
        println!("shoal-echo {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if opts.cat {
        let copied = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::stdout().lock());
        exit(if copied.is_ok() { 0 } else { 1 });
    }
    if let Some(code) = opts.exit_on_start {
        eprintln!("shoal-echo: exiting at start with code {code} (--exit-on-start)");
        exit(code);
    }
    handle_signals();
    if let Some(mb) = opts.alloc_mb {
        // vec! of a non-zero byte writes every page, so the memory is really used, and leaking
        // it keeps it for the life of the process.
        let block: &'static mut [u8] = Box::leak(vec![1u8; mb << 20].into_boxed_slice());
        std::hint::black_box(&block);
        println!("shoal-echo: allocated {mb} MiB");
    }
    if let Some(secs) = opts.crash_after {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            println!("shoal-echo: crashing after {secs} s (--crash-after)");
            exit(1);
        });
    }
    let listener = match TcpListener::bind(("0.0.0.0", opts.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("shoal-echo: cannot listen on :{}: {e}", opts.port);
            exit(1);
        }
    };
    println!("shoal-echo listening on :{}", opts.port);
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                std::thread::spawn(move || handle(stream));
            }
            Err(e) => eprintln!("shoal-echo: accept: {e}"),
        }
    }
}

/// Exits 0 on SIGTERM or SIGINT: as PID 1 the default action would be to ignore them.
fn handle_signals() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook::iterator::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shoal-echo: cannot handle signals: {e}");
            exit(1);
        }
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
            println!("shoal-echo: {name}, exiting");
            exit(0);
        }
    });
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Exit with this code once the response is sent.
    then_exit: Option<i32>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into().into_bytes(),
            then_exit: None,
        }
    }

    fn json(body: String) -> Response {
        Response {
            status: 200,
            content_type: "application/json",
            body: body.into_bytes(),
            then_exit: None,
        }
    }
}

fn handle(stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream.take(MAX_HEAD));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    // The headers matter to no route; read them so the client sees a complete exchange.
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line.trim_end().is_empty() => break,
            Ok(_) => {}
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let response = if method.is_empty() || target.is_empty() {
        Response::text(400, "bad request")
    } else if target == "/client" {
        // The address the connection came from, without the port: who the server sees.
        Response::text(
            200,
            peer.rsplit_once(':').map_or(peer.as_str(), |(ip, _)| ip),
        )
    } else {
        route(target)
    };
    let mut out = write_half;
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    // The request's line first: a client that reads the logs once it has the answer finds it.
    println!("{peer} {method} {target} {}", response.status);
    let _ = out
        .write_all(head.as_bytes())
        .and_then(|()| out.write_all(&response.body))
        .and_then(|()| out.flush());
    if let Some(code) = response.then_exit {
        let _ = out.shutdown(std::net::Shutdown::Both);
        println!("shoal-echo: crashing with code {code} (/crash)");
        exit(code);
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        502 => "Bad Gateway",
        _ => "Internal Server Error",
    }
}

/// How long `/fetch` waits to connect, and for the answer.
const FETCH_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FETCH_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer `/fetch` keeps.
const FETCH_MAX: u64 = 1 << 20;

/// `http://host[:port][/path]` → (host, port, path); IPv6 hosts in brackets.
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are fetched"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed ["))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// GETs `url`: its body when it answers 2xx, else why not.
fn fetch(url: &str) -> Result<Vec<u8>, String> {
    let (host, port, path) = parse_url(url)?;
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} resolved to no address");
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, FETCH_CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("cannot connect to {addr} ({host}): {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let io = |e: std::io::Error| format!("{url}: {e}");
    stream
        .set_read_timeout(Some(FETCH_READ_TIMEOUT))
        .map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = Vec::new();
    stream
        .take(FETCH_MAX)
        .read_to_end(&mut answer)
        .map_err(io)?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP answer"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let body = answer[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{url}: no status in {head:?}"))?;
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(format!(
            "{url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        ))
    }
}

fn route(target: &str) -> Response {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params = parse_query(query);
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let env = |k: &str| std::env::var(k).ok();
    match path {
        "/" => {
            let fields = [
                ("pod", env("POD_NAME").or_else(|| env("HOSTNAME"))),
                ("node", env("SHOAL_NODE_NAME")),
                ("greeting", env("GREETING")),
            ];
            Response::json(json_object(fields.iter().map(|(k, v)| (*k, v.as_deref()))))
        }
        "/healthz" => probe(&HEALTHZ_FAIL, "/tmp/healthz-fail"),
        "/ready" => probe(&READY_FAIL, "/tmp/ready-fail"),
        "/set" => {
            for (name, flag) in [("healthz", &HEALTHZ_FAIL), ("ready", &READY_FAIL)] {
                match param(name) {
                    None => {}
                    Some("fail") => flag.store(true, Ordering::SeqCst),
                    Some("ok") => flag.store(false, Ordering::SeqCst),
                    Some(other) => {
                        return Response::text(400, format!("{name}={other}: want ok or fail"));
                    }
                }
            }
            let state = |f: &AtomicBool| {
                Some(if f.load(Ordering::SeqCst) {
                    "fail"
                } else {
                    "ok"
                })
            };
            Response::json(json_object([
                ("healthz", state(&HEALTHZ_FAIL)),
                ("ready", state(&READY_FAIL)),
            ]))
        }
        "/env" => {
            let vars: BTreeMap<String, String> = std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            Response::json(json_object(
                vars.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
            ))
        }
        "/file" => match param("path") {
            None => Response::text(400, "path is required"),
            Some(p) => match std::fs::read(p) {
                Ok(data) => Response {
                    status: 200,
                    content_type: "application/octet-stream",
                    body: data,
                    then_exit: None,
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Response::text(404, format!("{p}: no such file"))
                }
                Err(e) => Response::text(500, format!("{p}: {e}")),
            },
        },
        "/write" => match (param("path"), param("data")) {
            (Some(p), data) => {
                let parent = Path::new(p).parent().filter(|d| !d.as_os_str().is_empty());
                let result = parent
                    .map(std::fs::create_dir_all)
                    .unwrap_or(Ok(()))
                    .and_then(|()| std::fs::write(p, data.unwrap_or("")));
                match result {
                    Ok(()) => Response::text(200, "ok"),
                    Err(e) => Response::text(500, format!("{p}: {e}")),
                }
            }
            (None, _) => Response::text(400, "path is required"),
        },
        "/fetch" => match param("url").map(|u| (u, parse_url(u))) {
            None => Response::text(400, "url is required"),
            Some((_, Err(e))) => Response::text(400, e),
            Some((url, Ok(_))) => match fetch(url) {
                Ok(body) => Response {
                    status: 200,
                    content_type: "application/octet-stream",
                    body,
                    then_exit: None,
                },
                Err(e) => Response::text(502, e),
            },
        },
        "/crash" => {
            let code = param("code").and_then(|c| c.parse().ok()).unwrap_or(1);
            let mut r = Response::text(200, format!("crashing with code {code}"));
            r.then_exit = Some(code);
            r
        }
        _ => Response::text(404, "no such route"),
    }
}

fn probe(flag: &AtomicBool, file: &str) -> Response {
    if flag.load(Ordering::SeqCst) || Path::new(file).exists() {
        Response::text(500, "fail")
    } else {
        Response::text(200, "ok")
    }
}

/// `a=1&b=x%20y` → [(a, 1), (b, "x y")].
fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decodes `%XX` and `+` (a space, as forms encode it); a malformed escape stays as it is.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON object of string (or null) values, in the given order.
fn json_object<'a>(fields: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let body: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| {
            let v = v.map(json_string).unwrap_or_else(|| "null".into());
            format!("{}:{v}", json_string(k))
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn options_from_flags_and_env() {
        let none = |_: &str| None;
        assert_eq!(parse_opts(args(""), none).map(|o| o.port), Ok(8080));
        let o = parse_opts(
            args("--port 9000 --crash-after=3 --exit-on-start 4 --alloc-mb 64"),
            none,
        )
        .unwrap_or_default();
        assert_eq!(
            o,
            Opts {
                port: 9000,
                crash_after: Some(3),
                exit_on_start: Some(4),
                alloc_mb: Some(64),
                cat: false,
                version: false,
            }
        );
        let env = |k: &str| match k {
            "PORT" => Some("7000".to_string()),
            "ALLOC_MB" => Some("5".to_string()),
            "CRASH_AFTER" => Some("9".to_string()),
            _ => None,
        };
        let o = parse_opts(args(""), env).unwrap_or_default();
        assert_eq!(
            (o.port, o.alloc_mb, o.crash_after),
            (7000, Some(5), Some(9))
        );
        // Flags win over the environment.
        assert_eq!(parse_opts(args("--port 1"), env).map(|o| o.port), Ok(1));
        assert!(parse_opts(args("--port"), none).is_err());
        assert!(parse_opts(args("--port x"), none).is_err());
        assert!(parse_opts(args("--nope"), none).is_err());
        assert_eq!(
            parse_opts(args("--version"), none).map(|o| o.version),
            Ok(true)
        );
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("path=%2Fdata%2Fx&data=hello+world%21&empty=&flag"),
            vec![
                ("path".to_string(), "/data/x".to_string()),
                ("data".to_string(), "hello world!".to_string()),
                ("empty".to_string(), String::new()),
                ("flag".to_string(), String::new()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9"), "é");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(
            json_object([("a", Some("x\"y\\z\n\u{1}")), ("b", None)]),
            r#"{"a":"x\"y\\z\n\u0001","b":null}"#
        );
        let parsed: serde_json::Value =
            serde_json::from_str(&json_object([("k", Some("é \t"))])).unwrap_or_default();
        assert_eq!(parsed["k"], "é \t");
    }

    #[test]
    fn routes_without_a_network() {
        assert_eq!(route("/nope").status, 404);
        assert_eq!(route("/file").status, 400);
        assert_eq!(route("/set?healthz=maybe").status, 400);
        let dir = std::env::temp_dir().join(format!("shoal-echo-test-{}", std::process::id()));
        let file = dir.join("sub/f.txt");
        let path = file.to_string_lossy();
        assert_eq!(route(&format!("/file?path={path}")).status, 404);
        assert_eq!(route(&format!("/write?path={path}&data=a%20b")).status, 200);
        let r = route(&format!("/file?path={path}"));
        assert_eq!((r.status, r.body.as_slice()), (200, b"a b".as_slice()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(route("/crash?code=7").then_exit, Some(7));
        assert_eq!(route("/fetch").status, 400);
        assert_eq!(route("/fetch?url=ftp%3A%2F%2Fx%2F").status, 400);
    }

    #[test]
    fn urls_parse() {
        let ok = |u: &str| parse_url(u).unwrap_or_default();
        assert_eq!(
            ok("http://web:18080/"),
            ("web".to_string(), 18080, "/".to_string())
        );
        assert_eq!(
            ok("http://web.default.svc.shoal.home.arpa:8080/a/b?c=d"),
            (
                "web.default.svc.shoal.home.arpa".to_string(),
                8080,
                "/a/b?c=d".to_string()
            )
        );
        assert_eq!(ok("http://x"), ("x".to_string(), 80, "/".to_string()));
        assert_eq!(
            ok("http://[::1]:81/p"),
            ("::1".to_string(), 81, "/p".to_string())
        );
        assert!(parse_url("https://x/").is_err());
        assert!(parse_url("http://x:port/").is_err());
        assert!(parse_url("http://:80/").is_err());
    }

    /// A server on loopback answering one request with `answer`.
    fn serve_once(answer: &'static str) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                // The whole request first: closing with unread bytes would reset the
                // connection and could lose the answer.
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(answer.as_bytes());
                let _ = s.shutdown(std::net::Shutdown::Write);
                // Drain until the client closes.
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            }
        });
        port
    }

    #[test]
    fn fetch_returns_the_body_or_a_502() {
        let port = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        let r = route(&format!("/fetch?url=http://127.0.0.1:{port}/"));
        assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
        let port = serve_once("HTTP/1.1 500 Internal Server Error\r\n\r\nboom");
        let r = route(&format!("/fetch?url=http://127.0.0.1:{port}/"));
        assert_eq!(r.status, 502);
        assert!(String::from_utf8_lossy(&r.body).contains("HTTP 500: boom"));
        // Nothing listening: a 502 naming the address.
        let closed = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let r = route(&format!("/fetch?url=http://127.0.0.1:{closed}/"));
        assert_eq!(r.status, 502);
        assert!(String::from_utf8_lossy(&r.body).contains("cannot connect to 127.0.0.1"));
    }
}
