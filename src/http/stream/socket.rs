//! A stream's socket I/O: every system call the stream machinery makes on a
//! client's connection, and every `unsafe` block it needs, in one file. The
//! outbox and the writers decide what to write and when; this file writes.
//!
//! - [`send`]: the fan-out's write of one event, straight on the socket.
//! - [`write`]: the writers' write of what is queued, through tokio.
//! - [`client_left`], [`unsent`], [`reset_on_close`]: what the direct
//!   writer asks of its connection (did the client go, did it read
//!   everything, make the close a reset).
//! - [`ConnectionSocket`] and [`remember_socket`]: the body writer's note of
//!   a connection's socket (actix-web keeps the connection), to bound the end
//!   of a stream whose client does not read.

use std::{
    any::Any,
    io::{self, IoSlice},
    os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd},
    time::Duration,
};

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::{dev::Extensions, rt::net::TcpStream};

/// The fan-out's write of one unit's bytes: a single `send`, straight on
/// the socket. It skips tokio's readiness check (a cold cache line per
/// subscriber, ~6 % of the broker's CPU in a wide fan-out), which is safe
/// because the writers' own writes ([`write`]) go through tokio: a
/// `WouldBlock` here queues the unit and wakes the writer, whose write then
/// learns from tokio that the socket is full and waits for it to drain.
#[inline]
pub fn send(socket: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(socket).send(bytes)
}

/// One non-blocking write of `slices` (a `write` for one, a `writev` for
/// several), through tokio, so that a full socket makes the writer's
/// `writable()` wait for it to drain. Returns the bytes written.
pub fn write(socket: &TcpStream, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    match slices {
        [] => Ok(0),
        [one] => socket.try_write(one),
        _ => socket.try_write_vectored(slices),
    }
}

/// Reads (and ignores) what the client sent; true once it closed its side
/// or the socket failed. A client sends nothing on an event stream.
pub fn client_left(socket: &TcpStream) -> bool {
    let mut buf = [0u8; 512];
    // Bounded: a client that keeps sending is read again on the next wake-up.
    for _ in 0..16 {
        match socket.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    false
}

/// Bytes the kernel holds for `socket` that the peer has not acknowledged
/// (`SIOCOUTQ`); `None` where it cannot be asked.
pub fn unsent(socket: &TcpStream) -> Option<usize> {
    unsent_bytes(socket.as_fd())
}

/// Makes the socket's close a reset (`SO_LINGER` 0): the socket and its
/// kernel buffers go at once, instead of being sent on after the close.
pub fn reset_on_close(socket: &TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(Duration::ZERO));
}

fn unsent_bytes(socket: BorrowedFd<'_>) -> Option<usize> {
    let mut unsent: libc::c_int = 0;
    // SAFETY: the descriptor is borrowed, so open for the call, and
    // TIOCOUTQ writes one c_int through the pointer it is given.
    let status = unsafe { libc::ioctl(socket.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    (status == 0).then(|| usize::try_from(unsent).unwrap_or(0))
}

/// A connection's socket, noted when it was accepted (see
/// [`remember_socket`]) so the body writer can bound a stream's end.
///
/// It is a bare descriptor number: actix-web owns the connection. The body
/// writer keeps it in an `Rc` that only the body holds, and its watchdog a
/// `Weak` of it; a `ConnectionSocket` is used only through one of those, so
/// only while the body is alive, and so are the dispatcher that polls the
/// body and the connection it owns (all on one thread: the socket cannot be
/// closed, nor its number reused, meanwhile).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSocket(RawFd);

impl ConnectionSocket {
    fn borrow(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket is open while its body is alive, which is when
        // this is reached (see the type's documentation).
        unsafe { BorrowedFd::borrow_raw(self.0) }
    }

    /// Bytes the kernel still holds for the client (see [`unsent`]).
    pub(super) fn unsent(&self) -> Option<usize> {
        unsent_bytes(self.borrow())
    }

    /// Resets the connection now: actix-web's next read sees the end and
    /// its next write fails, so it drops the connection, which the zero
    /// linger turns into a reset.
    pub(super) fn reset(&self) {
        let fd = self.borrow();
        let socket = socket2::SockRef::from(&fd);
        let _ = socket.set_linger(Some(Duration::ZERO));
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
}

/// actix-web's `on_connect` hook for the body writer: notes a connection's
/// TCP socket in the connection's data, for plain TCP and for TLS (the
/// socket under the TLS stream: what the kernel holds unsent is then the
/// encrypted bytes, which serves the same purpose). Only HTTP/1 streams use
/// it (`opening`): an HTTP/2 connection carries other streams.
pub fn remember_socket(connection: &dyn Any, data: &mut Extensions) {
    let fd = if let Some(tcp) = connection.downcast_ref::<TcpStream>() {
        tcp.as_raw_fd()
    } else if let Some(tls) = connection.downcast_ref::<TlsStream<TcpStream>>() {
        tls.get_ref().0.as_raw_fd()
    } else {
        return;
    };
    data.insert(ConnectionSocket(fd));
}
