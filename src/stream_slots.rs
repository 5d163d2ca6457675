//! How many event streams may be open at once: in total and per client address. A stream holds a task, a
//! bus subscription and its query for as long as the client stays, so the connection count alone (and
//! HTTP/2's streams per connection) would let one client hold thousands of them. At shutdown the slots
//! also carry the signal that ends every live stream cleanly, so that its client resumes from its
//! cursor on another instance instead of waiting out the grace period and seeing a cut connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use http::StatusCode;
use tokio::sync::watch;

use crate::http_error::HttpError;

/// The open streams and their bounds.
#[derive(Debug)]
pub struct StreamSlots {
    total: usize,
    per_client: usize,
    open: Mutex<Open>,
    /// True once the server shuts down.
    closing: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// One open stream's place; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    client: IpAddr,
}

impl StreamSlots {
    /// Room for `total` streams, `per_client` of them from one address.
    pub fn new(total: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_client,
            open: Mutex::default(),
            closing: watch::Sender::new(false),
        })
    }

    /// Tells every live stream, open or still to come, to end (at shutdown).
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// What a stream watches to learn that the server shuts down: true from then on.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// A place for one more stream from `client`, or the refusal: 503 when the server is full, 429 when
    /// the client already holds its share.
    pub fn take(self: &Arc<Self>, client: IpAddr) -> Result<StreamSlot, HttpError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.total >= self.total {
            return Err(HttpError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many event streams on this server: try again later",
            ));
        }
        let mine = open.by_client.entry(client).or_default();
        if *mine >= self.per_client {
            return Err(HttpError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "Too many event streams from your address: at most {} at once",
                    self.per_client
                ),
            ));
        }
        *mine += 1;
        open.total += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            client,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        open.total -= 1;
        if let Some(mine) = open.by_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Streams open now.
    fn open(slots: &StreamSlots) -> usize {
        slots.open.lock().unwrap().total
    }

    #[test]
    fn bounds_hold_per_client_and_in_total_and_free_on_drop() {
        let slots = StreamSlots::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = slots.take(a).unwrap();
        let _second = slots.take(a).unwrap();
        assert_eq!(
            slots.take(a).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        let _third = slots.take(b).unwrap();
        assert_eq!(
            slots.take(b).unwrap_err().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop(first);
        assert_eq!(open(&slots), 2);
        let _again = slots.take(a).unwrap();
        assert_eq!(open(&slots), 3);
    }
}
