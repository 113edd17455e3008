//! What actix-web-lab's `Sse` body would cost our fan-out, measured: the
//! body writer hands each subscriber the event's frame, encoded once per
//! event and shared (`Bytes::clone`, a reference count); an `Sse` response
//! encodes each `sse::Event` again for every subscriber when its body is
//! polled. This times both per delivery, on one core, for the payload sizes
//! given (default 100 and 4096 bytes).
//!
//!     cargo run --release --example sse_encoding_cost [-- 100 4096 …]
//!
//! The figures are in BENCHMARKS.md ("stream writers"), beside the body
//! writer's measured CPU per delivery, which they are a share of.

use std::{
    convert::Infallible,
    hint::black_box,
    pin::pin,
    task::{Context, Poll},
    time::Instant,
};

use actix_web::body::MessageBody;
use actix_web_lab::sse;
use bytes::Bytes;
use futures_util::{stream, task::noop_waker};

/// Deliveries timed per payload size and way.
const DELIVERIES: usize = 1_000_000;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 4096]
    } else {
        sizes
    };
    println!("| payload | shared frame (ours), ns/delivery | `Sse` encoding, ns/delivery |");
    println!("|---:|---:|---:|");
    for size in sizes {
        let payload = "x".repeat(size);
        println!(
            "| {size} B | {:.1} | {:.1} |",
            shared_frame(&payload),
            sse_body(&payload)
        );
    }
}

/// Our way: the frame is made once; each delivery clones the shared bytes.
fn shared_frame(payload: &str) -> f64 {
    let frame = Bytes::from(format!(
        "id: hol1u5jw7y-1\nevent: note\ndata: {payload}\n\n"
    ));
    let started = Instant::now();
    for _ in 0..DELIVERIES {
        black_box(frame.clone());
    }
    started.elapsed().as_nanos() as f64 / DELIVERIES as f64
}

/// `Sse`: each subscriber's body encodes the event it is given.
fn sse_body(payload: &str) -> f64 {
    let data = bytestring::ByteString::from(payload.to_owned());
    let events = (0..DELIVERIES).map(move |_| {
        Ok::<_, Infallible>(sse::Event::Data(
            sse::Data::new(data.clone())
                .id("hol1u5jw7y-1")
                .event("note"),
        ))
    });
    let mut body = pin!(sse::Sse::from_stream(stream::iter(events)));
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let started = Instant::now();
    let mut delivered = 0;
    while let Poll::Ready(Some(chunk)) = body.as_mut().poll_next(&mut cx) {
        black_box(chunk.expect("encodes"));
        delivered += 1;
    }
    assert_eq!(delivered, DELIVERIES);
    started.elapsed().as_nanos() as f64 / DELIVERIES as f64
}
