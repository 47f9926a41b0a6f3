//! Attachments over HTTP, streamed both ways so neither side holds a whole file in memory:
//!
//! - `PUT /v1/attachments/{sha256}?size=N&offset=M` uploads bytes from `offset` (the node's committed
//!   length, 0 at first); each 1 MiB chunk is durable before the next is read. An interrupted upload
//!   is resumed from `committed_bytes`, which `GET /v1/attachments/{sha256}` tells. Each unit uploads
//!   into its own file, within its quotas (see `storage::uploads`); a file another unit uploaded is
//!   neither shown nor counted as this unit's until it sends the bytes itself.
//! - `GET /v1/messages/{id}/attachments/{n}` downloads attachment `n` of a document to its sender or
//!   a recipient here; `Range: bytes=N-` resumes an interrupted download.

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use exchange_wire::api::AttachmentStatus;
use exchange_wire::{Digest, Envelope, UnitAddress};
use futures::StreamExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{AppState, json, parse_id, refuse};
use crate::relay::Refusal;
use crate::relay::access::Caller;
use crate::storage::attachments::{AttachmentError, CHUNK_BYTES, Held};
use crate::storage::uploads::QuotaExceeded;

/// The attachment routes; uploads are bounded by `limits.max_attachment_bytes`, not by the body
/// limit of the other routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/attachments/{sha256}", get(status).put(upload))
        .route("/v1/messages/{id}/attachments/{n}", get(download))
        .layer(DefaultBodyLimit::disable())
}

async fn parse_digest(engine: &AppState, s: &str) -> Result<Digest, Refusal> {
    match s.parse() {
        Ok(d) => Ok(d),
        Err(e) => Err(refuse(engine, Refusal::malformed(format!("attachment path: {e}"))).await),
    }
}

fn status_of(sha256: Digest, held: Held, size: Option<u64>) -> AttachmentStatus {
    match held {
        Held::Complete => AttachmentStatus { sha256, committed_bytes: size.unwrap_or(0), complete: true },
        Held::Partial(n) => AttachmentStatus { sha256, committed_bytes: n, complete: false },
    }
}

fn storage_trouble(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "attachment store failed");
    Refusal { code: "storage", message: "the node could not use its attachment store; try again later".into(), status: 503, transient: true }
        .into_response()
}

/// The size of the complete copy of `sha256`, if there is one.
fn complete_size(engine: &AppState, sha256: &Digest) -> std::io::Result<Option<u64>> {
    Ok(engine.attachments.files.open_complete(sha256)?.map(|(_, len)| len))
}

/// What `caller` may know of `sha256`: the complete copy if it may have it (see
/// `Engine::may_have_attachment`), else its own unfinished upload (with its declared size), else
/// nothing (`None`) — the same whether no unit's copy is here or another unit's is.
async fn view(engine: &AppState, caller: &Caller, sha256: Digest) -> Result<Option<(AttachmentStatus, Option<u64>)>, Response> {
    let unit = match caller {
        Caller::Unit(u) => u,
        // Authentication off: one view for everyone, as a neighbour sees it.
        Caller::Anyone => {
            let held = engine.attachments.attachment_held(sha256).await.map_err(storage_trouble)?;
            let size = if held == Held::Complete { complete_size(engine, &sha256).map_err(storage_trouble)? } else { None };
            return Ok(Some((status_of(sha256, held, size), None)));
        }
    };
    if let Some(size) = complete_size(engine, &sha256).map_err(storage_trouble)?
        && engine.attachments.may_have_attachment(unit, &sha256).await.map_err(IntoResponse::into_response)?
    {
        return Ok(Some((status_of(sha256, Held::Complete, Some(size)), Some(size))));
    }
    let (store, u) = (engine.attachments.files.clone(), unit.to_string());
    let own = tokio::task::spawn_blocking(move || store.upload_held(&u, &sha256)).await.map_err(storage_trouble)?.map_err(storage_trouble)?;
    Ok(own.map(|(n, size)| (status_of(sha256, Held::Partial(n), None), Some(size))))
}

/// The answer when nothing of `sha256` is held for the caller.
fn not_held(sha256: Digest) -> Response {
    Refusal::new(
        "not-found",
        404,
        format!("no attachment {sha256} is held for this unit: upload it with PUT /v1/attachments/{sha256}?size=<bytes>&offset=0"),
    )
    .into_response()
}

