//! Reading an inbox: the table and JSON of its items, verifying each against its sender's key in
//! the directory, saving payloads, the overdue 办件 list, and finding one item by id.

use super::*;

/// The title shown for a message: its `title` metadata, else its file name, else `-`.
pub(super) fn title_of(e: &Envelope) -> String {
    let title = e
        .metadata
        .get(document::TITLE)
        .or_else(|| e.metadata.get(META_FILE_NAME))
        .cloned()
        .unwrap_or_else(|| "-".into());
    // Attachments first, so truncating a long title never hides them.
    match document::attachments(e).map(|a| a.len()) {
        Ok(n) if n > 0 => format!("[附件 {n}] {title}"),
        _ => title,
    }
}

/// Whether a message's signature verified (`inbox --verify`), or why not.
pub(super) type Verdict = Result<(), String>;

/// The inbox table for people; with verdicts (one per item), a VERIFIED column.
pub(super) fn inbox_table(items: &[InboxItem], verdicts: Option<&[Verdict]>) -> Table {
    let mut header = vec![
        "SEQ",
        "ID",
        "FROM",
        "KIND",
        "PRIORITY",
        "TITLE",
        "STATE",
        "DELIVERED (UTC)",
    ];
    if verdicts.is_some() {
        header.push("VERIFIED");
    }
    let mut t = Table::new(&header);
    for (i, item) in items.iter().enumerate() {
        let e = &item.message.envelope;
        let mut row = vec![
            item.seq.to_string(),
            short_id(&item.id.to_hex()).to_owned(),
            e.sender.to_string(),
            e.kind.to_string(),
            e.priority.to_string(),
            truncate(&sanitize(&title_of(e)), TITLE_COLUMNS),
            item.state.as_str().to_owned(),
            format_ms(item.delivered_at_ms),
        ];
        if let Some(v) = verdicts {
            let ok = v.get(i).is_some_and(Result::is_ok);
            row.push(if ok { "yes" } else { "NO" }.to_owned());
        }
        t.push(row);
    }
    t
}

/// A sender's directory record as the node gave it, or why there is none.
pub(super) type SenderRecord = Result<UnitRecord, String>;

/// Verifies one inbox item offline: its envelope must hash to its id, its payload match the signed
/// digest, and its signature verify against one of the sender's keys that was valid when the
/// envelope was created (`KeyRecord::valid_at`): a key not yet valid, expired or revoked by then does
/// not count.
pub(crate) fn verify_item(item: &InboxItem, sender: &SenderRecord) -> Verdict {
    let claimed = &item.message.envelope.sender;
    let record = sender.as_ref().map_err(Clone::clone)?;
    if &record.address != claimed {
        return Err(format!(
            "the directory answered for {}, not for the sender {claimed}",
            record.address
        ));
    }
    let (signed, _payload) = item
        .message
        .decode()
        .map_err(|e| format!("the message does not decode: {e}"))?;
    if signed.id != item.id {
        return Err(format!(
            "its envelope hashes to {}, not to its id",
            signed.id
        ));
    }
    let created = signed.envelope.created_at_ms;
    let valid: Vec<_> = record.keys.iter().filter(|k| k.valid_at(created)).collect();
    if valid.is_empty() {
        return Err(format!(
            "none of the {} key(s) of {claimed} in the directory was valid when it was created ({} UTC)",
            record.keys.len(),
            format_ms(created)
        ));
    }
    if valid.iter().any(|k| signed.verify(&k.public_key.0).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "the signature does not verify against the {} key(s) of {claimed} valid when it was created \
             ({} UTC): forged or altered",
            valid.len(),
            format_ms(created)
        ))
    }
}

/// The directory record of each sender in `items`, asked of the node once per sender. A sender the
/// directory does not list is recorded as such (its messages fail verification); any other failure
/// stops the command.
pub(super) fn sender_records(
    node: &Endpoint,
    items: &[InboxItem],
) -> Result<HashMap<UnitAddress, SenderRecord>> {
    let mut records = HashMap::new();
    for item in items {
        let sender = &item.message.envelope.sender;
        if records.contains_key(sender) {
            continue;
        }
        let record = node
            .call_found(|c| c.directory_unit(sender))?
            .ok_or_else(|| {
                format!(
                    "{sender} is not in the directory of the node at {}",
                    node.base_url()
                )
            });
        records.insert(sender.clone(), record);
    }
    Ok(records)
}

/// Verifies every item against the records of its sender (one verdict per item, in order).
pub(super) fn verify_items(items: &[InboxItem], records: &HashMap<UnitAddress, SenderRecord>) -> Vec<Verdict> {
    items
        .iter()
        .map(|item| {
            let sender = &item.message.envelope.sender;
            match records.get(sender) {
                Some(record) => verify_item(item, record),
                None => Err(format!("no directory record was asked for {sender}")),
            }
        })
        .collect()
}

