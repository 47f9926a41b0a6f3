//! The settlement rules of one inbox entry, as plain functions: 签收 (signed for), 退回 (returned)
//! and 撤回 (recalled by the sender). An entry is settled once; whichever of them the node's single
//! writer applies first wins, and the others learn what it was.
//!
//! They must be decided atomically with the write that follows from them (a recall racing a 签收),
//! so the storage calls them inside its transaction, with the entry as it holds it there; no rule
//! lives in SQL, and every storage engine applies the same ones.

/// An inbox entry as held when a settlement or a recall reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// `delivered`, `signed-for`, `returned` or `recalled`.
    pub state: &'a str,
    /// The receipt that settled it, if one did.
    pub receipt_id: Option<&'a [u8]>,
}

/// The state of an entry not settled yet.
pub const DELIVERED: &str = "delivered";
/// The state of an entry its recipient signed for (签收).
pub const SIGNED_FOR: &str = "signed-for";
/// The state of an entry its recipient returned (退回).
pub const RETURNED: &str = "returned";
/// The state of an entry its sender recalled before it was settled.
pub const RECALLED: &str = "recalled";
/// The state of a query its asked unit answered (the answer settles it, section 7.7).
pub const ANSWERED: &str = "answered";

/// What to do with a 签收 or 退回.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Settle the entry with this receipt, and take the receipt into custody.
    Apply,
    /// The same receipt settled it already: nothing to write, the caller learns it is held.
    Duplicate,
    /// It cannot apply; why, for the unit.
    Conflict(String),
}

/// Decides a 签收 or 退回 (`state`) of message `message_id` in `unit`'s inbox with receipt
/// `receipt_id`, given the entry as held (`None`: not in the inbox).
pub fn settle(entry: Option<Entry>, unit: &str, message_id: &[u8; 32], receipt_id: &[u8; 32]) -> Settlement {
    let id = hex::encode(message_id);
    match entry {
        None => Settlement::Conflict(format!("message {id} is not in the inbox of {unit}")),
        Some(e) if e.state == DELIVERED => Settlement::Apply,
        Some(Entry { receipt_id: Some(r), .. }) if r == receipt_id.as_slice() => Settlement::Duplicate,
        // A query is settled by an answer, not a receipt: name what the unit sent.
        Some(Entry { state: ANSWERED, receipt_id: Some(r) }) => {
            Settlement::Conflict(format!("{unit} has already answered query {id} (answer {})", hex::encode(r)))
        }
        Some(Entry { state, receipt_id: Some(r) }) => {
            Settlement::Conflict(format!("{unit} has already settled message {id} ({state}, receipt {})", hex::encode(r)))
        }
        Some(Entry { state, receipt_id: None }) => {
            Settlement::Conflict(format!("message {id} is {state} for {unit}: it can no longer be settled"))
        }
    }
}

/// What a recall does to one recipient's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recall {
    /// The recall does not come from the document's sender: the entry stays as it is.
    NotSender,
    /// Mark the entry recalled: it was delivered and not settled, or it has not arrived yet (the
    /// recall took another path; the entry is created recalled, so the late document is not
    /// delivered).
    Withdraw,
    /// The entry was settled first (or recalled already): it stays, and this is the outcome.
    TooLate(String),
}

impl Recall {
    /// The outcome reported to the sender.
    pub fn outcome(&self) -> &str {
        match self {
            Recall::NotSender => "not-sender",
            Recall::Withdraw => RECALLED,
            Recall::TooLate(state) => state,
        }
    }
}

/// Decides a recall by `recalled_by` of a message held with sender `held_sender` (`None`: the message
/// has not reached this node yet), for an entry as held (`None`: not delivered yet).
pub fn recall(held_sender: Option<&str>, recalled_by: &str, entry: Option<Entry>) -> Recall {
    if held_sender.is_some_and(|s| s != recalled_by) {
        return Recall::NotSender;
    }
    match entry {
        None => Recall::Withdraw,
        Some(e) if e.state == DELIVERED => Recall::Withdraw,
        Some(e) => Recall::TooLate(e.state.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "gz.haizhu/civil-affairs";

    fn entry<'a>(state: &'a str, receipt: Option<&'a [u8]>) -> Option<Entry<'a>> {
        Some(Entry { state, receipt_id: receipt })
    }

    #[test]
    fn an_entry_is_settled_once() {
        let (m, r, other) = ([1; 32], [2; 32], [3; 32]);
        assert_eq!(settle(entry(DELIVERED, None), UNIT, &m, &r), Settlement::Apply);
        assert_eq!(settle(entry("signed-for", Some(&r)), UNIT, &m, &r), Settlement::Duplicate, "the same receipt again");
        let Settlement::Conflict(why) = settle(entry("returned", Some(&other)), UNIT, &m, &r) else { panic!("a conflict") };
        assert!(why.contains("already settled") && why.contains("returned") && why.contains(&hex::encode(other)), "{why}");
        let Settlement::Conflict(why) = settle(entry(RECALLED, None), UNIT, &m, &r) else { panic!("a conflict") };
        assert!(why.contains("recalled") && why.contains("no longer"), "{why}");
        let Settlement::Conflict(why) = settle(entry(ANSWERED, Some(&other)), UNIT, &m, &r) else { panic!("a conflict") };
        assert!(why.contains("already answered query") && why.contains("answer ") && !why.contains("receipt"), "{why}");
        let Settlement::Conflict(why) = settle(None, UNIT, &m, &r) else { panic!("a conflict") };
        assert!(why.contains("not in the inbox of gz.haizhu/civil-affairs"), "{why}");
    }

    #[test]
    fn a_recall_wins_only_over_what_is_not_settled() {
        let sender = "gz.yuexiu/liurong-street";
        assert_eq!(recall(Some(sender), sender, entry(DELIVERED, None)), Recall::Withdraw);
        assert_eq!(recall(Some(sender), sender, None), Recall::Withdraw, "before the document arrives");
        assert_eq!(recall(None, sender, None), Recall::Withdraw, "before the document is even held here");
        let late = recall(Some(sender), sender, entry("signed-for", Some(&[2; 32])));
        assert_eq!((late.clone(), late.outcome()), (Recall::TooLate("signed-for".into()), "signed-for"));
        assert_eq!(recall(Some(sender), sender, entry(RECALLED, None)).outcome(), RECALLED, "recalled twice: the same outcome");
        let forged = recall(Some(sender), "gz.tianhe/impostor", entry(DELIVERED, None));
        assert_eq!((forged.clone(), forged.outcome()), (Recall::NotSender, "not-sender"));
    }
}
