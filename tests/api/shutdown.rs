//! The real binary: it reports its address, and SIGTERM ends open streams
//! cleanly and exits.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use crate::helpers::*;

/// SIGTERM closes open streams and the process exits successfully.
#[actix_web::test]
async fn sigterm_ends_streams_and_exits() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sse-broker"))
        .args(["--bind", "127.0.0.1:0", "--demo", "false"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the broker starts");
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening addr=").nth(1) {
                let _ = addr_tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = addr_rx
        .recv_timeout(PATIENCE)
        .expect("the start line names the address");
    let client = reqwest::Client::new();
    let res = client
        .get(format!("http://{addr}/stream/bye"))
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(res);
    sse.wait_open().await;

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    sse.until_end().await;
    let deadline = std::time::Instant::now() + PATIENCE;
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}
