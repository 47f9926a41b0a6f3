//! Queries (查询核验): a unit asks an authoritative unit a question (is this person alive? is this
//! company registered?) and gets an answer signed by that unit, or a timeout at the deadline.
//!
//! A query is an envelope of kind `query` from the asking unit to exactly one unit, carrying its
//! deadline (`query.deadline`, ms since the Unix epoch) and its topic (`query.topic`, e.g.
//! `person.alive`) as signed metadata; the question is the payload. The answer is an envelope of kind
//! `answer` from the asked unit back to the asker, naming the query (`answer.for`); the answer is the
//! payload, signed by the answering unit. Both travel hop by hop like documents. The asker's node
//! decides the outcome: an answer that reaches it by the deadline, or `timed-out` at the deadline.

use crate::address::UnitAddress;
use crate::envelope::{Envelope, Kind, MessageId, Priority};

/// The deadline of a query, decimal milliseconds since the Unix epoch.
pub const QUERY_DEADLINE: &str = "query.deadline";
/// What is asked, e.g. `person.alive` or `legal-person.registered`: tells the answering system which
/// question the payload holds.
pub const QUERY_TOPIC: &str = "query.topic";
/// The id of the query an answer answers.
pub const ANSWER_FOR: &str = "answer.for";

/// Why a query or an answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("a query has metadata query.deadline (milliseconds since the Unix epoch) and query.topic")]
    MissingField,
    #[error("metadata {key} is malformed: {value:?}")]
    Malformed { key: &'static str, value: String },
    #[error("a query goes to exactly one unit (the authoritative one), in `to`, with no `cc`")]
    OneRecipient,
    #[error("an answer goes to the asking unit only, in `to`, with no `cc`")]
    AnswerRecipient,
}

/// A query from `from` to `to` about `topic`, due by `deadline_ms`. Queries are urgent (特急): they
/// overtake documents at every hop, since someone is waiting.
pub fn question(from: UnitAddress, to: UnitAddress, topic: &str, deadline_ms: u64, body: &[u8]) -> Envelope {
    let mut e = Envelope::new(Kind::Query, from, vec![to], vec![], Priority::Urgent, body);
    e.metadata.insert(QUERY_DEADLINE.into(), deadline_ms.to_string());
    e.metadata.insert(QUERY_TOPIC.into(), topic.into());
    e
}

/// The answer of `from` (the asked unit) to query `query` from `to`.
pub fn answer(from: UnitAddress, to: UnitAddress, query: MessageId, body: &[u8]) -> Envelope {
    let mut e = Envelope::new(Kind::Answer, from, vec![to], vec![], Priority::Urgent, body);
    e.metadata.insert(ANSWER_FOR.into(), query.to_hex());
    e
}

/// A query's deadline and topic, checked for shape.
pub fn facts(env: &Envelope) -> Result<(u64, String), QueryError> {
    if env.to.len() != 1 || !env.cc.is_empty() {
        return Err(QueryError::OneRecipient);
    }
    let deadline = env.metadata.get(QUERY_DEADLINE).ok_or(QueryError::MissingField)?;
    let topic = env.metadata.get(QUERY_TOPIC).ok_or(QueryError::MissingField)?;
    let deadline_ms = deadline
        .parse()
        .map_err(|_| QueryError::Malformed { key: QUERY_DEADLINE, value: deadline.clone() })?;
    if topic.is_empty() || topic.len() > 128 {
        return Err(QueryError::Malformed { key: QUERY_TOPIC, value: topic.clone() });
    }
    Ok((deadline_ms, topic.clone()))
}

/// The query an answer answers.
pub fn answered(env: &Envelope) -> Result<MessageId, QueryError> {
    if env.to.len() != 1 || !env.cc.is_empty() {
        return Err(QueryError::AnswerRecipient);
    }
    let v = env.metadata.get(ANSWER_FOR).ok_or(QueryError::MissingField)?;
    v.parse().map_err(|_| QueryError::Malformed { key: ANSWER_FOR, value: v.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> UnitAddress {
        s.parse().unwrap()
    }

    #[test]
    fn questions_and_answers_carry_their_facts() {
        let q = question(u("gz.haizhu/public-security"), u("gz.yuexiu/civil-affairs"), "person.alive", 1_700_000_000_000, b"{}");
        assert_eq!(q.kind, Kind::Query);
        assert_eq!(facts(&q).unwrap(), (1_700_000_000_000, "person.alive".to_string()));
        let a = answer(u("gz.yuexiu/civil-affairs"), u("gz.haizhu/public-security"), q.message_id(), b"{\"alive\":true}");
        assert_eq!(answered(&a).unwrap(), q.message_id());

        let mut two = q.clone();
        two.cc.push(u("gz/civil-affairs"));
        assert_eq!(facts(&two), Err(QueryError::OneRecipient));
        let mut bad = q.clone();
        bad.metadata.insert(QUERY_DEADLINE.into(), "tomorrow".into());
        assert!(matches!(facts(&bad), Err(QueryError::Malformed { .. })));
        let mut none = q;
        none.metadata.remove(QUERY_TOPIC);
        assert_eq!(facts(&none), Err(QueryError::MissingField));
    }
}
