//! Push delivery: a unit may register a webhook; the node POSTs new items of the unit's inbox to it,
//! signed with the node key, in order, and advances the unit's pushed position only when the webhook
//! answered 2xx. While the webhook fails, the node retries with capped exponential backoff; the inbox
//! keeps everything meanwhile, so the agency can always fall back to reading it. Delivery to the
//! webhook is at least once; items carry their ids.

use std::time::Duration;

use ed25519_dalek::Signer;
use exchange_wire::UnitAddress;
use exchange_wire::api::{AdminActionResponse, WebhookDelivery, WebhookInfo, WebhookRequest};

use super::access::Caller;
use super::backoff::Backoff;
use super::reads::inbox_page;
use super::refusal::Refusal;
pub use super::webhook_target::Webhooks;
use super::webhook_target::{Pinned, TargetError, WebhookTargets};
use crate::storage::{AdminOp, EventRow, WriteJob};

/// Items per POST.
const PUSH_BATCH: u32 = 100;


/// A webhook URL must be http(s) and name a host; its addresses are checked by
/// [`WebhookTargets`] at registration (when the name resolves) and again before every push.
fn check_webhook_url(url: &str, targets: &WebhookTargets) -> Result<(), Refusal> {
    let Some((host, port)) = url_target(url).filter(|_| url.len() <= 2048) else {
        return Err(Refusal::malformed(format!("webhook url {:?} must be an http:// or https:// URL", redact_credentials(url))));
    };
    if host.is_empty() {
        return Err(Refusal::malformed("webhook url has no host"));
    }
    match targets.resolve(host, port) {
        Ok(_) => Ok(()),
        Err(e @ TargetError::Refused { .. }) => Err(Refusal::new("webhook-target-refused", 403, e.to_string())),
        // Unresolvable now: each push resolves and checks it again, and fails until it resolves.
        Err(TargetError::Unresolved { .. }) => Ok(()),
    }
}

/// The host and port of an http(s) URL (80 and 443 when none is given).
fn url_target(url: &str) -> Option<(&str, u16)> {
    let default = if url.starts_with("https://") { 443 } else { 80 };
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']')?;
            (h, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    Some((host, port))
}

/// A URL with any `user:password@` replaced, for logs and the audit log.
fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s && !url[s + 3..at].contains('/') => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// One POST to a webhook: the host is resolved once, every address checked, and the request
/// connects only to those addresses. Returns the HTTP status, or why nothing was sent.
fn deliver(targets: &WebhookTargets, url: &str, node: &str, signature: &str, body: &[u8]) -> Result<u16, String> {
    let (host, port) = url_target(url).ok_or_else(|| "the webhook url does not parse".to_string())?;
    let addrs = targets.resolve(host, port).map_err(|e| e.to_string())?;
    // No redirects (a webhook answers for itself and may not send the node elsewhere) and no proxy
    // from the environment (the pinned addresses are the webhook's own).
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build();
    let agent = ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::new(), Pinned(addrs));
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Exchange-Node", node)
        .header("X-Exchange-Signature", signature)
        .send(body)
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

/// The webhook part's work: it reads, commits and signs through the shared services it holds
/// (`self.services`), and wakes on the inbox wake-up; it needs nothing else of the engine.
impl Webhooks {
    /// Whether `unit`'s webhook may be pushed to now: not while the unit is suspended or revoked.
    fn may_push(&self, unit: &UnitAddress) -> bool {
        self.services.dir.current().unit(unit).is_none_or(|u| u.status == exchange_wire::directory::UnitStatus::Active)
    }