/// The inbox page as JSON, each item with `verified` and, when it failed, `verify_error`.
pub(super) fn inbox_json(
    page: &exchange_wire::api::InboxResponse,
    verdicts: &[Verdict],
) -> Result<serde_json::Value> {
    let mut value = serde_json::to_value(page)?;
    if let Some(items) = value.get_mut("items").and_then(|v| v.as_array_mut()) {
        for (item, verdict) in items.iter_mut().zip(verdicts) {
            if let Some(obj) = item.as_object_mut() {
                obj.insert("verified".into(), verdict.is_ok().into());
                if let Err(why) = verdict {
                    obj.insert("verify_error".into(), why.clone().into());
                }
            }
        }
    }
    Ok(value)
}

/// Writes each payload to `dir/<message id>` and each attachment to `dir/<message id>.<n>.<name>`
/// (the name cleaned and shortened to one file name, see `names::saved_file_name`).
/// Files are named by the id, never by the sender's `file-name` alone, which another unit chose and
/// could point anywhere (attachment names are plain file names: the node refuses any other). The
/// payload is checked against the signed envelope's digest, each attachment against its signed
/// SHA-256, and both are written under a temporary name then renamed, so a file that exists is always
/// complete. An interrupted attachment download resumes when the command runs again.
pub(super) fn save_payloads(node: &Endpoint, dir: &Path, items: &[InboxItem]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut unsaved = 0;
    for item in items {
        let (signed, payload) = item
            .message
            .decode()
            .map_err(|e| anyhow!("message {} was not saved: {e}", item.id))?;
        if signed.id != item.id {
            bail!(
                "message {} was not saved: its envelope hashes to {}, not to its id",
                item.id,
                signed.id
            );
        }
        let path = dir.join(item.id.to_hex());
        let part = dir.join(format!(".{}.part", item.id));
        std::fs::write(&part, &payload)
            .and_then(|_| std::fs::rename(&part, &path))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let attachments = document::attachments(&signed.envelope)
            .map_err(|e| anyhow!("the attachments of message {} were not saved: {e}", item.id))?;
        for (i, a) in attachments.iter().enumerate() {
            // Shortened and cleaned (see `names`): a name from an older node never stops the rest.
            let dest = dir.join(crate::names::saved_file_name(&item.id, i + 1, &a.name));
            if dest.exists() {
                continue;
            }
            if let Err(e) = node.call(|c| c.download_attachment(&item.id, i + 1, a, &dest)) {
                eprintln!("attachment {} of message {} was not saved: {e:#}", crate::names::shown(&a.name), item.id);
                unsaved += 1;
            }
        }
    }
    if unsaved > 0 {
        bail!("{unsaved} attachment(s) were not saved (see above); everything else was: run the command again to retry them");
    }
    Ok(())
}

/// `inbox`: one page of a unit's inbox, optionally waiting for new messages, verifying signatures
/// and saving payloads. With `--verify`, only verified payloads are saved, and the command fails
/// (exit code 1) after printing the page when any message does not verify.
pub fn inbox(ctx: &Ctx, a: &InboxArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let page = node.call(|c| c.inbox(&a.unit, a.after, a.limit, Duration::from_secs(a.wait)))?;
    let verdicts = if a.verify {
        let records = sender_records(&node, &page.items)?;
        Some(verify_items(&page.items, &records))
    } else {
        None
    };
    if let Some(dir) = &a.save {
        let keep: Vec<InboxItem> = match &verdicts {
            Some(v) => page
                .items
                .iter()
                .zip(v)
                .filter(|(_, verdict)| verdict.is_ok())
                .map(|(item, _)| item.clone())
                .collect(),
            None => page.items.clone(),
        };
        save_payloads(&node, dir, &keep)?;
        eprintln!("saved {} payload(s) to {}", keep.len(), dir.display());
        if keep.len() < page.items.len() {
            eprintln!(
                "{} payload(s) not saved: their signatures did not verify",
                page.items.len() - keep.len()
            );
        }
    }
    let failed: Vec<(&InboxItem, &String)> = match &verdicts {
        Some(v) => page
            .items
            .iter()
            .zip(v)
            .filter_map(|(item, verdict)| verdict.as_ref().err().map(|why| (item, why)))
            .collect(),
        None => Vec::new(),
    };
    if ctx.json {
        match &verdicts {
            Some(v) => emit_json(&inbox_json(&page, v)?)?,
            None => emit_json(&page)?,
        }
    } else if page.items.is_empty() {
        eprintln!("no messages for {} after seq {}", page.unit, a.after);
    } else {
        emit(&inbox_table(&page.items, verdicts.as_deref()).render())?;
        if page.items.len() as u32 >= a.limit {
            eprintln!("more may follow: --after {}", page.next_after);
        }
    }
    for (item, why) in &failed {
        eprintln!(
            "NOT VERIFIED: message {} (seq {}) from {}: {}",
            item.id,
            item.seq,
            item.message.envelope.sender,
            sanitize(why)
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} message(s) failed signature verification; do not act on them",
            failed.len(),
            page.items.len()
        );
    }
    Ok(())
}

