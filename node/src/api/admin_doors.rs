//! The doors of the admin API: what a request must show before any admin handler sees it.
//!
//! The admin API can issue tokens, suspend and revoke units and rewrite the directory, and an
//! operator often reaches it from a workstation whose browser visits other sites (through an SSH
//! tunnel, say). So every admin route except `/livez`, `/readyz` and `/metrics` requires, in order:
//!
//! 1. no browser: no `Origin` and no `Sec-Fetch-*` header. Browsers add them to every cross-site
//!    request and to every fetch; `exchange-admin`, curl and scripts never do;
//! 2. a `Host` that is an IP address, `localhost` or one of `admin.allowed_hosts`: a page that had a
//!    name of its own resolve to this address (DNS rebinding) sends that name and is refused;
//! 3. the operator token (`Authorization: Bearer …`), which the node writes with mode 0600 to
//!    `admin.token_file` (default `<data_dir>/admin.token`) at first start: only who can read that
//!    file can administer the node;
//! 4. on POST, PUT, PATCH and DELETE, `Content-Type: application/json`, with a body or without: a
//!    form or `text/plain` body is what an HTML form can send without asking anyone.
//!
//! Refusals are counted (`exchange_admin_refusals_total{reason}`) and audited as one entry per
//! source address and reason per `admin.refusal_audit_secs` (see `refusal_tally`), never one synced
//! row per request: a flood of bad requests must not be able to queue writes ahead of custody commits.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::AppState;
use super::refusal_tally::RefusalTally;
use crate::config::NodeConfig;
use crate::relay::Refusal;

/// The doors, shared by every admin request.
pub type AdminDoors = Arc<Doors>;

pub struct Doors {
    /// SHA-256 of the operator token. Compared as digests, so the time a comparison takes says
    /// nothing about the token.
    token_hash: [u8; 32],
    token_file: PathBuf,
    allowed_hosts: Vec<String>,
    engine: AppState,
    /// Refusals not yet audited.
    refusals: Arc<RefusalTally>,
}

/// Why a request was stopped at the doors: the metric label and the answer.
struct Stopped {
    reason: &'static str,
    refusal: Refusal,
}

impl Doors {
    /// Reads the operator token, creating the file (mode 0600) with a new random token at first start.
    /// A token file others may read is refused: anyone who can read it is an operator.
    pub fn open(cfg: &NodeConfig, engine: AppState) -> anyhow::Result<AdminDoors> {
        let token_file = cfg.admin_token_file();
        let token = read_or_create_token(&token_file)?;
        Ok(Arc::new(Doors {
            token_hash: Sha256::digest(token.as_bytes()).into(),
            token_file,
            allowed_hosts: cfg.admin.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            refusals: RefusalTally::new(
                "admin API",
                "admin-refused",
                engine.services.metrics.admin_refusals.clone(),
                &["origin", "host", "no-token", "bad-token", "content-type"],
                Duration::from_secs(cfg.admin.refusal_audit_secs),
            ),
            engine,
        }))
    }

    /// The checks of the module documentation, in that order.
    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Stopped> {
        let stop = |reason, code, status, message: String| Err(Stopped { reason, refusal: Refusal::new(code, status, message) });
        if headers.contains_key(header::ORIGIN) || headers.keys().any(|k| k.as_str().starts_with("sec-fetch-")) {
            return stop(
                "origin",
                "cross-origin",
                403,
                "the admin API does not answer web browsers (the request carries an Origin or Sec-Fetch header); use exchange-admin".into(),
            );
        }
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !host_allowed(host, &self.allowed_hosts) {
            return stop(
                "host",
                "host-not-allowed",
                403,
                format!(
                    "the admin API answers only requests addressed to an IP address or localhost, not to {:?}; \
                     add the name to admin.allowed_hosts if operators use it",
                    host.chars().take(100).collect::<String>()
                ),
            );
        }
        let hint = "send Authorization: Bearer <operator token>, the token the node wrote to admin.token_file (default \
                    <data_dir>/admin.token) at first start; in exchange-admin, --admin-token-file or EXCHANGE_ADMIN_TOKEN_FILE";
        let bearer = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok()).and_then(bearer_token);
        match bearer {
            None | Some("") => return stop("no-token", "unauthenticated", 401, format!("the admin API requires the operator token: {hint}")),
            Some(t) if <[u8; 32]>::from(Sha256::digest(t.as_bytes())) != self.token_hash => {
                return stop("bad-token", "unauthenticated", 401, format!("that is not this node's operator token: {hint}"));
            }
            Some(_) => {}
        }
        if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && !is_json(headers) {
            return stop(
                "content-type",
                "unsupported-media-type",
                415,
                format!("{method} requests to the admin API must have Content-Type: application/json, with a body or without"),
            );
        }
        Ok(())
    }

    /// Audits the refusals every `admin.refusal_audit_secs` until `stop`, then once more.
    pub async fn audit_refusals(self: AdminDoors, stop: CancellationToken) {
        self.refusals.clone().audit(self.engine.clone(), stop).await
    }

    pub fn token_file(&self) -> &Path {
        &self.token_file
    }
}