    /// `PUT /v1/units/{node}/{unit}/webhook`.
    pub async fn set(&self, caller: &Caller, unit: &UnitAddress, req: WebhookRequest) -> Result<WebhookInfo, Refusal> {
        caller.may_act_for(unit)?;
        self.check_hosted(unit)?;
        // The check may resolve a name: off the async workers.
        let (url, targets) = (req.url.clone(), self.targets());
        tokio::task::spawn_blocking(move || check_webhook_url(&url, &targets))
            .await
            .map_err(|e| Refusal::new("storage", 500, format!("the webhook check did not finish: {e}")))??;
        let from_seq = if req.from_start { 0 } else { self.services.store.inbox_last_seq(unit.as_str()).await? };
        let op = AdminOp::SetWebhook { unit: unit.to_string(), url: req.url.clone(), from_seq, restart: req.from_start };
        self.commit_webhook_change(op, "webhook-set", format!("{unit} -> {}", redact_credentials(&req.url))).await?;
        self.start_pusher(unit.clone());
        self.get(&Caller::Anyone, unit).await
    }

    /// A unit hosted elsewhere has no inbox here, so no webhook.
    fn check_hosted(&self, unit: &UnitAddress) -> Result<(), Refusal> {
        let here = &self.services.here;
        if self.services.dir.current().home_of(unit).as_ref() != Some(here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {here}")));
        }
        Ok(())
    }

    /// `DELETE /v1/units/{node}/{unit}/webhook`.
    pub async fn remove(&self, caller: &Caller, unit: &UnitAddress) -> Result<AdminActionResponse, Refusal> {
        caller.may_act_for(unit)?;
        let n = self.commit_webhook_change(AdminOp::RemoveWebhook { unit: unit.to_string() }, "webhook-remove", unit.to_string()).await?;
        Ok(AdminActionResponse { affected: n, message: format!("webhook of {unit} removed; its inbox keeps everything") })
    }

    /// `GET /v1/units/{node}/{unit}/webhook`.
    pub async fn get(&self, caller: &Caller, unit: &UnitAddress) -> Result<WebhookInfo, Refusal> {
        caller.may_act_for(unit)?;
        self.services
            .store
            .webhooks()
            .await?
            .into_iter()
            .find(|w| w.unit == unit.as_str())
            .map(|w| WebhookInfo { unit: unit.clone(), url: w.url, pushed_seq: w.pushed_seq })
            .ok_or_else(|| Refusal::new("not-found", 404, format!("{unit} has no webhook; read its inbox, or register one")))
    }

    async fn commit_webhook_change(&self, op: AdminOp, event: &'static str, detail: String) -> Result<u64, Refusal> {
        let row = EventRow { at_ms: exchange_wire::now_ms() as i64, category: "admin", message_id: None, event, unit: None, peer: None, detail: Some(detail) };
        match self.services.committer.commit(vec![WriteJob::Admin { op, events: vec![row] }]).await {
            Ok(o) => Ok(match o.first() {
                Some(crate::storage::JobOutcome::Affected(n)) => *n,
                _ => 0,
            }),
            Err(e) => Err(Refusal { code: "storage", message: format!("cannot store the webhook ({e}); nothing changed"), status: 503, transient: true }),
        }
    }

    /// Starts the pushers of every registered webhook (at start-up).
    pub(crate) async fn start_pushers(&self) -> anyhow::Result<()> {
        for w in self.services.store.webhooks().await? {
            if let Ok(u) = w.unit.parse() {
                self.start_pusher(u);
            }
        }
        Ok(())
    }

    fn start_pusher(&self, unit: UnitAddress) {
        if self.claim(&unit) {
            let part = self.clone();
            self.services.tasks.spawn(async move { part.push_loop(unit).await });
        }
    }

