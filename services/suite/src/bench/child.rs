//! The processes a benchmark measures: children of this same `custops` binary
//! (`custops bench-serve SERVICE`, `custops bench-echo`), so what is measured is what ships,
//! in a process of its own. A child prints `listening ADDR` once bound; the parent then waits
//! for gRPC health to say SERVING. Closing the child's standard input asks it to drain and
//! exit, which also happens by itself if this process dies; dropping a [`Child`] kills it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long a child may take to bind and report SERVING (a debug build migrating an empty
/// database on a busy machine takes seconds).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a child may take to drain and exit after its standard input closes.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running child process, killed if dropped before [`Child::stop`].
#[derive(Debug)]
pub struct Child {
    name: String,
    process: std::process::Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
}

impl Child {
    /// Starts `custops ARGS…` with `env` added to a copy of this process's environment from
    /// which every `CUSTOPS_*` and `OTEL_*` variable is removed (the child's settings are the
    /// benchmark's, not the shell's, and it exports no telemetry). Its log goes to
    /// `LOG_DIR/NAME.log`. Returns once it is SERVING.
    pub async fn start(
        name: &str,
        args: &[String],
        env: &[(String, String)],
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("Failed to find the custops binary")?;
        let log = log_dir.join(format!("{name}.log"));
        let log_file =
            File::create(&log).with_context(|| format!("Failed to create {}", log.display()))?;
        let mut command = Command::new(exe);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("CUSTOPS_") || key_text.starts_with("OTEL_") {
                command.env_remove(&key);
            }
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let mut process = command
            .spawn()
            .with_context(|| format!("Failed to start the {name} child"))?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take();
        let mut child = Self {
            name: name.to_owned(),
            process,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let stdout = stdout.context("the child has no standard output")?;
        // The child writes one line; reading it blocks, so a thread of its own does it (and
        // then drains whatever else comes, so the child never blocks on a full pipe).
        let first_line = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            std::thread::spawn(move || {
                let mut rest = Vec::new();
                reader.read_to_end(&mut rest).ok();
            });
            read.map(|_| line)
        });
        let line = match tokio::time::timeout(START_TIMEOUT, first_line).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(error))) => return Err(child.failed(&format!("unreadable output: {error}"))),
            Ok(Err(error)) => return Err(child.failed(&format!("reader failed: {error}"))),
            Err(_) => return Err(child.failed("did not bind within the start timeout")),
        };
        child.addr = match line.trim().strip_prefix("listening ") {
            Some(addr) => addr
                .parse()
                .with_context(|| format!("the {name} child printed a bad address: {line}"))?,
            None => return Err(child.failed("exited before listening")),
        };
        child.wait_serving().await?;
        Ok(child)
    }

    /// The address it serves gRPC on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    /// Its resident memory now (`VmRSS` of `/proc/<pid>/status`), in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .with_context(|| format!("Failed to read the {} child's status", self.name))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .with_context(|| format!("no VmRSS in the {} child's status", self.name))
    }

    /// The CPU time it has used so far (user + system, `/proc/<pid>/stat`), in clock ticks:
    /// compared between children, it says how a load was shared out.
    pub fn cpu_ticks(&self) -> anyhow::Result<u64> {
        process_cpu_ticks(self.pid()).with_context(|| format!("the {} child's CPU time", self.name))
    }

    /// Asks it to drain and exit (closes its standard input), killing it if it has not
    /// within the stop timeout. Fails if it had already died.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(status) = self.process.try_wait()? {
            return Err(self.failed(&format!("had died ({status})")));
        }
        drop(self.stdin.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.process.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.process.kill().ok();
        self.process.wait().ok();
        anyhow::bail!(
            "the {} child did not stop within {STOP_TIMEOUT:?} and was killed (log: {})",
            self.name,
            self.log.display()
        )
    }

    /// Waits until gRPC health reports the whole server SERVING.
    async fn wait_serving(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("http://{}", self.addr);
        loop {
            let serving = async {
                let channel = tonic::transport::Endpoint::from_shared(url.clone())?
                    .connect()
                    .await?;
                let status = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?
                    .into_inner()
                    .status;
                anyhow::Ok(status == ServingStatus::Serving as i32)
            };
            if matches!(serving.await, Ok(true)) {
                return Ok(());
            }
            if let Some(status) = self.process.try_wait()? {
                return Err(self.failed(&format!("exited ({status})")));
            }
            if Instant::now() >= deadline {
                return Err(self.failed("never reported SERVING"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills it and describes the failure with the end of its log.
    fn failed(&mut self, what: &str) -> anyhow::Error {
        self.process.kill().ok();
        self.process.wait().ok();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::anyhow!(
            "the {} child {what}; end of {}:\n{}",
            self.name,
            self.log.display(),
            tail.join("\n")
        )
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if matches!(self.process.try_wait(), Ok(None)) {
            self.process.kill().ok();
            self.process.wait().ok();
        }
    }
}

/// The environment every service child gets: its database, the shared Redis when there is
/// one, loopback only, auth off (as `custops dev`), and a short drain.
pub fn service_env(database_url: &str, redis_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("DATABASE_URL".to_owned(), database_url.to_owned()),
        ("CUSTOPS_LISTEN_HOST".to_owned(), "127.0.0.1".to_owned()),
        ("CUSTOPS_AUTH_MODE".to_owned(), "disabled".to_owned()),
        ("CUSTOPS_SHUTDOWN_GRACE_SECS".to_owned(), "2".to_owned()),
    ];
    if let Some(redis) = redis_url {
        env.push(("REDIS_URL".to_owned(), redis.to_owned()));
    }
    env
}

/// The CPU time process `pid` has used so far (user + system, `/proc/<pid>/stat`), in clock
/// ticks, the unit of `/proc/stat`'s per-CPU times.
pub fn process_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("Failed to read /proc/{pid}/stat"))?;
    // The fields after the command name, which is in parentheses and may hold spaces: state is
    // the first, utime the 12th and stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    ticks(11)
        .zip(ticks(12))
        .map(|(user, system)| user + system)
        .with_context(|| format!("no CPU times in /proc/{pid}/stat"))
}
