//! The real binary: it reports its address, and SIGTERM ends open streams
//! cleanly and exits.

use crate::helpers::*;

/// SIGTERM closes open streams and the process exits successfully.
#[actix_web::test]
async fn sigterm_ends_streams_and_exits() {
    let mut broker = BrokerProcess::start("127.0.0.1:0", &[]);
    let res = http_client()
        .get(broker.url("/stream/bye"))
        .send()
        .await
        .unwrap();
    let mut sse = SseClient::new(res);
    sse.wait_open().await;

    broker.terminate();
    sse.until_end().await;
    let exit = broker.wait_exit().await;
    assert!(exit.success(), "{exit:?}");
}
