//! Just enough of the NATS client protocol, spoken over tokio TCP, to drive the JetStream peer of
//! `exchange-node bench --peer nats`: `INFO`/`CONNECT` on connecting, `PUB`, `SUB`/`UNSUB`, `MSG` and
//! `HMSG` (headers carry JetStream's status codes such as `408 Request Timeout`), `PING`/`PONG` both
//! ways, and request/reply through inbox subjects (which is all the `$JS.<domain>.API.*` calls are).
//!
//! Written here rather than taken from a client crate: the benchmark needs a dozen lines of the text
//! protocol, and a full client would pull in a TLS stack, a JSON schema of JetStream and its own
//! runtime choices, none of which the measurement needs. Everything written to the socket goes through
//! one writer task that coalesces whatever is queued into one `write_all`, as real clients do; one
//! reader task parses the server's lines and routes each message to its subscription's channel.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A message the server delivered to one of our subscriptions.
#[derive(Debug)]
pub struct Msg {
    /// The subscription it came through.
    pub sid: u64,
    /// The message's own subject (for a JetStream message, the subject it was published to, not the
    /// inbox it was delivered to).
    pub subject: String,
    /// Where an answer goes: for a JetStream message pulled from a consumer, the `$JS.ACK.…` subject
    /// its acknowledgement is published to.
    pub reply: Option<String>,
    /// The status code of a header-only status message (`NATS/1.0 408 Request Timeout` → 408), which
    /// JetStream sends for pull requests that expired or found nothing, and the server for requests
    /// without responders (503).
    pub status: Option<u16>,
    pub payload: Vec<u8>,
}

