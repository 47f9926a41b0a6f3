//! `[policy]` and `[push]`: who may send which kinds of message to whom, and where webhooks may point.

use serde::{Deserialize, Serialize};

/// Where webhooks may point (see `relay::webhook_target`). Public addresses always; loopback with
/// `api.webhooks_to_loopback`; private, link-local and carrier-grade NAT ranges only as configured
/// here, so a webhook cannot be aimed at the node's own LAN services or a cloud metadata address.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Allow the private ranges: 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7 and
    /// 100.64.0.0/10 (carrier-grade NAT). Link-local addresses still need `allowed_networks`.
    pub allow_private: bool,
    /// Networks webhooks may reach whatever their range, e.g. `["10.1.0.0/16"]` for the agencies'
    /// segment of the government LAN.
    pub allowed_networks: Vec<String>,
}

/// Who may send which kinds of message to whom. Rules are tried in order; the first that matches
/// decides; when none matches, `default` does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// `allow` or `deny`.
    pub default: String,
    pub rules: Vec<PolicyRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig { default: "allow".into(), rules: Vec::new() }
    }
}

/// One access rule. Patterns match unit addresses, with `*` standing for any run of characters
/// (`gz.*/*-street`, `gz/general-office`); unset fields match everything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    /// Named in refusals, so a sender knows which rule stopped it.
    pub name: String,
    #[serde(default)]
    pub from: Option<String>,
    /// The sender's unit kind in the directory (`department`, `bureau`, `street-office`, ...).
    #[serde(default)]
    pub from_kind: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub to_kind: Option<String>,
    /// Message kinds the rule covers (`document`); empty: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// `allow` or `deny`.
    pub action: String,
}
