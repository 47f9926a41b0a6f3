//! A forwarder's window: the batches it has on the link to one neighbour, not yet answered and
//! recorded. Each batch's handover runs as a task of the window; the outbox entries of the batches in
//! the window are left out of the next read (`Store::outbox_batch_skipping`), so an entry is on the
//! link at most once at a time. An entry leaves the window when its handover task ends, whatever the
//! way (answered and recorded, failed, panicked or aborted at shutdown): then it is either out of the
//! outbox (recorded) or read again (not recorded).
//!
//! The window is bounded in bytes as well as in batches: with large documents a full window of full
//! batches (4 × 8 MiB) held, at both ends, several copies of each payload at once (read, encoded, on
//! the connection, decoded, bound for the commit), and a node moving 8 MiB documents passed 256 MiB
//! resident. Small documents never reach the byte bound and keep the whole window.
//!
//! Batches of urgent entries (特急, 加急) may go beyond a full window, up to
//! [`URGENT_WINDOW_BATCHES`] of them and `max_bytes` together ([`Window::may_overtake`]); every batch
//! on the link, urgent or not, counts towards the window itself. So a link holds at most
//! `size + URGENT_WINDOW_BATCHES` batches, which `network::behaviour` allows for.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;

use super::signals::Signals;
use crate::network::behaviour::URGENT_WINDOW_BATCHES;

/// The batches on the link to one neighbour; `T` is what a handover reports when it ends.
pub struct Window<T> {
    size: usize,
    /// Urgent batches beside the window: `size`, at most [`URGENT_WINDOW_BATCHES`].
    urgent_size: usize,
    max_bytes: usize,
    flights: JoinSet<T>,
    on_the_link: Arc<Mutex<OnTheLink>>,
}

/// What the batches in the window hold.
#[derive(Default)]
struct OnTheLink {
    /// Outbox positions of their entries.
    entries: BTreeSet<i64>,
    /// Their size on the wire, together.
    bytes: usize,
    /// How many of them carry urgent entries (特急, 加急), and their size on the wire.
    urgent_batches: usize,
    urgent_bytes: usize,
}

/// Takes a batch out of the window when its task ends, even by a panic or an abort.
struct Release {
    on_the_link: Arc<Mutex<OnTheLink>>,
    seqs: Vec<i64>,
    urgent: bool,
    bytes: usize,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = self.on_the_link.lock().unwrap_or_else(|p| p.into_inner());
        for s in &self.seqs {
            held.entries.remove(s);
        }
        held.bytes -= self.bytes;
        if self.urgent {
            held.urgent_batches -= 1;
            held.urgent_bytes -= self.bytes;
        }
    }
}