/// Whether `host` (the `Host` header, with or without a port) names this node without DNS: an IP
/// address, `localhost`, or one of `allowed` (lower case).
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(""),
        None => host,
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    !name.is_empty() && (name.parse::<IpAddr>().is_ok() || name == "localhost" || allowed.contains(&name))
}

/// The token of an `Authorization: Bearer <token>` value, as the agency API reads it: the scheme
/// word in any ASCII case, then whitespace, then the token.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request says its body is JSON (`application/json`, parameters allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The middleware in front of every admin route.
pub async fn guard(State(doors): State<AdminDoors>, req: Request, next: Next) -> Response {
    match doors.check(req.method(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(stopped) => {
            let source = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_else(|| "unknown".into());
            tracing::debug!(%source, reason = stopped.reason, "admin request refused");
            doors.refusals.note(source, stopped.reason);
            stopped.refusal.into_response()
        }
    }
}

/// The token in `path`, or a new one written there (mode 0600, never over an existing file).
fn read_or_create_token(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                anyhow::bail!(
                    "the admin token file {} may be read by other users (mode {mode:o}): whoever reads it administers this node. \
                     Run `chmod 600 {}`, or delete the file to have a new token made at the next start",
                    path.display(),
                    path.display()
                );
            }
            let token = std::fs::read_to_string(path).with_context(|| format!("cannot read the admin token file {}", path.display()))?;
            let token = token.trim().to_owned();
            if token.len() < 32 {
                anyhow::bail!("the admin token file {} holds no token of at least 32 characters; delete it to have a new one made", path.display());
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no randomness for the admin token: {e}"))?;
            let token = format!("govxop_{}", base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, secret));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create the admin token file {}", path.display()))?;
            file.write_all(format!("{token}\n").as_bytes())?;
            file.sync_all()?;
            tracing::info!(file = %path.display(), "created the operator token of the admin API");
            Ok(token)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read the admin token file {}", path.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_allowed(host: &str, allowed: &[&str]) -> bool {
        super::host_allowed(host, &allowed.iter().map(|h| h.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn hosts_are_addresses_localhost_or_listed_names() {
        for ok in ["127.0.0.1:9080", "127.0.0.1", "[::1]:9080", "::1", "localhost:9080", "LOCALHOST", "10.1.2.3:19080"] {
            assert!(host_allowed(ok, &[]), "{ok}");
        }
        for bad in ["evil.example:9080", "", "127.0.0.1.evil.example", "localhost.evil.example:9080", "[evil]:1", ":9080"] {
            assert!(!host_allowed(bad, &[]), "{bad}");
        }
        assert!(host_allowed("ops.gz.gov:9080", &["ops.gz.gov"]));
    }

    #[test]
    fn bearer_scheme_in_any_case() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token(" bearer\tabc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn json_content_type_with_parameters() {
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(!is_json(&h));
        h.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().unwrap());
        assert!(is_json(&h));
    }

    #[test]
    fn token_files_are_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        let made = read_or_create_token(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_or_create_token(&path).unwrap(), made, "the token survives restarts");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_or_create_token(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
