//! The checks every signed input from an agency passes before verification: the sender is the
//! caller's unit and hosted here, it is active, the envelope is fresh and within the size limits.
//!
//! Plain functions of exactly what they read (this node's id, the limits, the clock, the
//! directory), so the door, queries and data sharing share them and they are tested without a node.

use exchange_wire::{Envelope, NodeId, UnitAddress};

use crate::config::Limits;
use crate::directory::Directory;
use crate::relay::access::Caller;
use crate::relay::Refusal;

/// The sender of an agency's submission: the caller's own unit, hosted `here`, active, and the
/// envelope signed close to `now_ms`.
pub(in crate::relay) fn check_sender(
    here: &NodeId,
    limits: &Limits,
    now_ms: u64,
    dir: &Directory,
    caller: &Caller,
    env: &Envelope,
) -> Result<(), Refusal> {
    caller.may_act_for(&env.sender)?;
    match dir.home_of(&env.sender) {
        Some(home) if home == *here => {}
        None => return Err(Refusal::new("unknown-sender", 403, format!("sender {} is not in the directory", env.sender))),
        Some(home) => {
            return Err(Refusal::new(
                "wrong-node",
                403,
                format!("sender {} belongs to node {home}; submit through that node", env.sender),
            ));
        }
    }
    check_fresh(limits, now_ms, env.created_at_ms)?;
    check_active(dir, &env.sender)
}

/// Replay window: an envelope must be signed within `limits.clock_skew_secs` of `now_ms` when it
/// enters the network.
pub(in crate::relay) fn check_fresh(limits: &Limits, now_ms: u64, created_at_ms: u64) -> Result<(), Refusal> {
    let skew_ms = limits.clock_skew_secs * 1000;
    if created_at_ms.saturating_add(skew_ms) < now_ms {
        return Err(Refusal::new(
            "stale-envelope",
            400,
            format!(
                "the envelope was created {} s ago; this node accepts envelopes created within {} s (limits.clock_skew_secs): sign it again",
                (now_ms - created_at_ms) / 1000,
                limits.clock_skew_secs
            ),
        ));
    }
    if created_at_ms > now_ms.saturating_add(skew_ms) {
        return Err(Refusal::new(
            "future-envelope",
            400,
            format!("the envelope is dated {} s in the future; check the sending system's clock", (created_at_ms - now_ms) / 1000),
        ));
    }
    Ok(())
}

/// A unit the directory lists but not as active (suspended, withdrawn) may neither send nor sign
/// for anything; a unit it does not list is left to the checks that need it.
pub(in crate::relay) fn check_active(dir: &Directory, unit: &UnitAddress) -> Result<(), Refusal> {
    match dir.unit(unit) {
        Some(u) if !dir.is_active(unit) => Err(Refusal::new(
            "unit-suspended",
            403,
            format!("unit {unit} is {:?} in the directory; it cannot send or sign for anything", u.status).to_lowercase(),
        )),
        _ => Ok(()),
    }
}

/// A payload over `limits.max_payload_bytes` is refused before anything else is read.
pub(in crate::relay) fn check_size(limits: &Limits, size: u64) -> Result<(), Refusal> {
    if size > limits.max_payload_bytes {
        return Err(Refusal::new(
            "payload-too-large",
            413,
            format!(
                "payload is {size} bytes; this node accepts at most {} bytes (limits.max_payload_bytes)",
                limits.max_payload_bytes
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use exchange_wire::directory::UnitStatus;
    use exchange_wire::{Kind, Priority};

    use super::*;
    use crate::directory::{test_segments, test_tree};

    const NOW: u64 = 1_800_000_000_000;

    fn limits() -> Limits {
        Limits { clock_skew_secs: 60, max_payload_bytes: 1000, ..Limits::default() }
    }

    fn envelope(sender: &str, created_at_ms: u64) -> Envelope {
        let mut env = Envelope::new(Kind::Document, sender.parse().unwrap(), vec!["gz.haizhu/civil-affairs".parse().unwrap()], vec![], Priority::Routine, b"x");
        env.created_at_ms = created_at_ms;
        env
    }

    fn code(r: Result<(), Refusal>) -> &'static str {
        r.err().map_or("ok", |r| r.code)
    }

    #[test]
    fn fresh_within_the_skew_either_side() {
        let l = limits();
        assert_eq!(code(check_fresh(&l, NOW, NOW)), "ok");
        assert_eq!(code(check_fresh(&l, NOW, NOW - 60_000)), "ok");
        assert_eq!(code(check_fresh(&l, NOW, NOW + 60_000)), "ok");
        assert_eq!(code(check_fresh(&l, NOW, NOW - 60_001)), "stale-envelope");
        assert_eq!(code(check_fresh(&l, NOW, NOW + 60_001)), "future-envelope");
    }

    #[test]
    fn size_up_to_the_limit() {
        assert_eq!(code(check_size(&limits(), 1000)), "ok");
        assert_eq!(code(check_size(&limits(), 1001)), "payload-too-large");
    }

    #[test]
    fn suspended_units_are_refused_unknown_ones_left_alone() {
        let (tree, mut units) = test_segments();
        units[3].units[1].status = UnitStatus::Suspended;
        let dir = Directory::build(Some(&tree), &units).unwrap();
        assert_eq!(code(check_active(&dir, &"gz.haizhu/civil-affairs".parse().unwrap())), "ok");
        assert_eq!(code(check_active(&dir, &"gz.haizhu/chigang-street".parse().unwrap())), "unit-suspended");
        assert_eq!(code(check_active(&dir, &"gz.haizhu/nobody".parse().unwrap())), "ok");
    }

    #[test]
    fn the_sender_is_the_callers_unit_hosted_here() {
        let (dir, l, here) = (test_tree(), limits(), "gz.yuexiu".parse().unwrap());
        let own = "gz.yuexiu/liurong-street";
        let check = |caller: &Caller, sender: &str, at: u64| code(check_sender(&here, &l, NOW, &dir, caller, &envelope(sender, at)));
        assert_eq!(check(&Caller::Unit(own.parse().unwrap()), own, NOW), "ok");
        assert_eq!(check(&Caller::Anyone, own, NOW), "ok");
        assert_eq!(check(&Caller::Unit("gz.haizhu/civil-affairs".parse().unwrap()), own, NOW), "forbidden");
        assert_eq!(check(&Caller::Anyone, "gz.haizhu/civil-affairs", NOW), "wrong-node");
        assert_eq!(check(&Caller::Anyone, "gz.yuexiu/nobody", NOW), "unknown-sender");
        assert_eq!(check(&Caller::Anyone, own, NOW - 61_000), "stale-envelope");
    }
}
