//! The checks every signed input from an agency passes before verification: the sender is the
//! caller's unit and hosted here, it is active, the envelope is fresh and within the size limits.


use exchange_wire::{Envelope, UnitAddress};

use crate::relay::access::Caller;
use crate::relay::{Engine, Refusal};
use crate::directory::Directory;


impl Engine {
    /// The sender of an agency's submission: the caller's own unit, hosted here, active, and the
    /// envelope signed close to now.
    pub(in crate::relay) fn check_sender(&self, dir: &Directory, caller: &Caller, env: &Envelope) -> Result<(), Refusal> {
        caller.may_act_for(&env.sender)?;
        match dir.home_of(&env.sender) {
            Some(home) if home == self.here => {}
            None => return Err(Refusal::new("unknown-sender", 403, format!("sender {} is not in the directory", env.sender))),
            Some(home) => {
                return Err(Refusal::new(
                    "wrong-node",
                    403,
                    format!("sender {} belongs to node {home}; submit through that node", env.sender),
                ));
            }
        }
        self.check_fresh(env.created_at_ms)?;
        self.check_active(dir, &env.sender)
    }

    /// Replay window: an envelope must be signed close to now when it enters the network.
    pub(in crate::relay) fn check_fresh(&self, created_at_ms: u64) -> Result<(), Refusal> {
        let now = exchange_wire::now_ms();
        let skew_ms = self.limits.clock_skew_secs * 1000;
        if created_at_ms.saturating_add(skew_ms) < now {
            return Err(Refusal::new(
                "stale-envelope",
                400,
                format!(
                    "the envelope was created {} s ago; this node accepts envelopes created within {} s (limits.clock_skew_secs): sign it again",
                    (now - created_at_ms) / 1000,
                    self.limits.clock_skew_secs
                ),
            ));
        }
        if created_at_ms > now.saturating_add(skew_ms) {
            return Err(Refusal::new(
                "future-envelope",
                400,
                format!("the envelope is dated {} s in the future; check the sending system's clock", (created_at_ms - now) / 1000),
            ));
        }
        Ok(())
    }

    pub(in crate::relay) fn check_active(&self, dir: &Directory, unit: &UnitAddress) -> Result<(), Refusal> {
        match dir.unit(unit) {
            Some(u) if !dir.is_active(unit) => Err(Refusal::new(
                "unit-suspended",
                403,
                format!("unit {unit} is {:?} in the directory; it cannot send or sign for anything", u.status).to_lowercase(),
            )),
            _ => Ok(()),
        }
    }

    pub(in crate::relay) fn check_size(&self, size: u64) -> Result<(), Refusal> {
        if size > self.limits.max_payload_bytes {
            return Err(Refusal::new(
                "payload-too-large",
                413,
                format!(
                    "payload is {size} bytes; this node accepts at most {} bytes (limits.max_payload_bytes)",
                    self.limits.max_payload_bytes
                ),
            ));
        }
        Ok(())
    }
}
