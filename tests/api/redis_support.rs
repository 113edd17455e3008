//! Scaffolding for the cluster tests: a real `redis-server` on a free port
//! (no persistence, killed when dropped), a TCP proxy that can cut one
//! node off from Redis, broker nodes in-process and as real processes.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::helpers::*;

/// A `redis-server` started for one test.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts an empty Redis on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot start redis-server ({err}): the cluster tests need Debian's \
                     redis-server package (apt-get install redis-server; scripts/test.sh \
                     installs it)"
                )
            });
        let deadline = Instant::now() + PATIENCE;
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            port,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills Redis at once (all its data is gone: nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn answers_ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    let mut answer = [0u8; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut answer).is_ok()
        && &answer == b"+PONG\r\n"
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Forwards TCP to a Redis until cut: then every forwarded connection is
/// closed and new ones are refused, until restored.
pub struct TcpProxy {
    pub port: u16,
    open: Arc<AtomicBool>,
    sockets: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpProxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy listens");
        let port = listener.local_addr().expect("a bound address").port();
        let open = Arc::new(AtomicBool::new(true));
        let sockets = Arc::new(Mutex::new(Vec::new()));
        let (accept_open, accept_sockets) = (Arc::clone(&open), Arc::clone(&sockets));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accept_open.load(Ordering::Acquire) {
                    continue; // dropped: the connection is refused
                }
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let mut held = accept_sockets.lock().unwrap();
                for socket in [&client, &upstream] {
                    held.push(socket.try_clone().expect("sockets clone"));
                }
                pipe(client.try_clone().unwrap(), upstream.try_clone().unwrap());
                pipe(upstream, client);
            }
        });
        Self {
            port,
            open,
            sockets,
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every forwarded connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        for socket in self.sockets.lock().unwrap().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

/// Copies one direction until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A broker node in this process, joined to the cluster at `redis_url`,
/// with short intervals so that tests do not wait long.
pub async fn spawn_node(redis_url: &str) -> TestApp {
    spawn_node_with(redis_url, |_| {}).await
}

/// [`spawn_node`] with `adjust` applied to its settings as well.
pub async fn spawn_node_with(
    redis_url: &str,
    adjust: impl FnOnce(&mut sse_broker::config::Settings),
) -> TestApp {
    let url = redis_url.to_owned();
    spawn_app_with(move |s| {
        s.cluster.redis_url = url;
        s.cluster.presence_interval = Duration::from_millis(200);
        s.cluster.command_timeout = Duration::from_secs(1);
        s.cluster.max_reconnect_delay = Duration::from_millis(400);
        adjust(s);
    })
    .await
}

/// A broker node as a real process (so it can be killed with SIGKILL).
pub struct NodeProcess {
    child: Child,
    pub address: String,
}

impl NodeProcess {
    pub fn start(redis_url: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sse-broker"))
            .args([
                "--bind",
                "127.0.0.1:0",
                "--demo",
                "false",
                "--redis",
                redis_url,
            ])
            .env("RUST_LOG", "info")
            .env("SSE_BROKER__CLUSTER__MAX_RECONNECT_DELAY", "400ms")
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening addr=").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = addr_tx.send(addr.to_owned());
                }
            }
        });
        let addr = addr_rx
            .recv_timeout(PATIENCE)
            .expect("the start line names the address");
        Self {
            child,
            address: format!("http://{addr}"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// SIGKILL: no shutdown, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