impl<T: Send + 'static> Window<T> {
    /// A window of `size` batches (at least one) and `max_bytes` on the wire: a batch is opened
    /// while fewer bytes are on the link, and reads at most what is left (see [`Window::bytes_left`]).
    pub fn new(size: usize, max_bytes: usize) -> Window<T> {
        Window { size: size.max(1), urgent_size: size.clamp(1, URGENT_WINDOW_BATCHES), max_bytes, flights: JoinSet::new(), on_the_link: Arc::default() }
    }

    /// Whether `size` batches, or `max_bytes`, are on the link. An empty window is never full,
    /// whatever its byte bound: one batch always goes (as one message always does, whatever its size).
    pub fn is_full(&self) -> bool {
        self.flights.len() >= self.size || (!self.flights.is_empty() && self.bytes_left() == 0)
    }

    /// How many more bytes the next batch may hold (a single message goes whatever its size, so the
    /// window holds at most `max_bytes` and one message more).
    pub fn bytes_left(&self) -> usize {
        self.max_bytes.saturating_sub(self.on_the_link.lock().unwrap_or_else(|p| p.into_inner()).bytes)
    }

    /// Whether a batch of urgent entries (特急, 加急) may go, full window or not: urgent batches have
    /// a window of their own beside the routine one (up to [`URGENT_WINDOW_BATCHES`] batches, and
    /// `max_bytes` and one message more). With a single batch beyond the window, and only for
    /// entries more urgent than the link, the second urgent document of a burst waited for a routine
    /// batch's round trip at every hop (about half a second under load).
    pub fn may_overtake(&self) -> bool {
        let held = self.on_the_link.lock().unwrap_or_else(|p| p.into_inner());
        held.urgent_batches < self.urgent_size && (held.urgent_batches == 0 || held.urgent_bytes < self.max_bytes)
    }

    /// Whether a batch of urgent entries is on the link.
    pub fn urgent_on_the_link(&self) -> bool {
        self.on_the_link.lock().unwrap_or_else(|p| p.into_inner()).urgent_batches > 0
    }

    /// How many more bytes the next urgent batch may hold (it goes whatever its size when no urgent
    /// batch is on the link).
    pub fn urgent_bytes_left(&self) -> usize {
        self.max_bytes.saturating_sub(self.on_the_link.lock().unwrap_or_else(|p| p.into_inner()).urgent_bytes)
    }

    /// Whether no batch is on the link.
    pub fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    /// The outbox positions of the entries on the link, for the next read to leave out.
    pub fn entries(&self) -> BTreeSet<i64> {
        self.on_the_link.lock().unwrap_or_else(|p| p.into_inner()).entries.clone()
    }

    /// Puts the batch of entries `seqs`, `bytes` on the wire, the most urgent of rank `rank`, on the
    /// link: `handover` sends it and records the answer.
    pub fn open(&mut self, seqs: impl IntoIterator<Item = i64>, rank: u8, bytes: usize, handover: impl Future<Output = T> + Send + 'static) {
        let seqs: Vec<i64> = seqs.into_iter().collect();
        let urgent = exchange_wire::Priority::is_urgent_rank(rank);
        {
            let mut held = self.on_the_link.lock().unwrap_or_else(|p| p.into_inner());
            held.entries.extend(&seqs);
            held.bytes += bytes;
            if urgent {
                held.urgent_batches += 1;
                held.urgent_bytes += bytes;
            }
        }
        let release = Release { on_the_link: self.on_the_link.clone(), seqs, urgent, bytes };
        self.flights.spawn(async move {
            let _release = release;
            handover.await
        });
    }

    /// A handover that has ended, if one has.
    pub fn finished(&mut self) -> Option<T> {
        loop {
            match self.flights.try_join_next()? {
                Ok(end) => return Some(end),
                Err(e) => tracing::error!(error = %e, "a handover task failed; its entries will be sent again"),
            }
        }
    }

    /// Waits for the next handover to end (`None` at once when none is on the link).
    pub async fn next_finished(&mut self) -> Option<T> {
        loop {
            match self.flights.join_next().await? {
                Ok(end) => return Some(end),
                Err(e) => tracing::error!(error = %e, "a handover task failed; its entries will be sent again"),
            }
        }
    }

    /// Waits for new outbox work, for a handover to end (returned, to be taken note of), or for
    /// `at_most`, whichever comes first.
    pub async fn wait_for_work(&mut self, signals: &Signals, at_most: Duration) -> Option<T> {
        tokio::select! {
            _ = signals.work.notified() => None,
            _ = tokio::time::sleep(at_most) => None,
            end = self.next_finished(), if !self.flights.is_empty() => end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries stay out of the next read while their batch is on the link, and come back when its
    /// handover ends, whether it ended normally or by a panic.
    #[tokio::test]
    async fn entries_leave_the_window_when_their_handover_ends_even_by_a_panic() {
        let mut w: Window<&'static str> = Window::new(2, 1 << 20);
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        w.open([1, 2], 2, 1000, async move {
            let _ = wait.await;
            "answered"
        });
        assert!(!w.is_full());
        w.open([3], 0, 1000, async { panic!("a handover that panics") });
        assert!(w.is_full() && w.may_overtake(), "full, but a second urgent batch may still go");
        assert_eq!(w.entries().into_iter().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(w.urgent_bytes_left(), (1 << 20) - 1000);
        // The panicked one ends first (the other waits for `go`); its entry is free again.
        tokio::time::timeout(Duration::from_secs(5), async {
            while w.entries().contains(&3) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the panicked batch's entry is released");
        assert_eq!(w.urgent_bytes_left(), 1 << 20, "the urgent batch's bytes left with it");
        go.send(()).unwrap();
        assert_eq!(w.next_finished().await, Some("answered"), "the panic is logged, not returned");
        assert!(w.entries().is_empty() && w.is_empty());
        assert_eq!(w.next_finished().await, None);
    }

    /// Large batches fill the window by their bytes before its batch count: the next batch may hold
    /// only what is left, and the bytes come back when a handover ends.
    #[tokio::test]
    async fn large_batches_fill_the_window_by_their_bytes() {
        let mut w: Window<()> = Window::new(4, 8 << 20);
        assert_eq!(w.bytes_left(), 8 << 20);
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        w.open([1], 2, 5 << 20, async move {
            let _ = wait.await;
        });
        assert!(!w.is_full());
        assert_eq!(w.bytes_left(), 3 << 20, "the next batch reads at most what is left");
        w.open([2], 2, 5 << 20, std::future::pending());
        assert!(w.is_full(), "two batches of a window of four, but its bytes are on the link");
        assert!(w.may_overtake(), "an urgent batch may still go beyond it");
        go.send(()).unwrap();
        assert_eq!(w.next_finished().await, Some(()));
        assert_eq!(w.bytes_left(), 3 << 20, "the first batch's bytes came back");
        assert!(!w.is_full());

        // A byte bound of nothing (`relay.batch_max_bytes = 0`: one message a batch) still lets one
        // batch onto an empty link, rather than leaving the forwarder waiting for an answer to none.
        let mut w: Window<()> = Window::new(4, 0);
        assert!(!w.is_full(), "an empty window takes a batch");
        w.open([1], 2, 1000, std::future::pending());
        assert!(w.is_full());
    }

    /// Urgent batches (特急, 加急) have a window of their own beside the routine one, bounded in
    /// batches and bytes: they go beyond a full window of routine batches, never beyond their own.
    #[tokio::test]
    async fn urgent_batches_have_a_window_of_their_own() {
        assert_eq!(URGENT_WINDOW_BATCHES, 2, "the counts below");
        let mut w: Window<()> = Window::new(4, 8 << 20);
        for seq in 1..=4 {
            w.open([seq], 2, 1000, std::future::pending());
        }
        assert!(w.is_full() && w.may_overtake(), "routine batches fill the window, not the urgent one");
        w.open([5], 0, 1000, std::future::pending());
        assert!(w.may_overtake(), "a second urgent batch may follow the first beyond the window");
        assert_eq!(w.urgent_bytes_left(), (8 << 20) - 1000);
        w.open([6], 1, 1000, std::future::pending());
        assert!(!w.may_overtake(), "two urgent batches: their window is full");
        assert_eq!(w.entries().len(), 6);

        let mut w: Window<()> = Window::new(1, 8 << 20);
        w.open([1], 0, 1000, std::future::pending());
        assert!(!w.may_overtake(), "a window of one batch has one urgent batch beside it");

        let mut w: Window<()> = Window::new(4, 8 << 20);
        w.open([1], 0, 8 << 20, std::future::pending());
        assert!(!w.may_overtake(), "one urgent batch, but its bytes are on the link");
        assert_eq!(w.urgent_bytes_left(), 0);
    }
}