/// Subscriptions and outstanding `PING`s, shared by the client and its reader task.
#[derive(Default)]
struct Routing {
    subs: HashMap<u64, mpsc::UnboundedSender<Msg>>,
    pongs: VecDeque<oneshot::Sender<()>>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

/// One connection to one server.
pub struct Client {
    out: mpsc::UnboundedSender<Vec<u8>>,
    routing: Arc<Mutex<Routing>>,
    next_sid: AtomicU64,
    next_inbox: AtomicU64,
    inbox_prefix: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Client {
    /// Connects, reads the server's `INFO`, sends `CONNECT` (headers and no-responders on, so that a
    /// request to an absent JetStream domain fails at once with 503 instead of timing out) and waits
    /// for the `PONG` that confirms the server accepted it.
    pub async fn connect(addr: SocketAddr, name: &str) -> anyhow::Result<Client> {
        let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .with_context(|| format!("connecting to nats-server at {addr} timed out"))?
            .with_context(|| format!("cannot connect to nats-server at {addr}"))?;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        let mut reader = BufReader::with_capacity(256 * 1024, r);
        let handshake = async {
            let info = read_line(&mut reader).await?;
            if !info.starts_with("INFO ") {
                bail!("nats-server at {addr} did not start with INFO but with {info:?}");
            }
            let connect = format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1,\"name\":\"{name}\",\"lang\":\"rust\",\"version\":\"exchange-bench\"}}\r\nPING\r\n"
            );
            w.write_all(connect.as_bytes()).await?;
            loop {
                let line = read_line(&mut reader).await?;
                match line.as_str() {
                    "PONG" => return Ok(()),
                    "PING" => w.write_all(b"PONG\r\n").await?,
                    l if l.starts_with("-ERR") => bail!("nats-server at {addr} refused the connection: {l}"),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), handshake).await.with_context(|| format!("no handshake with nats-server at {addr} within 5 s"))??;
        let (out, rx) = mpsc::unbounded_channel();
        let routing = Arc::new(Mutex::new(Routing::default()));
        let writer = tokio::spawn(write_loop(w, rx));
        let reader = tokio::spawn(read_loop(reader, routing.clone(), out.clone()));
        Ok(Client {
            out,
            routing,
            next_sid: AtomicU64::new(1),
            next_inbox: AtomicU64::new(1),
            inbox_prefix: format!("_INBOX.{name}.{}", std::process::id()),
            tasks: vec![writer, reader],
        })
    }

    fn send(&self, bytes: Vec<u8>) -> anyhow::Result<()> {
        if self.out.send(bytes).is_err() {
            bail!("the connection to nats-server is closed: {}", self.closed_reason());
        }
        Ok(())
    }

    /// Why the connection ended (or "open").
    pub fn closed_reason(&self) -> String {
        self.routing.lock().expect("routing lock").closed.clone().unwrap_or_else(|| "open".into())
    }

    /// A subject no one else uses, under this connection's inbox prefix.
    pub fn new_inbox(&self) -> String {
        format!("{}.{}", self.inbox_prefix, self.next_inbox.fetch_add(1, Ordering::Relaxed))
    }

    /// Subscribes to `subject` (wildcards allowed); messages arrive on the returned channel, which
    /// ends when the connection does.
    pub fn subscribe(&self, subject: &str) -> anyhow::Result<(u64, mpsc::UnboundedReceiver<Msg>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        Ok((self.subscribe_into(subject, tx)?, rx))
    }

    /// Subscribes to `subject` with messages going to an existing channel (several subscriptions can
    /// share one; [`Msg::sid`] tells them apart). Returns the subscription id.
    pub fn subscribe_into(&self, subject: &str, tx: mpsc::UnboundedSender<Msg>) -> anyhow::Result<u64> {
        let sid = self.next_sid.fetch_add(1, Ordering::Relaxed);
        self.routing.lock().expect("routing lock").subs.insert(sid, tx);
        self.send(format!("SUB {subject} {sid}\r\n").into_bytes())?;
        Ok(sid)
    }

    pub fn unsubscribe(&self, sid: u64) -> anyhow::Result<()> {
        self.routing.lock().expect("routing lock").subs.remove(&sid);
        self.send(format!("UNSUB {sid}\r\n").into_bytes())
    }

    /// Queues one `PUB` (written with whatever else is queued).
    pub fn publish(&self, subject: &str, reply: Option<&str>, payload: &[u8]) -> anyhow::Result<()> {
        let head = match reply {
            Some(r) => format!("PUB {subject} {r} {}\r\n", payload.len()),
            None => format!("PUB {subject} {}\r\n", payload.len()),
        };
        let mut bytes = Vec::with_capacity(head.len() + payload.len() + 2);
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(payload);
        bytes.extend_from_slice(b"\r\n");
        self.send(bytes)
    }

    /// Round trip to the server: when it returns, the server has processed everything sent before.
    pub async fn flush(&self, timeout: Duration) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.routing.lock().expect("routing lock").pongs.push_back(tx);
        self.send(b"PING\r\n".to_vec())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the connection to nats-server closed during a flush: {}", self.closed_reason()),
            Err(_) => bail!("nats-server did not answer PING within {timeout:?}"),
        }
    }

    /// Publishes `payload` to `subject` with a fresh inbox as the reply subject and returns the first
    /// answer. A 503 status (no responders: nothing serves that subject, e.g. a JetStream domain not
    /// reachable yet) is an error.
    pub async fn request(&self, subject: &str, payload: &[u8], timeout: Duration) -> anyhow::Result<Msg> {
        let inbox = self.new_inbox();
        let (sid, mut rx) = self.subscribe(&inbox)?;
        self.publish(subject, Some(&inbox), payload)?;
        let answer = tokio::time::timeout(timeout, rx.recv()).await;
        let _ = self.unsubscribe(sid);
        match answer {
            Ok(Some(m)) if m.status == Some(503) => bail!("no responders for {subject}"),
            Ok(Some(m)) => Ok(m),
            Ok(None) => bail!("the connection to nats-server closed during a request to {subject}: {}", self.closed_reason()),
            Err(_) => bail!("no answer to {subject} within {timeout:?}"),
        }
    }
}

/// Reads one protocol line without its `\r\n`.
async fn read_line(reader: &mut BufReader<OwnedReadHalf>) -> anyhow::Result<String> {
    let mut line = Vec::with_capacity(128);
    if reader.read_until(b'\n', &mut line).await? == 0 {
        bail!("nats-server closed the connection");
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).context("nats-server sent a line that is not UTF-8")
}