    /// Pushes `unit`'s inbox to its webhook until the webhook is removed.
    async fn push_loop(self, unit: UnitAddress) {
        let services = self.services.clone();
        let mut backoff = Backoff::new(Duration::from_millis(services.relay_cfg.retry_initial_ms), Duration::from_secs(60));
        let mut changes = services.inbox_changes.subscribe();
        loop {
            let hook = match services.store.webhooks().await {
                Ok(all) => all.into_iter().find(|w| w.unit == unit.as_str()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read webhooks");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let Some(crate::storage::WebhookRow { url, pushed_seq: pushed, .. }) = hook else {
                self.release(&unit);
                return;
            };
            // A suspended (or revoked) unit's webhook is not pushed to: the inbox keeps the items,
            // and pushing resumes where it stopped when the unit is activated again.
            if !self.may_push(&unit) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            changes.borrow_and_update();
            let page = match self.check_hosted(&unit) {
                Ok(()) => inbox_page(&services, &unit, pushed, PUSH_BATCH).await,
                Err(r) => Err(r),
            };
            let items = match page {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(%unit, reason = %e.message, "cannot read an inbox to push");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let Some(last) = items.last().map(|i| i.seq) else {
                // Nothing new: wait for a delivery (or look again in a while).
                let _ = tokio::time::timeout(Duration::from_secs(30), changes.changed()).await;
                continue;
            };
            if !self.may_push(&unit) {
                continue;
            }
            let body = serde_json::to_vec(&WebhookDelivery { node: services.here.clone(), unit: unit.clone(), items }).expect("serialises");
            let signature = hex::encode(services.node_key().sign(&body).to_bytes());
            let node = services.here.to_string();
            let target = url.clone();
            let targets = self.targets();
            let sent = tokio::task::spawn_blocking(move || deliver(&targets, &target, &node, &signature, &body)).await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    backoff.reset();
                    services.metrics.webhook_pushes.with_label_values(&["ok"]).inc();
                    let op = AdminOp::AdvanceWebhook { unit: unit.to_string(), seq: last };
                    if let Err(e) = services.committer.commit(vec![WriteJob::Admin { op, events: vec![] }]).await {
                        tracing::error!(error = %e, "cannot record a webhook acknowledgement; the items will be pushed again");
                    }
                }
                outcome => {
                    services.metrics.webhook_pushes.with_label_values(&["failed"]).inc();
                    let delay = backoff.next_delay();
                    let reason = match outcome {
                        Ok(Ok(status)) => format!("HTTP {status}"),
                        Ok(Err(e)) => e,
                        Err(e) => e.to_string(),
                    };
                    if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(20) {
                        let url = redact_credentials(&url);
                        tracing::warn!(%unit, %url, %reason, retry_in_ms = delay.as_millis() as u64, "webhook push failed; the inbox keeps the items");
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_may_not_point_at_this_machine_or_the_lan() {
        let closed = WebhookTargets::default();
        let loopback = WebhookTargets::new(true, &Default::default()).unwrap();
        for bad in [
            "http://127.0.0.1:9080/admin/v1/tokens",
            "http://localhost/x",
            "http://[::1]:80/",
            "http://0.0.0.0:9080/",
            "https://u:p@127.0.0.1/",
            "http://127.1:9080/",
            "http://[::ffff:127.0.0.1]:9080/",
            "http://admin.localhost/",
        ] {
            assert_eq!(check_webhook_url(bad, &closed).unwrap_err().code, "webhook-target-refused", "{bad}");
            assert!(check_webhook_url(bad, &loopback).is_ok(), "{bad} with loopback allowed");
        }
        for lan in ["http://10.0.0.5/hook", "http://192.168.1.10:8080/", "http://169.254.169.254/latest/meta-data/", "http://[fe80::1]/", "http://[fd00::5]/"] {
            assert_eq!(check_webhook_url(lan, &loopback).unwrap_err().code, "webhook-target-refused", "{lan}");
        }
        for good in ["https://oa.yuexiu.gov.example/exchange/hook", "http://198.51.100.7:8443/hook"] {
            assert!(check_webhook_url(good, &closed).is_ok(), "{good}");
        }
        assert_eq!(check_webhook_url("ftp://x/", &closed).unwrap_err().code, "malformed");
        assert_eq!(check_webhook_url("http://x:99999/", &closed).unwrap_err().code, "malformed");
        assert_eq!(url_target("https://u:p@[::1]:8443/p"), Some(("::1", 8443)));
        assert_eq!(url_target("https://host/p"), Some(("host", 443)));
        assert_eq!(redact_credentials("https://user:secret@host/p"), "https://…@host/p");
    }
}
