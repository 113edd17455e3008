//! Open streams per client IP (`limits.max_streams_per_ip`): a stream takes
//! its client IP's [`StreamSlot`] when it opens (`super::opening`) and
//! gives it back when it is dropped, at the stream's end. Over the maximum,
//! a new stream is refused with 429.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use actix_web::HttpRequest;

use crate::{
    config::LimitsSettings,
    error::ApiError,
    http::client_ip::{ClientKey, client_ip},
};

/// Open streams per client IP, shared by every worker.
pub struct StreamSlots {
    /// Streams one client IP may hold open (0: no limit, and nothing is
    /// counted).
    max: usize,
    /// Open streams per client IP; an IP with none has no entry, so the
    /// map holds at most one entry per open stream.
    open: Mutex<HashMap<ClientKey, usize>>,
    /// The trusted proxies, which say whose IP a request is: see
    /// [`client_ip`].
    settings: LimitsSettings,
}

impl StreamSlots {
    pub fn new(settings: &LimitsSettings) -> Arc<Self> {
        Arc::new(Self {
            max: settings.max_streams_per_ip,
            open: Mutex::new(HashMap::new()),
            settings: settings.clone(),
        })
    }

    /// Takes one stream place for the client IP of `req`; 429 when it holds
    /// its maximum. Without a maximum nothing is counted (nor the IP
    /// worked out): nothing else reads the counts.
    pub fn acquire(self: &Arc<Self>, req: &HttpRequest) -> Result<StreamSlot, ApiError> {
        if self.max == 0 {
            return Ok(StreamSlot(None));
        }
        let ip = client_ip(req, &self.settings);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip.clone()).or_insert(0);
        if *count >= self.max {
            return Err(ApiError::TooManyStreams(format!(
                "this client already holds its maximum of {} open streams",
                self.max
            )));
        }
        *count += 1;
        Ok(StreamSlot(Some((Arc::clone(self), ip))))
    }
}

/// One open stream of one IP; gives its place back when the stream is
/// dropped. Holds nothing when streams per IP are not limited.
pub struct StreamSlot(Option<(Arc<StreamSlots>, ClientKey)>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let Some((slots, ip)) = &self.0 else {
            return;
        };
        let mut open = slots.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(ip);
            }
        }
    }
}