/// Writes everything queued, coalescing what is already waiting into one write.
async fn write_loop(mut w: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let mut buf = Vec::with_capacity(256 * 1024);
    while let Some(first) = rx.recv().await {
        buf.extend_from_slice(&first);
        while buf.len() < 1024 * 1024 {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}

/// Parses the server's lines until the connection ends, then records why and closes every
/// subscription's channel.
async fn read_loop(mut reader: BufReader<OwnedReadHalf>, routing: Arc<Mutex<Routing>>, out: mpsc::UnboundedSender<Vec<u8>>) {
    let reason = loop {
        match read_one(&mut reader, &routing, &out).await {
            Ok(()) => {}
            Err(e) => break format!("{e:#}"),
        }
    };
    let mut r = routing.lock().expect("routing lock");
    r.closed = Some(reason);
    r.subs.clear();
    r.pongs.clear();
}

async fn read_one(reader: &mut BufReader<OwnedReadHalf>, routing: &Mutex<Routing>, out: &mpsc::UnboundedSender<Vec<u8>>) -> anyhow::Result<()> {
    let line = read_line(reader).await?;
    let mut parts = line.split_ascii_whitespace();
    match parts.next().unwrap_or("") {
        "MSG" | "HMSG" => {
            let headers = line.starts_with('H');
            let args: Vec<&str> = parts.collect();
            // MSG <subject> <sid> [reply] <size>; HMSG <subject> <sid> [reply] <header size> <total size>
            let fixed = if headers { 4 } else { 3 };
            let (subject, sid, reply, sizes) = match args.len() {
                n if n == fixed => (args[0], args[1], None, &args[2..]),
                n if n == fixed + 1 => (args[0], args[1], Some(args[2]), &args[3..]),
                _ => bail!("malformed line from nats-server: {line:?}"),
            };
            let total: usize = sizes.last().and_then(|s| s.parse().ok()).with_context(|| format!("malformed size in {line:?}"))?;
            let header_len: usize = if headers { sizes[0].parse().with_context(|| format!("malformed header size in {line:?}"))? } else { 0 };
            if header_len > total {
                bail!("header size over total size in {line:?}");
            }
            let mut body = vec![0u8; total + 2];
            reader.read_exact(&mut body).await?;
            body.truncate(total);
            let status = if headers { status_of(&body[..header_len]) } else { None };
            let payload = if headers { body.split_off(header_len) } else { body };
            let sid: u64 = sid.parse().with_context(|| format!("malformed sid in {line:?}"))?;
            let msg = Msg { sid, subject: subject.to_string(), reply: reply.map(str::to_string), status, payload };
            if let Some(tx) = routing.lock().expect("routing lock").subs.get(&sid) {
                let _ = tx.send(msg);
            }
        }
        "PING" => {
            let _ = out.send(b"PONG\r\n".to_vec());
        }
        "PONG" => {
            if let Some(tx) = routing.lock().expect("routing lock").pongs.pop_front() {
                let _ = tx.send(());
            }
        }
        "-ERR" => bail!("nats-server reported an error: {line}"),
        // +OK (verbose is off, but harmless) and INFO updates (cluster changes) need nothing.
        _ => {}
    }
    Ok(())
}

/// The status code of a header block that starts `NATS/1.0 <code> [description]`.
fn status_of(header: &[u8]) -> Option<u16> {
    let first = header.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(first).ok()?.trim();
    text.strip_prefix("NATS/1.0")?.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::status_of;

    #[test]
    fn status_lines_give_their_code() {
        assert_eq!(status_of(b"NATS/1.0 408 Request Timeout\r\n\r\n"), Some(408));
        assert_eq!(status_of(b"NATS/1.0 503\r\n\r\n"), Some(503));
        assert_eq!(status_of(b"NATS/1.0\r\nNats-Stream-Source: x\r\n\r\n"), None);
    }
}
