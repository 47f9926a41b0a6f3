//! How large a batch a forwarder hands its neighbour. A batch is bounded by its encoded size
//! (`relay.batch_max_bytes`, well below what a neighbour with the same settings reads, see
//! `node::max_request_bytes`) and by its count (`relay.batch_max_messages`), and storage cuts it to
//! size before it loads any payload. A neighbour with smaller limits answers a batch it cannot read
//! `too_large`; a handover can also break off the way a batch too large to read or to commit in time
//! makes it break off. Either way the forwarder halves its batch for that link, down to a single
//! message, and doubles it again with every batch that goes through. A single message that the
//! neighbour refuses as too large is refused for good (a dead letter, reported to its sender), so no
//! batch can block a link and nothing behind it (an urgent document included) waits forever.

/// How a handover ended, as far as the size of its batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// The neighbour answered for every parcel.
    Answered,
    /// The neighbour read none of it: the batch was larger than its limit (`limit` bytes).
    TooLarge { limit: u64 },
    /// The batch went out and the exchange broke off (stream ended early, connection closed, no
    /// answer in time, an answer that does not match the batch).
    BrokenOff,
    /// The neighbour could not be reached: says nothing about the batch.
    Unreachable,
}

impl Handover {
    /// Whether a batch of `messages` that ended this way is refused for good: a single message the
    /// neighbour cannot read, so no batch can block the link.
    pub fn gives_up(self, messages: usize) -> bool {
        matches!(self, Handover::TooLarge { .. }) && messages <= 1
    }
}

/// What the forwarder does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on as usual (after the usual back-off, if the handover failed).
    Continue,
    /// Hand over again at once, in a smaller batch: the neighbour is there and said why.
    Split,
    /// The batch was a single message the neighbour cannot read: refuse it for good.
    GiveUp,
}

/// The size limits of the next batch to one neighbour.
#[derive(Debug, Clone)]
pub struct BatchLimit {
    max_messages: usize,
    max_bytes: usize,
    /// The neighbour's limit as it told us, less the request's own framing. Forgotten when the link
    /// comes up again: a restarted neighbour may have new settings.
    neighbour_bytes: Option<usize>,
    messages: usize,
    bytes: usize,
}

impl BatchLimit {
    /// Starts at the configured limits: `max_bytes` of parcels (encoded), `max_messages` parcels.
    pub fn new(max_messages: usize, max_bytes: usize) -> BatchLimit {
        let (max_messages, max_bytes) = (max_messages.max(1), max_bytes.max(1));
        BatchLimit { max_messages, max_bytes, neighbour_bytes: None, messages: max_messages, bytes: max_bytes }
    }

    /// Most parcels, and most encoded bytes of parcels, in the next batch. The first parcel goes
    /// whatever its size, so a single large message still moves.
    pub fn current(&self) -> (usize, usize) {
        (self.messages, self.bytes)
    }

    fn ceiling_bytes(&self) -> usize {
        self.neighbour_bytes.map_or(self.max_bytes, |n| n.min(self.max_bytes))
    }

    /// Takes note of how the handover of a batch of `messages` parcels and `bytes` encoded bytes
    /// (parcels only) ended, and says what to do next.
    pub fn after(&mut self, messages: usize, bytes: usize, how: Handover) -> Next {
        match how {
            Handover::Answered => {
                self.messages = self.messages.saturating_mul(2).min(self.max_messages);
                self.bytes = self.bytes.saturating_mul(2).min(self.ceiling_bytes());
                Next::Continue
            }
            Handover::Unreachable => Next::Continue,
            Handover::TooLarge { limit } => {
                let framing = crate::network::protocol::REQUEST_OVERHEAD_BYTES;
                self.neighbour_bytes = Some(usize::try_from(limit).unwrap_or(usize::MAX).saturating_sub(framing).max(1));
                if how.gives_up(messages) {
                    return Next::GiveUp;
                }
                self.halve(messages, bytes);
                Next::Split
            }
            Handover::BrokenOff => {
                if messages > 1 {
                    self.halve(messages, bytes);
                }
                Next::Continue
            }
        }
    }

    fn halve(&mut self, messages: usize, bytes: usize) {
        self.messages = (messages / 2).max(1);
        self.bytes = (bytes / 2).min(self.ceiling_bytes()).max(1);
    }

    /// The link came up again: the neighbour may have restarted with other limits.
    pub fn link_up(&mut self) {
        self.neighbour_bytes = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_batch_refused_as_too_large_is_halved_until_one_message_goes_then_grows_back() {
        let mut l = BatchLimit::new(512, 16 * MIB);
        assert_eq!(l.current(), (512, 16 * MIB));
        // 200 messages with large headers, 16 MiB in all, to a neighbour that reads 3 MiB.
        let limit = 3 * MIB as u64;
        assert_eq!(l.after(200, 16 * MIB, Handover::TooLarge { limit }), Next::Split);
        let (m, b) = l.current();
        assert_eq!(m, 100);
        assert!(b < 3 * MIB, "at once below what the neighbour said it reads: {b}");
        // A batch of 10 large messages still too large (the limit counts the framing too).
        assert_eq!(l.after(10, 3 * MIB, Handover::TooLarge { limit }), Next::Split);
        assert_eq!(l.after(5, 3 * MIB / 2 + 1, Handover::TooLarge { limit }), Next::Split);
        assert_eq!(l.after(2, MIB, Handover::TooLarge { limit }), Next::Split);
        assert_eq!(l.current().0, 1, "down to a single message");
        assert_eq!(l.after(1, MIB / 2, Handover::Answered), Next::Continue);
        for _ in 0..12 {
            l.after(1, 1, Handover::Answered);
        }
        let (m, b) = l.current();
        assert_eq!(m, 512, "grows back to the configured count");
        assert!(b <= 3 * MIB && b > 2 * MIB, "grows back up to the neighbour's limit, not beyond: {b}");
        // Once the link comes up again (the neighbour may have new settings), up to our own limit.
        l.link_up();
        l.after(1, 1, Handover::Answered);
        l.after(1, 1, Handover::Answered);
        l.after(1, 1, Handover::Answered);
        assert_eq!(l.current(), (512, 16 * MIB));
    }

    #[test]
    fn a_single_message_too_large_for_the_neighbour_is_given_up_not_retried_forever() {
        let mut l = BatchLimit::new(512, 16 * MIB);
        assert_eq!(l.after(1, 9 * MIB, Handover::TooLarge { limit: 3 * MIB as u64 }), Next::GiveUp);
    }

    #[test]
    fn a_handover_that_broke_off_halves_the_batch_but_an_unreachable_neighbour_does_not() {
        let mut l = BatchLimit::new(512, 16 * MIB);
        assert_eq!(l.after(512, 16 * MIB, Handover::Unreachable), Next::Continue);
        assert_eq!(l.current(), (512, 16 * MIB), "a neighbour that is down says nothing about the batch");
        assert_eq!(l.after(512, 12 * MIB, Handover::BrokenOff), Next::Continue);
        assert_eq!(l.current(), (256, 6 * MIB));
        assert_eq!(l.after(1, 8 * MIB, Handover::BrokenOff), Next::Continue, "one message is retried as it is");
        assert_eq!(l.current(), (256, 6 * MIB));
        assert_eq!(l.after(3, MIB, Handover::Answered), Next::Continue);
        assert_eq!(l.current(), (512, 12 * MIB));
        assert_eq!(l.after(3, MIB, Handover::Answered), Next::Continue);
        assert_eq!(l.current(), (512, 16 * MIB), "never beyond the configured limits");
    }
}
