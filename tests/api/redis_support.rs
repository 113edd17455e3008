//! Scaffolding for the cluster tests: a real `redis-server` on a free port
//! (without persistence, or with an fsynced append-only file; killed,
//! frozen and restarted at will, killed when dropped), a TCP proxy that can
//! cut one node off from Redis, broker nodes in-process and as real
//! processes.

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
    /// Where it keeps an append-only file, fsynced on every write, when
    /// it is persistent.
    dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts an empty Redis on `port` and waits until it answers PING.
    pub fn start_on(port: u16) -> Self {
        Self::launch(port, None, &[])
    }

    /// Starts `redis-server` with `args` (a config file first, if any) on
    /// `port` and waits until it answers PING.
    pub fn start_with(port: u16, args: &[&str]) -> Self {
        Self::launch(port, None, args)
    }

    /// Starts a Redis that persists every write to `dir` before answering
    /// it (`appendfsync always`), so a kill loses nothing it acknowledged.
    pub fn start_persistent(dir: &std::path::Path) -> Self {
        Self::launch(free_port(), Some(dir.to_owned()), &[])
    }

    /// Starts it again on the same port (and the same files).
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::launch(self.port, self.dir.take(), &[]);
    }

    /// Without `args`: no snapshots, and an append-only file in `dir` only
    /// when one is given. Files Redis writes on its own (a replica's
    /// snapshot) go to the temporary directory, not the working tree.
    fn launch(port: u16, dir: Option<std::path::PathBuf>, args: &[&str]) -> Self {
        let mut command = Command::new("redis-server");
        command.current_dir(std::env::temp_dir()).args(args).args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ]);
        if args.is_empty() {
            command.args(["--save", ""]);
            match &dir {
                Some(dir) => command
                    .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir),
                None => command.args(["--appendonly", "no"]),
            };
        }
        let child = command.stdout(Stdio::null()).spawn().unwrap_or_else(|err| {
            panic!(
                "cannot start redis-server ({err}): the cluster tests need Debian's \
                     redis-server package (apt-get install redis-server; scripts/test.sh \
                     installs it)"
            )
        });
        let mut server = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + PATIENCE;
        while !answers_ping(port) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            server.assert_running();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Restarted on a port another test's Redis may have taken meanwhile.
        let pid = server.child.as_ref().map(Child::id);
        assert_eq!(
            process_id(port),
            pid,
            "port {port} answers for another redis-server"
        );
        server
    }

    /// Panics when the process exited (e.g. its port was taken).
    fn assert_running(&mut self) {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            panic!("redis-server on port {} exited: {status}", self.port);
        }
    }

    /// Freezes Redis (SIGSTOP): its sockets stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen Redis go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server runs");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills Redis at once (SIGKILL, frozen or not): unless it is
    /// persistent, all its data is gone.
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

/// The process id the Redis on `port` reports (`INFO server`).
fn process_id(port: u16) -> Option<u32> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    conn.write_all(b"INFO server\r\n").ok()?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.ends_with(b"\r\n\r\n") {
        let n = conn.read(&mut buf).ok().filter(|n| *n > 0)?;
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
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
        Self::start_with(redis_url, &[])
    }

    /// A node with these extra environment variables (settings).
    pub fn start_with(redis_url: &str, env: &[(&str, &str)]) -> Self {
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
            .envs(env.iter().copied())
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

    /// The process id (a node's id in Redis starts with it, in hex).
    pub fn pid(&self) -> u32 {
        self.child.id()
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
