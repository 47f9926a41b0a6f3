//! Push delivery: a unit may register a webhook; the node POSTs new items of the unit's inbox to it,
//! signed with the node key, in order, and advances the unit's pushed position only when the webhook
//! answered 2xx. While the webhook fails, the node retries with capped exponential backoff; the inbox
//! keeps everything meanwhile, so the agency can always fall back to reading it. Delivery to the
//! webhook is at least once; items carry their ids.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::Signer;
use exchange_wire::UnitAddress;
use exchange_wire::api::{AdminActionResponse, WebhookDelivery, WebhookInfo, WebhookRequest};

use super::access::Caller;
use super::forwarder::Backoff;
use super::{Engine, Refusal};
use crate::storage::{AdminOp, EventRow, WriteJob};

/// Items per POST.
const PUSH_BATCH: u32 = 100;

/// A webhook URL must be http(s), and (unless allowed) must not point at this machine: a webhook may
/// never reach the node's own admin API or other local services.
fn check_webhook_url(url: &str, loopback_allowed: bool) -> Result<(), Refusal> {
    let Some(host) = url_host(url).filter(|_| url.len() <= 2048) else {
        return Err(Refusal::malformed(format!("webhook url {:?} must be an http:// or https:// URL", redact_credentials(url))));
    };
    if host.is_empty() {
        return Err(Refusal::malformed("webhook url has no host"));
    }
    if !loopback_allowed && is_this_machine(host) {
        return Err(Refusal::new(
            "forbidden",
            403,
            format!("webhook host {host} is this machine; webhooks go to the agency's own system (api.webhooks_to_loopback allows it on a test bench)"),
        ));
    }
    Ok(())
}

/// Whether `host` names this machine: `localhost`, or any address it resolves to (short forms like
/// `127.1` and IPv4-mapped IPv6 included) is loopback or unspecified. Checked at registration and
/// again before every push, since a name can resolve differently later.
fn is_this_machine(host: &str) -> bool {
    use std::net::{IpAddr, ToSocketAddrs};
    let local = |ip: IpAddr| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        ip.is_loopback() || ip.is_unspecified()
    };
    if host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return local(ip);
    }
    match (host, 0u16).to_socket_addrs() {
        Ok(addrs) => addrs.into_iter().any(|a| local(a.ip())),
        // Unresolvable now: the push will fail and be retried; it cannot reach this machine.
        Err(_) => false,
    }
}

/// The host part of an http(s) URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    Some(match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.rsplit_once(':').map(|(h, _)| h).unwrap_or(host_port),
    })
}

