//! Behind a real nginx, configured with `deploy/nginx/sse-broker.conf` (the
//! file the README recommends): events pass one by one without buffering,
//! heartbeats keep an idle stream open past nginx's read timeout,
//! `Last-Event-ID` reaches the broker, and a client cannot move its address
//! (the key of the per-IP limits) with forwarding headers of its own. Without
//! nginx: a peer that is no trusted proxy is counted by its socket address,
//! whatever headers it sends; a trusted one names the client.
//!
//! Needs the `nginx` binary (Debian package `nginx`; `scripts/test.sh`
//! installs it). Each test runs its own nginx, in the foreground and as one
//! process, in a temporary directory, and kills it at the end.

use std::{
    net::{IpAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sse_broker::config::Settings;

use crate::helpers::*;

/// The recommended configuration, as committed.
const RECOMMENDED: &str = include_str!("../../deploy/nginx/sse-broker.conf");

/// A running nginx in front of one broker.
struct Nginx {
    child: Child,
    dir: PathBuf,
    address: String,
}

impl Nginx {
    /// Starts nginx on a free port, proxying to `upstream` (`127.0.0.1:port`)
    /// with the recommended configuration and `read_timeout` as its
    /// `proxy_read_timeout`.
    async fn start(upstream: &str, read_timeout: &str) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("sse-broker-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let site = replace_once(
            RECOMMENDED,
            "server 127.0.0.1:8080;",
            &format!("server {upstream};"),
        );
        let site = replace_once(&site, "listen 80;", &format!("listen 127.0.0.1:{port};"));
        let site = replace_once(
            &site,
            "proxy_read_timeout 60s;",
            &format!("proxy_read_timeout {read_timeout};"),
        );
        std::fs::write(dir.join("sse-broker.conf"), site).unwrap();
        let d = dir.display();
        let main = format!(
            "master_process off;\n\
             worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log off;\n\
               client_body_temp_path {d}/body;\n\
               proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n\
               uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n\
               include {d}/sse-broker.conf;\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), main).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let mut nginx = Self {
            child,
            dir,
            address: format!("http://127.0.0.1:{port}"),
        };
        nginx.wait_listening(port).await;
        nginx
    }

    async fn wait_listening(&mut self, port: u16) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("nginx exited ({exit}): {}", self.error_log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not listen: {}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `nginx` from PATH, or Debian's /usr/sbin/nginx; a clear failure otherwise.
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("nginx"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nginx is not installed: the proxy tests need it \
                 (scripts/test.sh installs it; by hand: apt-get install nginx)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Replaces a line of the recommended configuration, failing loudly if the
/// file no longer contains it (the test must run the file as committed).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "deploy/nginx/sse-broker.conf should contain {from:?} once"
    );
    text.replacen(from, to, 1)
}

fn upstream(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// How long one event may take through the proxy before the test calls it
/// buffered (generous: the proxied median is asserted separately).
const ONE_BY_ONE: Duration = Duration::from_secs(2);

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Each event arrives through nginx before the next is published, and the
/// median latency through nginx is within a few ms of the direct one.
#[actix_web::test]
async fn events_pass_through_nginx_one_by_one() {
    let app = spawn_app().await;
    let nginx = Nginx::start(&upstream(&app), "60s").await;
    let mut direct = app.stream("/stream/live", &[]).await;
    direct.wait_open().await;
    let mut proxied = stream_at(&app.client, &nginx.url("/stream/live"), &[]).await;
    proxied.wait_open().await;
    assert_eq!(proxied.headers["content-type"], "text/event-stream");

    let (mut via_direct, mut via_proxy) = (Vec::new(), Vec::new());
    for n in 0..40 {
        let data = format!("{{\"n\":{n}}}");
        let sent = Instant::now();
        let publish = app.publish("live", &data);
        let arrive_direct = async {
            let event = direct.next_event().await;
            (event, sent.elapsed())
        };
        let arrive_proxied = async {
            let event = tokio::time::timeout(ONE_BY_ONE, proxied.next_event())
                .await
                .unwrap_or_else(|_| {
                    panic!("event {n} did not come through nginx within {ONE_BY_ONE:?}: buffered?")
                });
            (event, sent.elapsed())
        };
        let (_, (d_event, d_time), (p_event, p_time)) =
            futures_util::join!(publish, arrive_direct, arrive_proxied);
        assert_eq!(d_event.data, data);
        assert_eq!(p_event.data, data);
        assert_eq!(p_event.id, d_event.id);
        via_direct.push(d_time);
        via_proxy.push(p_time);
    }
    let (direct_median, proxy_median) = (median(&mut via_direct), median(&mut via_proxy));
    eprintln!(
        "publish-to-receive median over 40 events: direct {direct_median:?}, \
         through nginx {proxy_median:?}"
    );
    assert!(
        proxy_median <= direct_median + Duration::from_millis(5),
        "through nginx {proxy_median:?}, direct {direct_median:?}"
    );
}

/// With a 300 ms heartbeat, a stream stays open through nginx with a 1 s
/// proxy_read_timeout for 3 s of silence, and still delivers afterwards; with
/// a heartbeat longer than the read timeout, nginx cuts the same stream.
#[actix_web::test]
async fn heartbeats_keep_an_idle_stream_open_through_nginx() {
    let app = spawn_app_with(|s| s.stream.heartbeat = Duration::from_millis(300)).await;
    let nginx = Nginx::start(&upstream(&app), "1s").await;
    let mut idle = stream_at(&app.client, &nginx.url("/stream/quiet"), &[]).await;
    idle.wait_open().await;
    // Ten heartbeats: about 3 s, three times nginx's read timeout.
    idle.wait_comments("heartbeat", 10).await;
    assert!(!idle.ended);
    app.publish("quiet", "\"still here\"").await;
    assert_eq!(idle.next_messages(1).await[0].data, "\"still here\"");

    // Control: the same nginx settings cut a stream whose heartbeat is slower.
    let silent = spawn_app_with(|s| s.stream.heartbeat = Duration::from_secs(30)).await;
    let cutting = Nginx::start(&upstream(&silent), "1s").await;
    let mut cut = stream_at(&silent.client, &cutting.url("/stream/quiet"), &[]).await;
    cut.wait_open().await;
    let events = cut.until_end().await;
    assert!(events.is_empty());
    assert!(!cut.comments.iter().any(|c| c == "heartbeat"));
}

/// A client resuming through nginx with Last-Event-ID gets exactly what it
/// missed, replayed by the broker.
#[actix_web::test]
async fn last_event_id_passes_through_nginx() {
    let app = spawn_app().await;
    let nginx = Nginx::start(&upstream(&app), "60s").await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let res = app
            .client
            .post(nginx.url("/publish/resume"))
            .header("content-type", "application/json")
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await
            .expect("publish through nginx");
        assert_eq!(res.status(), 202);
        let body: serde_json::Value = res.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut resumed = stream_at(
        &app.client,
        &nginx.url("/stream/resume"),
        &[("Last-Event-ID", ids[0].as_str())],
    )
    .await;
    let replay = resumed.next_event().await;
    assert_eq!(replay.event, "broker.replay", "{replay:?}");
    let missed = resumed.next_messages(2).await;
    assert_eq!(
        missed.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
        [r#"{"n":2}"#, r#"{"n":3}"#]
    );
    assert_eq!(missed[1].id, ids[2]);
}

/// A client whose connections come from `local` (any 127.0.0.0/8 address
/// works on Linux): a distinct client IP on one machine.
fn client_from(local: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .local_address(local.parse::<IpAddr>().expect("an address"))
        .build()
        .expect("a client")
}

/// Forwarding headers a client makes up, each set naming another address.
fn spoofed(n: u8) -> [(String, String); 3] {
    [
        ("X-Forwarded-For".into(), format!("198.51.100.{n}")),
        ("Forwarded".into(), format!("for=198.51.100.{n}")),
        ("X-Real-IP".into(), format!("198.51.100.{n}")),
    ]
}

/// A stream request to `url` with `headers`, whatever the answer.
async fn open(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
) -> reqwest::Response {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    stream_request(client, url, &headers).await
}

/// The status of a publish to `url` with `headers`.
async fn publish_status(client: &reqwest::Client, url: &str, headers: &[(String, String)]) -> u16 {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .body("1");
    for (name, value) in headers {
        req = req.header(name, value);
    }
    req.send().await.expect("publish").status().as_u16()
}

/// One stream per client IP and one publish per second (no burst): a
/// second of either from one client is refused.
fn one_of_each(s: &mut Settings) {
    s.limits.max_streams_per_ip = 1;
    s.limits.publish_rate = 1;
    s.limits.publish_burst = 1;
}

/// At `base` (the broker, or nginx in front of it, set up with
/// [`one_of_each`]): `mallory` stays one client whatever forwarding headers
/// it makes up (its second stream and second publish are refused 429), and
/// `alice`, from another address, is another.
async fn assert_spoofing_moves_nothing(
    base: &str,
    mallory: &reqwest::Client,
    alice: &reqwest::Client,
) {
    let stream = format!("{base}/stream/spoof");
    let first = open(mallory, &stream, &spoofed(1)).await;
    assert_eq!(first.status(), 200);
    let second = open(mallory, &stream, &spoofed(2)).await;
    assert_eq!(
        second.status(),
        429,
        "a made-up address opened a 2nd stream"
    );
    let (_, problem) = problem(second).await;
    assert_eq!(problem["type"], "urn:sse-broker:problem:too-many-streams");
    let other = open(alice, &stream, &spoofed(1)).await;
    assert_eq!(other.status(), 200, "another client has its own slot");

    let publish = format!("{base}/publish/spoof");
    assert_eq!(publish_status(mallory, &publish, &spoofed(3)).await, 202);
    let again = publish_status(mallory, &publish, &spoofed(4)).await;
    assert_eq!(again, 429, "a made-up address escaped the publish rate");
    assert_eq!(publish_status(alice, &publish, &spoofed(3)).await, 202);
}

/// Through the shipped nginx, trusted as config/production.toml trusts it,
/// made-up X-Forwarded-For / Forwarded headers move neither a client's
/// stream count nor its publish rate; another client behind the same nginx
/// keeps its own.
#[actix_web::test]
async fn spoofed_forwarding_headers_do_not_move_a_client_behind_nginx() {
    let app = spawn_app_with(|s| {
        one_of_each(s);
        s.limits.trusted_proxies =
            vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()];
    })
    .await;
    let nginx = Nginx::start(&upstream(&app), "60s").await;
    let (mallory, alice) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    assert_spoofing_moves_nothing(&nginx.address, &mallory, &alice).await;
}

/// With no proxy trusted (the default), a direct client sending forwarding
/// headers is counted by its socket address.
#[actix_web::test]
async fn a_direct_client_is_counted_by_its_socket_address() {
    let app = spawn_app_with(one_of_each).await;
    let (mallory, alice) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    assert_spoofing_moves_nothing(&app.address, &mallory, &alice).await;
}

/// A trusted peer (the test client playing the proxy) names the client:
/// the right-most X-Forwarded-For address that is no trusted proxy counts,
/// addresses left of it and the Forwarded header do not.
#[actix_web::test]
async fn a_trusted_proxy_names_the_client() {
    let app = spawn_app_with(|s| {
        s.limits.max_streams_per_ip = 1;
        s.limits.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let proxy = client_from("127.0.0.1");
    let stream = app.url("/stream/named");
    let via = |xff: &str, forwarded: &str| {
        [
            ("X-Forwarded-For".to_owned(), xff.to_owned()),
            ("Forwarded".to_owned(), forwarded.to_owned()),
        ]
    };
    let first = open(&proxy, &stream, &via("203.0.113.1", "for=198.51.100.1")).await;
    assert_eq!(first.status(), 200);
    let second = open(&proxy, &stream, &via("203.0.113.2", "for=198.51.100.1")).await;
    assert_eq!(second.status(), 200, "another client behind the proxy");
    let again = open(
        &proxy,
        &stream,
        &via("6.6.6.6, 203.0.113.1", "for=198.51.100.9"),
    )
    .await;
    assert_eq!(
        again.status(),
        429,
        "the first client, whatever it put in front"
    );
}
