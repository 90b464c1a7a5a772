//! `wrk` (the Debian package) as a second HTTP load generator, so the HTTP
//! ceiling is measured with a generator known to be faster than the server
//! under test. Installs it when missing (`apt-get install -y wrk`), writes a
//! Lua script that posts the same events as `HttpWorker` (a unique id per
//! request, the same headers and body size), runs it and reads the summary
//! lines the script's `done()` prints. Given several servers (the daemons
//! of a cluster), the script's `setup()` points wrk's threads at them in
//! turn (`thread.addr`), so one wrk process spreads the load and its one
//! latency histogram covers all of them.
//!
//! Not here: the harness's own generator (`load`), which also does open loop
//! and gRPC; wrk is only used closed loop over HTTP/1.1.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use tokio::process::Command;

use crate::report::Latency;

const PACKAGE: &str = "wrk";

/// The `wrk` on PATH; installs the Debian package first when there is none
/// (as root, or through sudo), so nobody has to install it by hand.
pub async fn ensure() -> anyhow::Result<PathBuf> {
    if let Some(path) = find_on_path(PACKAGE) {
        return Ok(path);
    }
    let sudo = if is_root().await {
        false
    } else if find_on_path("sudo").is_some() {
        true
    } else {
        bail!(
            "`wrk` is not installed, and this user is neither root nor has sudo to install it: \
             install the Debian package `{PACKAGE}` (apt-get install -y {PACKAGE})"
        );
    };
    eprintln!("`wrk` is not on PATH: installing the Debian package `{PACKAGE}`");
    // A fresh machine may have no package lists yet: update only if the
    // first attempt fails.
    if !apt_get(sudo, &["install", "-y", PACKAGE]).await? {
        if !apt_get(sudo, &["update"]).await? {
            bail!("`apt-get update` failed; cannot install the Debian package `{PACKAGE}`");
        }
        if !apt_get(sudo, &["install", "-y", PACKAGE]).await? {
            bail!("`apt-get install -y {PACKAGE}` failed; install the Debian package `{PACKAGE}`");
        }
    }
    find_on_path(PACKAGE).with_context(|| {
        format!("the Debian package `{PACKAGE}` was installed but `wrk` is not on PATH")
    })
}

async fn apt_get(sudo: bool, args: &[&str]) -> anyhow::Result<bool> {
    let mut command = if sudo {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    } else {
        Command::new("apt-get")
    };
    let status = command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        // apt's progress would interleave with the tables on stdout.
        .stdout(Stdio::null())
        .status()
        .await
        .context("run apt-get")?;
    Ok(status.success())
}

async fn is_root() -> bool {
    let output = Command::new("id").arg("-u").output().await;
    output.is_ok_and(|o| o.status.success() && o.stdout.trim_ascii() == b"0")
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// What one wrk run posts, and how.
#[derive(Debug, Clone)]
pub struct WrkPlan {
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
    /// Event ids are `<prefix>-<thread>-<n>`.
    pub prefix: String,
    pub name: String,
    /// The whole body's size, about (as `HttpWorker`'s).
    pub body_bytes: usize,
}

/// The summary printed by the script's `done()`.
#[derive(Debug, Clone, Default)]
pub struct WrkOutcome {
    /// Responses received (any status).
    pub requests: u64,
    pub elapsed: Duration,
    /// Socket errors: connect, read, write, timeout.
    pub socket_errors: u64,
    /// Answers other than 202.
    pub non_202: u64,
    /// 202 answers that said `"duplicate":true`: the ids were not unique.
    pub duplicates: u64,
    /// The first answer other than 202: status and body.
    pub first_bad: Option<String>,
    pub latency: Latency,
}

impl WrkOutcome {
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_202
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_bad.clone().or_else(|| {
            (self.socket_errors > 0).then(|| format!("{} socket errors", self.socket_errors))
        })
    }
}

