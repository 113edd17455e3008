//! Scaffolding for the Redis Cluster and Sentinel tests: real
//! `redis-server` processes on free local ports, joined with
//! `redis-cli --cluster create` (or watched by a sentinel), killed when
//! dropped; what the tests do to them (migrate a slot, kill a primary, wait
//! for its replica to take over); broker nodes joined to them.

use std::{
    collections::HashSet,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sse_broker::config::RedisMode;

use crate::{helpers::*, redis_support::*};

/// A failover takes the cluster's node timeout plus an election; on a busy
/// machine it can take longer than [`PATIENCE`] allows for one event.
pub const FAILOVER_PATIENCE: Duration = Duration::from_secs(40);

/// How long a Redis Cluster node may be silent before it counts as failed
/// (the default, 15 s, would make the failover tests slow).
const NODE_TIMEOUT_MS: &str = "1000";

/// A node of a cluster under test, as the tests name it.
#[derive(Debug, Clone)]
pub struct Node {
    pub port: u16,
    /// Its id in the cluster (`CLUSTER MYID`).
    pub id: String,
}

/// What the tests ask of a Redis Cluster and do to it, by port: cheap to
/// clone and to send to a blocking thread (the in-process broker nodes run
/// on the test's thread, which must not block while they work).
#[derive(Debug, Clone)]
pub struct Topology {
    pub nodes: Vec<Node>,
}

/// A Redis Cluster of `primaries` primaries with `replicas` replicas each;
/// its processes end with it.
pub struct RedisCluster {
    topology: Topology,
    servers: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for RedisCluster {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.topology
    }
}

impl RedisCluster {
    pub fn start(primaries: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut servers = Vec::new();
        for _ in 0..primaries * (1 + replicas) {
            let port = free_port();
            let config = dir.path().join(format!("nodes-{port}.conf"));
            let config = config.to_str().expect("a UTF-8 path").to_owned();
            // Its own free port for the cluster bus (by default port + 10000,
            // which may be taken, or beyond 65535).
            let bus_port = free_port().to_string();
            let data_dir = dir.path().to_str().expect("a UTF-8 path").to_owned();
            servers.push(RedisServer::start_with(
                port,
                &[
                    // Its own folder: a replica's snapshot (dump.rdb) must
                    // not be left where a later server would load it and
                    // refuse to join a new cluster ("node is not empty").
                    "--dir",
                    &data_dir,
                    "--dbfilename",
                    &format!("dump-{port}.rdb"),
                    "--cluster-port",
                    &bus_port,
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &config,
                    "--cluster-node-timeout",
                    NODE_TIMEOUT_MS,
                    // A replica may always take over, however stale.
                    "--cluster-replica-validity-factor",
                    "0",
                    // The other shards go on serving while one has no primary.
                    "--cluster-require-full-coverage",
                    "no",
                ],
            ));
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (Debian's redis-tools, installed with redis-server)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let nodes = servers
            .iter()
            .map(|server| Node {
                port: server.port,
                id: query(server.port, &["CLUSTER", "MYID"]),
            })
            .collect();
        let cluster = Self {
            topology: Topology { nodes },
            servers,
            _dir: dir,
        };
        cluster.wait_until(
            FAILOVER_PATIENCE,
            "the cluster is ready",
            Topology::is_ready,
        );
        cluster
    }

    /// A view to query from another thread.
    pub fn topology(&self) -> Topology {
        self.topology.clone()
    }

    /// SIGKILL for one node.
    pub fn kill(&mut self, port: u16) {
        self.servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("a node of this cluster")
            .kill();
    }
}

impl Topology {
    /// The seed URLs, as `cluster.redis_url` takes them.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node that answers says the cluster is ok, and they agree on
    /// who serves every slot.
    fn is_ready(&self) -> bool {
        let mut views = HashSet::new();
        for node in &self.nodes {
            let Some(info) = try_query::<String>(node.port, &["CLUSTER", "INFO"]) else {
                continue; // killed
            };
            if !info.contains("cluster_state:ok") {
                return false;
            }
            views.insert(self.primaries_seen_by(node.port));
        }
        views.len() == 1
    }

    /// The primaries (by address) and their slot ranges, as one node sees them.
    fn primaries_seen_by(&self, port: u16) -> Vec<String> {
        let nodes = try_query::<String>(port, &["CLUSTER", "NODES"]).unwrap_or_default();
        let mut primaries: Vec<String> = nodes
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                format!("{} {}", fields[1], fields[8..].join(" "))
            })
            .collect();
        primaries.sort();
        primaries
    }

    /// The slot of a channel's keys (their hash tag).
    pub fn slot_of(&self, channel: &str) -> u16 {
        self.nodes
            .iter()
            .find_map(|n| try_query(n.port, &["CLUSTER", "KEYSLOT", &format!("{{{channel}}}")]))
            .expect("a node answers")
    }

    /// The port of the primary that serves `slot` now.
    pub fn owner_of(&self, slot: u16) -> u16 {
        self.nodes
            .iter()
            .find_map(|node| {
                let slots: redis::Value = try_query(node.port, &["CLUSTER", "SLOTS"])?;
                owner_in(&slots, slot)
            })
            .expect("some node names the slot's owner")
    }

    pub fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// A primary other than the one at `than`.
    pub fn other_primary(&self, than: u16) -> u16 {
        self.nodes
            .iter()
            .map(|n| n.port)
            .find(|port| *port != than && is_primary(*port))
            .expect("another primary")
    }

    /// Moves `slot` (and its keys) from the node that serves it to `to`, as
    /// `redis-cli --cluster reshard` does: importing, migrating, the keys
    /// with MIGRATE, then the new owner told to both. Blocks: run it on a
    /// blocking thread while brokers run.
    pub fn migrate_slot(&self, slot: u16, to: u16) {
        let from = self.owner_of(slot);
        let (from_id, to_id) = (&self.node(from).id, &self.node(to).id);
        let slot_text = slot.to_string();
        query::<()>(
            to,
            &["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", from_id],
        );
        query::<()>(
            from,
            &["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", to_id],
        );
        loop {
            let keys: Vec<String> = query(from, &["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys.iter().map(String::as_str));
            query::<()>(from, &args);
        }
        for node in [to, from] {
            query::<()>(node, &["CLUSTER", "SETSLOT", &slot_text, "NODE", to_id]);
        }
        self.wait_until(PATIENCE, "every node knows the slot's new owner", |c| {
            c.is_ready() && c.owner_of(slot) == to
        });
    }

    /// Waits until `check` holds, failing after `patience`. Blocks.
    pub fn wait_until(&self, patience: Duration, what: &str, check: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + patience;
        while !check(self) {
            assert!(Instant::now() < deadline, "{what}: not within {patience:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs one command on the server at `port`.
pub fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> T {
    try_query(port, args).unwrap_or_else(|| panic!("{args:?} on port {port} failed"))
}

/// Runs one command on the server at `port`; `None` when it fails.
pub fn try_query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    command.query(&mut conn).ok()
}

/// Whether the server at `port` is a primary now.
pub fn is_primary(port: u16) -> bool {
    try_query::<redis::Value>(port, &["ROLE"]).is_some_and(|role| match role {
        redis::Value::Array(parts) => {
            matches!(parts.first(), Some(redis::Value::BulkString(r)) if r == b"master")
        }
        _ => false,
    })
}

/// The port of the primary of `slot` in a `CLUSTER SLOTS` answer.
fn owner_in(slots: &redis::Value, slot: u16) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let redis::Value::Array(fields) = range else {
            return None;
        };
        let number = |v: &redis::Value| match v {
            redis::Value::Int(n) => Some(*n),
            _ => None,
        };
        let (start, end) = (number(fields.first()?)?, number(fields.get(1)?)?);
        if !(start..=end).contains(&i64::from(slot)) {
            return None;
        }
        let redis::Value::Array(primary) = fields.get(2)? else {
            return None;
        };
        number(primary.get(1)?).and_then(|port| u16::try_from(port).ok())
    })
}

/// A broker node in this process, joined to the Redis Cluster at `seeds`,
/// with short intervals so that tests do not wait long; `adjust` goes last.
pub async fn spawn_cluster_node(
    seeds: &str,
    adjust: impl FnOnce(&mut sse_broker::config::Settings),
) -> TestApp {
    let seeds = seeds.to_owned();
    spawn_app_with(move |s| {
        s.cluster.redis_url = seeds;
        s.cluster.redis_mode = RedisMode::Cluster;
        s.cluster.presence_interval = Duration::from_millis(200);
        s.cluster.command_timeout = Duration::from_secs(2);
        s.cluster.max_reconnect_delay = Duration::from_millis(400);
        // Idle channels retire (and stop following) within a moment.
        s.stream.heartbeat = Duration::from_millis(200);
        adjust(s);
    })
    .await
}

/// A primary, two replicas and one sentinel watching them (quorum 1).
pub struct SentinelSetup {
    pub primary: RedisServer,
    /// Two, so that the promoted one still has a replica to `WAIT` for.
    pub replicas: Vec<RedisServer>,
    pub sentinel: RedisServer,
    _dir: tempfile::TempDir,
}

/// The name the sentinel knows the primary by.
pub const SENTINEL_MASTER: &str = "sse-test";

impl SentinelSetup {
    pub fn start() -> Self {
        let primary = RedisServer::start();
        let primary_port = primary.port.to_string();
        let replicas = (0..2)
            .map(|_| {
                RedisServer::start_with(
                    free_port(),
                    &[
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--replicaof",
                        "127.0.0.1",
                        &primary_port,
                    ],
                )
            })
            .collect();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 5000\n"
            ),
        )
        .expect("the sentinel's config is written");
        let sentinel = RedisServer::start_with(
            free_port(),
            &[config.to_str().expect("a UTF-8 path"), "--sentinel"],
        );
        let setup = Self {
            primary,
            replicas,
            sentinel,
            _dir: dir,
        };
        let deadline = Instant::now() + FAILOVER_PATIENCE;
        while !setup.replicas_in_sync() {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        setup
    }

    fn replicas_in_sync(&self) -> bool {
        self.replicas.iter().all(|replica| {
            try_query::<String>(replica.port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        })
    }

    /// Waits (without blocking the brokers) until a replica was promoted.
    pub async fn wait_for_failover(&self) {
        let deadline = tokio::time::Instant::now() + FAILOVER_PATIENCE;
        while !self.replicas.iter().any(|r| is_primary(r.port)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no replica was promoted within {FAILOVER_PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
