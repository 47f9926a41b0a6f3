//! Node keys and the root key, changed on the root node: `nodes rotate-key` and
//! `directory hand-over-root` (see docs/operations.md, "Keys").

use anyhow::Result;
use exchange_wire::api::{RootHandoverRequest, RotateKey};

use crate::endpoint::Ctx;
use crate::output::{emit, emit_json};
use crate::{HandOverRootArgs, NodeRotateKeyArgs};

/// The overlap when none is given: long enough for the node to take its staged key.
const DEFAULT_OVERLAP_SECS: u64 = 600;

/// `nodes rotate-key NODE --public-key HEX [--overlap-secs N | --revoke-old]`.
pub fn nodes_rotate_key(ctx: &Ctx, a: &NodeRotateKeyArgs) -> Result<()> {
    let r = RotateKey {
        public_key: a.public_key,
        overlap_secs: if a.revoke_old { 0 } else { a.overlap_secs.unwrap_or(DEFAULT_OVERLAP_SECS) },
        revoke_old: a.revoke_old,
    };
    let answer = ctx.admin()?.call(|c| c.rotate_node_key(&a.id, &r))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&format!("{}\n", answer.message))?;
    eprintln!(
        "node {} takes the new key as soon as the tree reaches it, if it is staged in its <key_file>.next{}",
        a.id,
        if r.revoke_old { "; until then it is cut off".to_string() } else { format!("; stage it within {} s", r.overlap_secs) }
    );
    Ok(())
}

/// `directory hand-over-root --public-key HEX [--overlap-secs N]`.
pub fn hand_over_root(ctx: &Ctx, a: &HandOverRootArgs) -> Result<()> {
    let request = RootHandoverRequest { public_key: a.public_key, overlap_secs: a.overlap_secs };
    let answer = ctx.admin()?.call(|c| c.hand_over_root(&request))?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&format!("{}\n", answer.message))?;
    eprintln!("every node now pins {}; set root_key to it in new nodes' configurations", a.public_key);
    Ok(())
}

/// `directory take-key`.
pub fn take_key(ctx: &Ctx) -> Result<()> {
    let answer = ctx.admin()?.call(|c| c.take_staged_key())?;
    if ctx.json {
        return emit_json(&answer);
    }
    emit(&format!("{}\n", answer.message))
}