async fn status(State(engine): State<AppState>, caller: Caller, Path(sha256): Path<String>) -> Response {
    let sha256 = match parse_digest(&engine, &sha256).await {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    match view(&engine, &caller, sha256).await {
        Ok(Some((s, _))) => json(StatusCode::OK, &s),
        Ok(None) => not_held(sha256),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct UploadQuery {
    size: u64,
    #[serde(default)]
    offset: u64,
}

/// Where an upload's bytes go: the caller unit's own upload, or (authentication off) the shared
/// partial file a neighbour would write.
enum Writer {
    Unit(UnitAddress),
    Anyone,
}

async fn upload(
    State(engine): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    body: Body,
) -> Response {
    let sha256 = match parse_digest(&engine, &sha256).await {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };
    let Ok(Query(UploadQuery { size, offset })) = query else {
        let r = Refusal::malformed("give the attachment's size in bytes and where this upload starts: ?size=<bytes>&offset=<committed bytes, 0 at first>");
        return refuse(&engine, r).await.into_response();
    };
    if size > engine.services.limits.max_attachment_bytes {
        let r = Refusal::new(
            "payload-too-large",
            413,
            format!("the attachment is {size} bytes; this node accepts attachments up to {} bytes (limits.max_attachment_bytes)", engine.services.limits.max_attachment_bytes),
        );
        return refuse(&engine, r).await.into_response();
    }
    let committed = match view(&engine, &caller, sha256).await {
        Ok(Some((s, _))) if s.complete => return json(StatusCode::OK, &AttachmentStatus { sha256, committed_bytes: size, complete: true }),
        Ok(Some((s, declared))) if declared.is_none_or(|d| d == size) => s.committed_bytes,
        Ok(_) => 0,
        Err(r) => return r,
    };
    if offset != committed {
        return wrong_offset(offset, committed);
    }
    let writer = match caller {
        Caller::Unit(u) => Writer::Unit(u),
        Caller::Anyone => Writer::Anyone,
    };
    if let (Writer::Unit(u), 0) = (&writer, committed)
        && let Err(r) = begin(&engine, u, sha256, size).await
    {
        return r;
    }
    receive(engine, writer, sha256, size, committed, body).await
}

/// Starts `unit`'s upload within its quotas (429 for too many unfinished uploads, 507 for too many
/// bytes in them).
async fn begin(engine: &AppState, unit: &UnitAddress, sha256: Digest, size: u64) -> Result<(), Response> {
    let (store, u) = (engine.attachments.files.clone(), unit.to_string());
    let began = tokio::task::spawn_blocking(move || store.begin_upload(&u, &sha256, size)).await.map_err(storage_trouble)?.map_err(storage_trouble)?;
    match began {
        Ok(()) => Ok(()),
        Err(q) => {
            let (code, status) = match q {
                QuotaExceeded::TooMany { .. } => ("too-many-uploads", 429),
                QuotaExceeded::TooManyBytes { .. } => ("upload-quota", 507),
            };
            Err(refuse(engine, Refusal::new(code, status, q.to_string())).await.into_response())
        }
    }
}

/// Streams the body into the attachment store from `committed`.
async fn receive(engine: AppState, writer: Writer, sha256: Digest, size: u64, mut committed: u64, body: Body) -> Response {
    // Bytes are gathered into whole chunks; a chunk is written (and fsync'ed) before more is read,
    // so memory stays at one chunk whatever the attachment's size.
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK_BYTES.min(size) as usize);
    let mut frames = body.into_data_stream();
    let mut ended = false;
    loop {
        let frame: Option<Bytes> = if ended {
            None
        } else {
            match frames.next().await {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    // The agency went away mid-upload: what is committed stays; it resumes from there.
                    tracing::info!(%sha256, committed, error = %e, "attachment upload interrupted");
                    return json(StatusCode::ACCEPTED, &AttachmentStatus { sha256, committed_bytes: committed, complete: false });
                }
                None => {
                    ended = true;
                    None
                }
            }
        };
        if let Some(b) = frame {
            pending.extend_from_slice(&b);
            if committed + (pending.len() as u64) > size {
                let r = Refusal::malformed(format!("more than the declared {size} bytes were sent for attachment {sha256}"));
                return refuse(&engine, r).await.into_response();
            }
        }
        let last = committed + pending.len() as u64 == size;
        while pending.len() as u64 >= CHUNK_BYTES || (last && !pending.is_empty()) {
            let take = pending.len().min(CHUNK_BYTES as usize);
            let rest = pending.split_off(take);
            let chunk = std::mem::replace(&mut pending, rest);
            let appended = match &writer {
                Writer::Unit(u) => engine.attachments.store_upload_chunk(u, sha256, size, committed, chunk).await,
                Writer::Anyone => engine.attachments.store_attachment_chunk("agency", sha256, size, committed, chunk).await,
            };
            match appended {
                Ok(Held::Complete) => {
                    return json(StatusCode::OK, &AttachmentStatus { sha256, committed_bytes: size, complete: true });
                }
                Ok(Held::Partial(n)) => committed = n,
                Err(AttachmentError::WrongOffset { offset, committed }) => return wrong_offset(offset, committed),
                Err(AttachmentError::Io(e)) => return storage_trouble(e),
                Err(AttachmentError::IntakeClosed(closed)) => return Refusal::storage_full(&closed).into_response(),
                Err(e) => {
                    let code = if matches!(e, AttachmentError::DigestMismatch { .. }) { "attachment-mismatch" } else { "malformed" };
                    return refuse(&engine, Refusal::new(code, 422, e.to_string())).await.into_response();
                }
            }
        }
        if ended {
            // The body ended before the declared size: keep what is whole, resume later.
            return json(StatusCode::ACCEPTED, &AttachmentStatus { sha256, committed_bytes: committed, complete: false });
        }
    }
}

/// Another upload of the same attachment moved on, or the client lost count: it must resume from
/// what is committed. Not bad input, so neither counted nor audited.
fn wrong_offset(offset: u64, committed: u64) -> Response {
    Refusal::new(
        "conflict",
        409,
        format!("this node holds the first {committed} bytes of the attachment: upload from offset={committed}, not {offset}"),
    )
    .into_response()
}

async fn download(State(engine): State<AppState>, caller: Caller, Path((id, n)): Path<(String, usize)>, headers: HeaderMap) -> Response {
    let id = match parse_id(&engine, &id).await {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let not_here = || Refusal::new("not-found", 404, format!("no attachment {n} of message {id} for this unit on node {}", engine.services.here));
    let stored = match engine.services.store.message(&id.0).await {
        Ok(Some(m)) => m,
        Ok(None) => return not_here().into_response(),
        Err(e) => return storage_trouble(e),
    };
    let Ok(env) = Envelope::from_canonical_bytes(&stored.header) else { return not_here().into_response() };
    // The sender, or a recipient whose inbox holds the document (and was not recalled from it).
    let allowed = match &caller {
        Caller::Anyone => true,
        Caller::Unit(u) if *u == env.sender => engine.services.dir.current().home_of(u).as_ref() == Some(&engine.services.here),
        Caller::Unit(u) => matches!(
            engine.services.store.inbox_entry(&u.to_string(), &id.0).await,
            Ok(Some(entry)) if entry.state != "recalled"
        ),
    };
    if !allowed {
        return not_here().into_response();
    }
    let Some(a) = exchange_wire::document::attachments(&env).ok().and_then(|all| all.into_iter().nth(n.wrapping_sub(1))) else {
        return not_here().into_response();
    };
    let from = match range_start(&headers) {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r.into_response(),
    };
    let file = match engine.attachments.files.open_complete(&a.sha256) {
        Ok(Some((f, len))) if len == a.size => f,
        Ok(_) => return not_here().into_response(),
        Err(e) => return storage_trouble(e),
    };
    if from > a.size {
        return (StatusCode::RANGE_NOT_SATISFIABLE, [(header::CONTENT_RANGE, format!("bytes */{}", a.size))]).into_response();
    }
    let mut file = tokio::fs::File::from_std(file);
    if let Err(e) = file.seek(std::io::SeekFrom::Start(from)).await {
        return storage_trouble(e);
    }
    let stream = futures::stream::unfold((file, a.size - from), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let n = left.min(256 * 1024);
        let mut buf = vec![0u8; n as usize];
        match file.read_exact(&mut buf).await {
            Ok(_) => Some((Ok::<_, std::io::Error>(Bytes::from(buf)), (file, left - n))),
            Err(e) => Some((Err(e), (file, 0))),
        }
    });
    let disposition = format!("attachment; filename*=UTF-8''{}", percent_encode(&a.name));
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    let text = |s: String| header::HeaderValue::from_str(&s).unwrap_or(header::HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, text(a.media_type.clone()));
    h.insert(header::CONTENT_LENGTH, (a.size - from).into());
    h.insert(header::CONTENT_DISPOSITION, text(disposition));
    h.insert("x-attachment-sha256", text(a.sha256.to_hex()));
    if from > 0 {
        h.insert(header::CONTENT_RANGE, text(format!("bytes {from}-{}/{}", a.size.saturating_sub(1), a.size)));
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

/// `Range: bytes=N-` (the only form a resuming download needs).
fn range_start(headers: &HeaderMap) -> Result<Option<u64>, Refusal> {
    let Some(v) = headers.get(header::RANGE) else { return Ok(None) };
    v.to_str()
        .ok()
        .and_then(|s| s.strip_prefix("bytes="))
        .and_then(|s| s.strip_suffix('-'))
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| Refusal::malformed("only Range: bytes=<start>- is supported (resume a download from byte <start>)"))
}

/// RFC 5987 encoding of a file name for `Content-Disposition`.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
