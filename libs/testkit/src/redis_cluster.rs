//! A Redis Cluster of a test's own: three masters and a replica of each, on free loopback
//! ports, so a test can kill a master and watch its replica take over.
//!
//! [`TestRedisCluster::start`] runs six `redis-server --cluster-enabled yes` processes (no
//! persistence, in a temporary directory, killed when the value drops) and joins them with
//! `redis-cli --cluster create … --cluster-replicas 1`. Both programs come from `PATH`
//! (Debian: `redis-server`, which brings `redis-tools`; `scripts/dev-env.sh` installs them):
//! without them `start` fails with that hint rather than letting a test pass untested.
//! A cluster node also listens on its port + 10000 (the cluster bus), so ports are chosen
//! below 55536 with that one free too.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// How long the cluster may take to form, or to fail over after a master dies.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// `cluster-node-timeout`: how long a silent master lasts before its replica takes over.
const NODE_TIMEOUT_MS: u32 = 1000;
/// Masters, each with one replica.
const MASTERS: usize = 3;
/// Offset of the cluster bus port from the client port (fixed by Redis).
const BUS_OFFSET: u16 = 10_000;

/// Six `redis-server` processes forming one cluster, owned by one test.
#[derive(Debug)]
pub struct TestRedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

#[derive(Debug)]
struct Node {
    port: u16,
    child: Option<Child>,
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone)]
struct NodeLine {
    id: String,
    port: u16,
    flags: Vec<String>,
    master_id: String,
    /// Slot ranges served, inclusive.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

impl TestRedisCluster {
    /// Starts three masters and three replicas, creates the cluster and waits until every
    /// node reports `cluster_state:ok` and every replica is in sync with its master.
    pub async fn start() -> anyhow::Result<Self> {
        check_binaries().await?;
        let dir = std::env::temp_dir().join(format!(
            "custops-test-redis-cluster-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("Failed to create {}", dir.display()))?;
        let mut cluster = Self {
            nodes: Vec::new(),
            dir,
        };
        for port in free_cluster_ports(MASTERS * 2)? {
            let child = spawn(&cluster.dir, port)?;
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for port in cluster.live_ports() {
            wait_for(&format!("node {port} to answer PING"), move || async move {
                Ok(cli(port, &["PING"]).await.ok().as_deref() == Some("PONG"))
            })
            .await?;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .context("Failed to run redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stdout)
            );
        }
        cluster.wait_until_healthy().await?;
        Ok(cluster)
    }

    /// `redis+cluster://127.0.0.1:<port>,…` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// `redis://127.0.0.1:<port>` of one node: a single-server client pointed at the cluster.
    pub fn node_url(&self, port: u16) -> String {
        format!("redis://127.0.0.1:{port}")
    }

    /// The port of the master serving `key`'s slot now.
    pub async fn master_of(&self, key: &str) -> anyhow::Result<u16> {
        let asked = self.live_port()?;
        let slot: u16 = cli(asked, &["CLUSTER", "KEYSLOT", key])
            .await?
            .parse()
            .context("CLUSTER KEYSLOT did not answer a number")?;
        let nodes = cluster_nodes(asked).await?;
        nodes
            .iter()
            .find(|n| {
                n.has_flag("master")
                    && !n.has_flag("fail")
                    && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            })
            .map(|n| n.port)
            .with_context(|| format!("no master serves slot {slot}"))
    }

    /// The port of the replica of the master on `master_port`.
    pub async fn replica_of(&self, master_port: u16) -> anyhow::Result<u16> {
        let nodes = cluster_nodes(self.live_port()?).await?;
        let master = nodes
            .iter()
            .find(|n| n.port == master_port)
            .with_context(|| format!("no node on port {master_port}"))?;
        nodes
            .iter()
            .find(|n| n.has_flag("slave") && n.master_id == master.id)
            .map(|n| n.port)
            .with_context(|| format!("the master on {master_port} has no replica"))
    }

    /// Kills the node on `port` (SIGKILL, as a crash would) and waits until it is gone.
    pub async fn kill(&mut self, port: u16) -> anyhow::Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .with_context(|| format!("no node on port {port}"))?;
        if let Some(mut child) = node.child.take() {
            child
                .kill()
                .await
                .context("Failed to kill a test redis-server")?;
        }
        Ok(())
    }

    /// Starts the killed node on `port` again with its cluster state, and waits until it has
    /// rejoined (a failed-over master comes back as its successor's replica) and every master
    /// has an in-sync replica again.
    pub async fn restart(&mut self, port: u16) -> anyhow::Result<()> {
        let child = spawn(&self.dir, port)?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .with_context(|| format!("no node on port {port}"))?;
        node.child = Some(child);
        self.wait_until_healthy().await
    }

    /// Stops (SIGSTOP) or resumes (SIGCONT) the node on `port`: a stopped replica keeps its
    /// connections open but acknowledges nothing.
    pub async fn signal(&self, port: u16, stop: bool) -> anyhow::Result<()> {
        let pid = self
            .nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.child.as_ref())
            .and_then(Child::id)
            .with_context(|| format!("no running node on port {port}"))?;
        let status = Command::new("kill")
            .arg(if stop { "-STOP" } else { "-CONT" })
            .arg(pid.to_string())
            .status()
            .await
            .context("Failed to run kill")?;
        if !status.success() {
            bail!("kill -STOP/-CONT {pid} failed: {status}");
        }
        Ok(())
    }

    /// Waits until every surviving node sees `killed` as failed, serving no slot, and
    /// reports `cluster_state:ok`: its replica has been promoted.
    pub async fn wait_for_failover(&self, killed: u16) -> anyhow::Result<()> {
        wait_for(
            &format!("a replica to replace the master on {killed}"),
            move || async move {
                for port in self.live_ports() {
                    let nodes = cluster_nodes(port).await?;
                    let replaced = nodes
                        .iter()
                        .find(|n| n.port == killed)
                        .is_none_or(|n| n.has_flag("fail") && n.slots.is_empty());
                    if !replaced || !cluster_ok(port).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await
    }

    /// Waits until every node reports `cluster_state:ok` and every master has an online
    /// replica whose copy is complete.
    async fn wait_until_healthy(&self) -> anyhow::Result<()> {
        wait_for(
            "the cluster to form with its replicas in sync",
            move || async move {
                for port in self.live_ports() {
                    if !cluster_ok(port).await? {
                        return Ok(false);
                    }
                }
                for port in self.live_ports() {
                    let replication = cli(port, &["INFO", "replication"]).await?;
                    if replication.contains("role:master")
                        && !(replication.contains("connected_slaves:1")
                            && replication.contains("state=online"))
                    {
                        return Ok(false);
                    }
                }
                Ok(true)
            },
        )
        .await
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn live_port(&self) -> anyhow::Result<u16> {
        self.live_ports()
            .first()
            .copied()
            .context("every node of the test cluster is stopped")
    }
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                // A stopped (SIGSTOP) process still dies of SIGKILL.
                let _ = child.start_kill();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Fails with an install hint when `redis-server` or `redis-cli` is missing.
async fn check_binaries() -> anyhow::Result<()> {
    for program in ["redis-server", "redis-cli"] {
        if !crate::program_runs(program).await {
            bail!(
                "{program} is not on PATH: the Redis Cluster tests need redis-server and redis-cli \
                 (Debian: apt-get install redis-server redis-tools; scripts/dev-env.sh installs them)"
            );
        }
    }
    Ok(())
}

/// `count` ports of 127.0.0.1 that were free a moment ago, each below 55536 with its cluster
/// bus port (+10000) free too.
fn free_cluster_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let mut ports = Vec::new();
    // Held until all are chosen, so the same port is not picked twice.
    let mut held = Vec::new();
    for _ in 0..1000 {
        if ports.len() == count {
            break;
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("Failed to find a free port on 127.0.0.1")?;
        let port = listener.local_addr()?.port();
        let Some(bus) = port.checked_add(BUS_OFFSET) else {
            continue;
        };
        if let Ok(bus_listener) = std::net::TcpListener::bind(("127.0.0.1", bus)) {
            ports.push(port);
            held.push(listener);
            held.push(bus_listener);
        }
    }
    if ports.len() < count {
        bail!(
            "found only {} of {count} free port pairs (port, port + 10000)",
            ports.len()
        );
    }
    Ok(ports)
}

fn spawn(dir: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    Command::new("redis-server")
        .current_dir(dir)
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // A replica fails over however long it was out of touch: the test decides when.
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--repl-diskless-sync-delay", "0"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--dir", &dir.to_string_lossy()])
        .args(["--logfile", &format!("redis-{port}.log")])
        .args(["--daemonize", "no"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to run redis-server (is it installed and on PATH?)")
}

/// Runs one `redis-cli` command against the node on `port` and returns its trimmed output.
async fn cli(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("Failed to run redis-cli")?;
    if !output.status.success() {
        bail!("redis-cli {args:?} on {port} failed: {}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn cluster_ok(port: u16) -> anyhow::Result<bool> {
    Ok(cli(port, &["CLUSTER", "INFO"])
        .await?
        .contains("cluster_state:ok"))
}

/// `CLUSTER NODES` as the node on `port` sees the cluster.
async fn cluster_nodes(port: u16) -> anyhow::Result<Vec<NodeLine>> {
    let text = cli(port, &["CLUSTER", "NODES"]).await?;
    text.lines().map(parse_node_line).collect()
}

/// `<id> <ip:port@bus[,host]> <flags> <master> <ping> <pong> <epoch> <link> <slot>…`
fn parse_node_line(line: &str) -> anyhow::Result<NodeLine> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [id, address, flags, master_id, _, _, _, _, slots @ ..] = fields.as_slice() else {
        bail!("unexpected CLUSTER NODES line: {line}");
    };
    let port = address
        .split(['@', ','])
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in CLUSTER NODES line: {line}"))?;
    let slots = slots
        .iter()
        // `[slot->-node]` entries are migrations, not served slots.
        .filter(|s| !s.starts_with('['))
        .map(|s| {
            let s: &str = s;
            let (a, b) = s.split_once('-').unwrap_or((s, s));
            Ok((a.parse::<u16>()?, b.parse::<u16>()?))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(NodeLine {
        id: (*id).to_owned(),
        port,
        flags: flags.split(',').map(str::to_owned).collect(),
        master_id: (*master_id).to_owned(),
        slots,
    })
}

/// Polls `condition` every 50 ms until it holds, failing after [`CLUSTER_TIMEOUT`].
async fn wait_for<F, Fut>(what: &str, mut condition: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + CLUSTER_TIMEOUT;
    let mut last_error = None;
    loop {
        match condition().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(error) => last_error = Some(error),
        }
        if tokio::time::Instant::now() >= deadline {
            let detail = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {CLUSTER_TIMEOUT:?} waiting for {what}{detail}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
