//! Unit API tokens: issuing, listing and revoking the bearer tokens with which agency systems
//! authenticate as their unit on the agency API (`--token`, `EXCHANGE_TOKEN`).
//!
//! A node issues tokens for its own units through its admin API (`--admin`) and keeps only their
//! hashes: a token is shown once, when it is issued, and is printed alone on stdout so a script can
//! capture it (`t=$(exchange-admin tokens issue ...)`).

use anyhow::Result;
use exchange_wire::api::{IssueToken, IssuedToken, TokenInfo};

use crate::endpoint::Ctx;
use crate::output::{Table, action_line, emit, emit_json, format_ms, sanitize, truncate};
use crate::{TokenIssueArgs, TokenRevokeArgs, TokensListArgs};

/// Column width for labels in the table; the full label is in `--json` output.
const LABEL_COLUMNS: usize = 40;

/// The note on stderr that goes with a freshly issued token (never the token itself).
fn issued_note(t: &IssuedToken) -> String {
    format!(
        "issued token {} for {}; it is shown only once (the node keeps only its hash): hand it to the unit's \
         agency system now, which gives it with EXCHANGE_TOKEN or --token. Revoke it with: exchange-admin \
         tokens revoke {}",
        t.id, t.unit, t.id
    )
}

/// `tokens issue --unit A [--label L]`: the token alone on stdout, a note on stderr.
pub fn issue(ctx: &Ctx, a: &TokenIssueArgs) -> Result<()> {
    let request = IssueToken {
        unit: a.unit.clone(),
        label: a.label.clone().unwrap_or_default(),
    };
    let issued = ctx.admin()?.call(|c| c.issue_token(&request))?;
    eprintln!("{}", issued_note(&issued));
    if ctx.json {
        return emit_json(&issued);
    }
    emit(&format!("{}\n", issued.token))
}

fn tokens_table(tokens: &[TokenInfo]) -> Table {
    let mut t = Table::new(&["ID", "UNIT", "LABEL", "ISSUED (UTC)", "STATE"]);
    for tok in tokens {
        t.push(vec![
            tok.id.clone(),
            tok.unit.to_string(),
            truncate(&sanitize(&tok.label), LABEL_COLUMNS),
            format_ms(tok.issued_at_ms),
            match tok.revoked_at_ms {
                Some(at) => format!("revoked {} UTC", format_ms(at)),
                None => "active".into(),
            },
        ]);
    }
    t
}

/// `tokens list [--unit A]`.
pub fn list(ctx: &Ctx, a: &TokensListArgs) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.tokens(a.unit.as_ref()))?;
    if ctx.json {
        return emit_json(&answer);
    }
    if answer.tokens.is_empty() {
        match &a.unit {
            Some(u) => eprintln!(
                "no tokens for {u}; issue one with: exchange-admin tokens issue --unit {u}"
            ),
            None => eprintln!(
                "no tokens issued; issue one with: exchange-admin tokens issue --unit UNIT"
            ),
        }
        return Ok(());
    }
    emit(&tokens_table(&answer.tokens).render())
}

/// `tokens revoke ID`.
pub fn revoke(ctx: &Ctx, a: &TokenRevokeArgs) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.revoke_token(&a.id))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&action_line(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_never_holds_the_token() {
        let issued = IssuedToken {
            id: "0123456789abcdef".into(),
            unit: "gz.yuexiu/liurong-street".parse().unwrap(),
            token: "s3cr3t-token-value".into(),
        };
        let note = issued_note(&issued);
        assert!(!note.contains("s3cr3t"), "{note}");
        assert!(note.contains("shown only once"));
        assert!(note.contains("tokens revoke 0123456789abcdef"));
        assert!(note.contains("gz.yuexiu/liurong-street"));
    }

    #[test]
    fn tokens_table_shows_revocations() {
        let info = |id: &str, revoked_at_ms| TokenInfo {
            id: id.into(),
            unit: "gz/civil-affairs".parse().unwrap(),
            label: "民政业务系统\x1b[2J".into(),
            issued_at_ms: 1_700_000_000_000,
            revoked_at_ms,
        };
        let text = tokens_table(&[
            info("0123456789abcdef", None),
            info("fedcba9876543210", Some(1_700_000_100_000)),
        ])
        .render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["ID", "UNIT", "LABEL", "ISSUED", "(UTC)", "STATE"]
        );
        assert!(
            lines[1].starts_with("0123456789abcdef  gz/civil-affairs  民政业务系统"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("2023-11-14 22:13:20.000  active"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("revoked 2023-11-14 22:15:00.000 UTC"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }
}