/// Runs `wrk --latency -t<threads> -c<connections> -d<duration>` against
/// `POST http://addr/v1/events` with the generated script; with several
/// addresses, thread `k` sends to address `k mod n` (so `threads` should be
/// a multiple of their number, and each thread has connections / threads).
pub async fn run(wrk: &Path, addrs: &[SocketAddr], plan: &WrkPlan) -> anyhow::Result<WrkOutcome> {
    let Some(&addr) = addrs.first() else {
        bail!("wrk needs a server to load");
    };
    let mut script = tempfile::Builder::new()
        .prefix("hookyard-bench-")
        .suffix(".lua")
        .tempfile()
        .context("a temp file for the wrk script")?;
    std::io::Write::write_all(&mut script, lua_script(plan, addrs).as_bytes())?;
    // wrk takes whole seconds.
    let seconds = plan.duration.as_secs_f64().ceil().max(1.0) as u64;
    let output = Command::new(wrk)
        .arg("--latency")
        .arg(format!("-t{}", plan.threads))
        .arg(format!("-c{}", plan.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script.path())
        .arg(format!("http://{addr}/v1/events"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .context("run wrk")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&stdout).with_context(|| format!("wrk's output:\n{stdout}"))
}

/// The Lua script: `request()` builds each request (a fresh id from the
/// thread's number and a counter), `response()` counts answers other than
/// 202 and duplicates, `done()` prints `hookyard-wrk key=value …` lines.
fn lua_script(plan: &WrkPlan, addrs: &[SocketAddr]) -> String {
    let pad = crate::load::pad_len(&plan.prefix, &plan.name, plan.body_bytes);
    let targets = addrs
        .iter()
        .map(|a| format!(r#"{{"{}", "{}"}}"#, a.ip(), a.port()))
        .collect::<Vec<_>>()
        .join(", ");
    let authorization = format!("Bearer {}", crate::API_KEY);
    // Request text is built by concatenation rather than `wrk.format`
    // (a `string.format` per header and a table per request).
    format!(
        r#"-- Generated by hookyard-bench.
local prefix = "{prefix}"
local name = "{name}"
local pad = string.rep("x", {pad})
local threads = {{}}
local targets = {{ {targets} }}

function setup(thread)
  local target = targets[(#threads % #targets) + 1]
  thread.addr = wrk.lookup(target[1], target[2])[1]
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  counter = 0
  non202 = 0
  duplicates = 0
  first_bad = ""
  head = "POST /v1/events HTTP/1.1\r\nHost: hookyard\r\nContent-Type: application/json\r\nAuthorization: {authorization}\r\nContent-Length: "
  body_head = '{{"id":"' .. prefix .. "-" .. tid .. "-"
  body_tail = '","name":"' .. name .. '","payload":{{"pad":"' .. pad .. '"}}}}'
end

function request()
  counter = counter + 1
  local body = body_head .. counter .. body_tail
  return head .. #body .. "\r\n\r\n" .. body
end

function response(status, headers, body)
  if status ~= 202 then
    non202 = non202 + 1
    if first_bad == "" then
      first_bad = "HTTP " .. status .. ": " .. string.sub(body, 1, 300)
    end
  elseif string.find(body, '"duplicate":true', 1, true) then
    duplicates = duplicates + 1
  end
end

function done(summary, latency, requests)
  local non, dup, bad = 0, 0, ""
  for _, t in ipairs(threads) do
    non = non + t:get("non202")
    dup = dup + t:get("duplicates")
    if bad == "" then bad = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    "hookyard-wrk requests=%d duration_us=%d socket_errors=%d non202=%d duplicates=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, non, dup))
  io.write(string.format(
    "hookyard-wrk count=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d\n",
    summary.requests, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
  if bad ~= "" then
    io.write("hookyard-wrk-first-bad " .. string.gsub(bad, "[\r\n]", " ") .. "\n")
  end
end
"#,
        prefix = plan.prefix,
        name = plan.name,
    )
}

/// Reads the script's summary lines from wrk's stdout.
fn parse(stdout: &str) -> anyhow::Result<WrkOutcome> {
    let mut fields = HashMap::new();
    let mut first_bad = None;
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("hookyard-wrk-first-bad ") {
            first_bad = Some(rest.to_string());
        } else if let Some(rest) = line.strip_prefix("hookyard-wrk ") {
            for pair in rest.split_whitespace() {
                if let Some((key, value)) = pair.split_once('=') {
                    let value: f64 = value
                        .parse()
                        .with_context(|| format!("the value of {key} in `{line}`"))?;
                    fields.insert(key.to_string(), value);
                }
            }
        }
    }
    let get = |key: &str| -> anyhow::Result<f64> {
        fields
            .get(key)
            .copied()
            .with_context(|| format!("no `{key}` in the summary the script prints"))
    };
    let ms = |key: &str| -> anyhow::Result<f64> { Ok(get(key)? / 1000.0) };
    Ok(WrkOutcome {
        requests: get("requests")? as u64,
        elapsed: Duration::from_secs_f64(get("duration_us")? / 1e6),
        socket_errors: get("socket_errors")? as u64,
        non_202: get("non202")? as u64,
        duplicates: get("duplicates")? as u64,
        first_bad,
        latency: Latency {
            count: get("count")? as u64,
            p50_ms: ms("p50_us")?,
            p90_ms: ms("p90_us")?,
            p99_ms: ms("p99_us")?,
            p999_ms: ms("p999_us")?,
            max_ms: ms("max_us")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_summary_lines() {
        let stdout = "Running 10s test @ http://127.0.0.1:1/v1/events\n  2 threads\n\
            hookyard-wrk requests=1000 duration_us=10000000 socket_errors=2 non202=3 duplicates=0\n\
            hookyard-wrk count=1000 p50_us=1500 p90_us=2000 p99_us=9000 p999_us=12000 max_us=30000\n\
            hookyard-wrk-first-bad HTTP 503: {\"error\":\"full\"}\n";
        let outcome = parse(stdout).unwrap();
        assert_eq!(outcome.requests, 1000);
        assert_eq!(outcome.elapsed, Duration::from_secs(10));
        assert_eq!(outcome.errors(), 5);
        assert_eq!(outcome.latency.p99_ms, 9.0);
        assert_eq!(
            outcome.first_error().as_deref(),
            Some("HTTP 503: {\"error\":\"full\"}")
        );
    }

    #[test]
    fn a_missing_summary_is_an_error() {
        assert!(parse("Running 10s test\n").is_err());
    }

    #[test]
    fn the_script_makes_bodies_of_the_asked_size() {
        let plan = WrkPlan {
            threads: 2,
            connections: 64,
            duration: Duration::from_secs(1),
            prefix: "ceiling-1a2b3c4d".to_string(),
            name: "bench.intake".to_string(),
            body_bytes: 1024,
        };
        let addrs: [SocketAddr; 2] = [
            "127.0.0.1:4000".parse().unwrap(),
            "127.0.0.1:4001".parse().unwrap(),
        ];
        let script = lua_script(&plan, &addrs);
        assert!(
            script.contains(r#"local targets = { {"127.0.0.1", "4000"}, {"127.0.0.1", "4001"} }"#)
        );
        assert!(script.contains("local prefix = \"ceiling-1a2b3c4d\""));
        let pad = crate::load::pad_len(&plan.prefix, &plan.name, plan.body_bytes);
        assert!(script.contains(&format!("string.rep(\"x\", {pad})")));
    }
}