/// How many days past its deadline (办理时限, `YYYY-MM-DD` in China Standard Time) a document is at
/// `now_ms`: 0 on the deadline itself, 1 the day after, and so on, counted in whole China Standard
/// Time days. `None` when the deadline is not a real date. A deadline still ahead (this machine's
/// clock is behind the node's) counts as 0.
pub(super) fn days_overdue(deadline: &str, now_ms: u64) -> Option<u64> {
    let days = china_day(now_ms) - date_days(deadline)?;
    Some(days.max(0) as u64)
}

/// The `overdue` table for people, at `now_ms`; items in the node's order (earliest deadline first).
pub(super) fn overdue_table(items: &[InboxItem], now_ms: u64) -> Table {
    let mut t = Table::new(&[
        "DEADLINE",
        "DAYS OVERDUE",
        "ID",
        "FROM",
        "TITLE",
        "DOC NUMBER",
    ]);
    for item in items {
        let e = &item.message.envelope;
        let deadline = e.metadata.get(document::DEADLINE);
        let days = deadline
            .and_then(|d| days_overdue(d, now_ms))
            .map_or_else(|| "?".to_owned(), |d| d.to_string());
        t.push(vec![
            deadline.cloned().unwrap_or_else(|| "-".into()),
            days,
            short_id(&item.id.to_hex()).to_owned(),
            e.sender.to_string(),
            truncate(&sanitize(&title_of(e)), TITLE_COLUMNS),
            e.metadata
                .get(document::DOC_NUMBER)
                .cloned()
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}

/// `overdue`: the unit's 办件 whose deadline has passed and that it has neither signed for nor
/// returned, earliest deadline first (the node picks and orders them). Succeeds whether or not any
/// are overdue; an empty list is noted on stderr.
pub fn overdue(ctx: &Ctx, a: &OverdueArgs) -> Result<()> {
    let node = ctx.agency(ActingFor::Unit(&a.unit))?;
    let page: InboxResponse = node.call(|c| c.overdue(&a.unit))?;
    if ctx.json {
        emit_json(&page)?;
    } else if !page.items.is_empty() {
        emit(&overdue_table(&page.items, exchange_wire::now_ms()).render())?;
    }
    if page.items.is_empty() {
        eprintln!("nothing overdue");
    }
    Ok(())
}

/// Finds a message in a unit's inbox, paging from the start. A full id stops at the first match; a
/// prefix reads the whole inbox so that an ambiguous prefix is refused rather than guessed.
pub(crate) fn find_in_inbox(node: &Endpoint, unit: &UnitAddress, wanted: &IdPattern) -> Result<InboxItem> {
    let mut after = 0;
    let mut seen = 0usize;
    let mut found: Vec<InboxItem> = Vec::new();
    loop {
        let page = node.call(|c| c.inbox(unit, after, SEARCH_PAGE, Duration::ZERO))?;
        if page.items.is_empty() {
            break;
        }
        seen += page.items.len();
        found.extend(page.items.into_iter().filter(|i| wanted.matches(&i.id)));
        if matches!(wanted, IdPattern::Full(_)) && !found.is_empty() {
            break;
        }
        // A node that does not move forward would make this loop forever.
        if page.next_after <= after {
            break;
        }
        after = page.next_after;
    }
    let shown = match wanted {
        IdPattern::Full(id) => id.to_hex(),
        IdPattern::Prefix(p) => p.clone(),
    };
    match found.len() {
        0 => bail!(
            "message {shown} is not in the inbox of {unit} at {} ({seen} message(s) looked at); check the id and \
             --unit, or whether it has been delivered yet (exchange-admin status ID at the sender's node)",
            node.base_url()
        ),
        1 => Ok(found.remove(0)),
        _ => {
            let ids: Vec<String> = found.iter().map(|i| i.id.to_hex()).collect();
            bail!(
                "{shown} matches {} messages; give more of the id: {}",
                ids.len(),
                ids.join(", ")
            )
        }
    }
}