/// A URL with any `user:password@` replaced, for logs and the audit log.
fn redact_credentials(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s && !url[s + 3..at].contains('/') => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl Engine {
    /// `PUT /v1/units/{node}/{unit}/webhook`.
    pub async fn set_webhook(self: &Arc<Self>, caller: &Caller, unit: &UnitAddress, req: WebhookRequest) -> Result<WebhookInfo, Refusal> {
        caller.may_act_for(unit)?;
        if self.dir.current().home_of(unit).as_ref() != Some(&self.here) {
            return Err(Refusal::new("not-found", 404, format!("unit {unit} is not hosted on node {}", self.here)));
        }
        check_webhook_url(&req.url, self.webhooks_to_loopback)?;
        let from_seq = if req.from_start { 0 } else { self.store.inbox_last_seq(unit.as_str()).await? };
        let op = AdminOp::SetWebhook { unit: unit.to_string(), url: req.url.clone(), from_seq, restart: req.from_start };
        self.commit_webhook_change(op, "webhook-set", format!("{unit} -> {}", redact_credentials(&req.url))).await?;
        self.start_pusher(unit.clone());
        self.webhook(&Caller::Anyone, unit).await
    }

    /// `DELETE /v1/units/{node}/{unit}/webhook`.
    pub async fn remove_webhook(self: &Arc<Self>, caller: &Caller, unit: &UnitAddress) -> Result<AdminActionResponse, Refusal> {
        caller.may_act_for(unit)?;
        let n = self.commit_webhook_change(AdminOp::RemoveWebhook { unit: unit.to_string() }, "webhook-remove", unit.to_string()).await?;
        Ok(AdminActionResponse { affected: n, message: format!("webhook of {unit} removed; its inbox keeps everything") })
    }

    /// `GET /v1/units/{node}/{unit}/webhook`.
    pub async fn webhook(&self, caller: &Caller, unit: &UnitAddress) -> Result<WebhookInfo, Refusal> {
        caller.may_act_for(unit)?;
        self.store
            .webhooks()
            .await?
            .into_iter()
            .find(|w| w.unit == unit.as_str())
            .map(|w| WebhookInfo { unit: unit.clone(), url: w.url, pushed_seq: w.pushed_seq })
            .ok_or_else(|| Refusal::new("not-found", 404, format!("{unit} has no webhook; read its inbox, or register one")))
    }

    async fn commit_webhook_change(&self, op: AdminOp, event: &'static str, detail: String) -> Result<u64, Refusal> {
        let row = EventRow { at_ms: exchange_wire::now_ms() as i64, category: "admin", message_id: None, event, unit: None, peer: None, detail: Some(detail) };
        match self.committer.commit(vec![WriteJob::Admin { op, events: vec![row] }]).await {
            Ok(o) => Ok(match o.first() {
                Some(crate::storage::JobOutcome::Affected(n)) => *n,
                _ => 0,
            }),
            Err(e) => Err(Refusal { code: "storage", message: format!("cannot store the webhook ({e}); nothing changed"), status: 503, transient: true }),
        }
    }

    /// Starts the pushers of every registered webhook (at start-up).
    pub(crate) async fn start_pushers(self: &Arc<Self>) -> anyhow::Result<()> {
        for w in self.store.webhooks().await? {
            if let Ok(u) = w.unit.parse() {
                self.start_pusher(u);
            }
        }
        Ok(())
    }

    fn start_pusher(self: &Arc<Self>, unit: UnitAddress) {
        if self.pushers.lock().expect("pushers lock").insert(unit.clone()) {
            let engine = self.clone();
            tokio::spawn(async move { engine.push_loop(unit).await });
        }
    }

    /// Pushes `unit`'s inbox to its webhook until the webhook is removed.
    async fn push_loop(self: Arc<Self>, unit: UnitAddress) {
        let mut backoff = Backoff::new(Duration::from_millis(self.relay_cfg.retry_initial_ms), Duration::from_secs(60));
        let mut changes = self.inbox_changes.subscribe();
        loop {
            let hook = match self.store.webhooks().await {
                Ok(all) => all.into_iter().find(|w| w.unit == unit.as_str()),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read webhooks");
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let Some(crate::storage::WebhookRow { url, pushed_seq: pushed, .. }) = hook else {
                self.pushers.lock().expect("pushers lock").remove(&unit);
                return;
            };
            changes.borrow_and_update();
            let items = match self.inbox(&Caller::Anyone, &unit, pushed, PUSH_BATCH, Duration::ZERO).await {
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
            let body = serde_json::to_vec(&WebhookDelivery { node: self.here.clone(), unit: unit.clone(), items }).expect("serialises");
            let signature = hex::encode(self.node_key.sign(&body).to_bytes());
            let node = self.here.to_string();
            let target = url.clone();
            let loopback_allowed = self.webhooks_to_loopback;
            let sent = tokio::task::spawn_blocking(move || {
                if !loopback_allowed && url_host(&target).is_none_or(is_this_machine) {
                    return Ok(403);
                }
                // No redirects: a webhook answers for itself, and may not send the node elsewhere.
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .max_redirects(0)
                    .timeout_global(Some(Duration::from_secs(30)))
                    .build()
                    .into();
                agent
                    .post(&target)
                    .header("Content-Type", "application/json")
                    .header("X-Exchange-Node", &node)
                    .header("X-Exchange-Signature", &signature)
                    .send(&body[..])
                    .map(|r| r.status().as_u16())
            })
            .await;
            match sent {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    backoff.reset();
                    self.metrics.webhook_pushes.with_label_values(&["ok"]).inc();
                    let op = AdminOp::AdvanceWebhook { unit: unit.to_string(), seq: last };
                    if let Err(e) = self.committer.commit(vec![WriteJob::Admin { op, events: vec![] }]).await {
                        tracing::error!(error = %e, "cannot record a webhook acknowledgement; the items will be pushed again");
                    }
                }
                outcome => {
                    self.metrics.webhook_pushes.with_label_values(&["failed"]).inc();
                    let delay = backoff.next_delay();
                    let reason = match outcome {
                        Ok(Ok(status)) => format!("HTTP {status}"),
                        Ok(Err(e)) => e.to_string(),
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
    fn webhook_urls_may_not_point_at_this_machine() {
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
            assert_eq!(check_webhook_url(bad, false).unwrap_err().code, "forbidden", "{bad}");
            assert!(check_webhook_url(bad, true).is_ok(), "{bad} with loopback allowed");
        }
        for good in ["https://oa.yuexiu.gov.example/exchange/hook", "http://198.51.100.7:8443/hook"] {
            assert!(check_webhook_url(good, false).is_ok(), "{good}");
        }
        assert_eq!(check_webhook_url("ftp://x/", false).unwrap_err().code, "malformed");
        assert_eq!(redact_credentials("https://user:secret@host/p"), "https://…@host/p");
    }
}
