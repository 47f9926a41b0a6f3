//! Which of a node's two APIs a command talks to, and what a failed call means to the person at the
//! terminal.
//!
//! A node has an agency API (`--node`, for agency systems) and an admin API on a separate listener
//! (`--admin`, loopback by default, for operators). Errors name the option and environment variable
//! that chose the address, so a wrong address is easy to fix.

use std::fmt;

use anyhow::{Result, anyhow, bail};
use exchange_wire::client::{ApiClient, ClientError};

use crate::output::sanitize;

/// The node gave no usable answer: not running, wrong address, or not an exchange node of this
/// release. Kept apart from other errors because it maps to exit code 2, which scripts use to retry
/// later.
#[derive(Debug)]
pub struct NoAnswer(String);

impl fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoAnswer {}

/// Global options every command sees.
pub struct Ctx {
    /// Base URL of the node's agency API.
    pub node: String,
    /// Base URL of the node's admin API.
    pub admin: String,
    /// Print JSON instead of tables.
    pub json: bool,
}

/// One of the node's two HTTP APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Agency,
    Admin,
}

impl Api {
    fn option(self) -> &'static str {
        match self {
            Api::Agency => "--node",
            Api::Admin => "--admin",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Api::Agency => "EXCHANGE_NODE",
            Api::Admin => "EXCHANGE_ADMIN",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Api::Agency => "agency API",
            Api::Admin => "admin API",
        }
    }

    /// Where the address is set in the node's configuration.
    fn setting(self) -> &'static str {
        match self {
            Api::Agency => "api.listen",
            Api::Admin => "admin.listen",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Api::Agency => "http://127.0.0.1:8080",
            Api::Admin => "http://127.0.0.1:9080",
        }
    }
}

/// A client for one of the node's APIs, which explains its failures.
pub struct Endpoint {
    client: ApiClient,
    api: Api,
}

impl Ctx {
    /// The node's agency API. Made per command, so `keygen` and `pubkey` never look at `--node`.
    pub fn agency(&self) -> Result<Endpoint> {
        Endpoint::new(Api::Agency, &self.node)
    }

    /// The node's admin API.
    pub fn admin(&self) -> Result<Endpoint> {
        Endpoint::new(Api::Admin, &self.admin)
    }
}

impl Endpoint {
    fn new(api: Api, url: &str) -> Result<Endpoint> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "{} {url:?} is not a URL: give the node's {} address ({} in its configuration), such as {}",
                api.option(),
                api.name(),
                api.setting(),
                api.example()
            );
        }
        Ok(Endpoint {
            client: ApiClient::new(url),
            api,
        })
    }

    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// Makes one call and turns its error into one a person can act on.
    pub fn call<T>(&self, f: impl FnOnce(&ApiClient) -> Result<T, ClientError>) -> Result<T> {
        f(&self.client).map_err(|e| explain(self.api, self.client.base_url(), e))
    }
}

/// A client error as the user should read it. "No usable answer" stays recognisable (as `NoAnswer`)
/// for the exit code.
fn explain(api: Api, base: &str, e: ClientError) -> anyhow::Error {
    let (option, env, name, setting) = (api.option(), api.env(), api.name(), api.setting());
    match e {
        ClientError::Protocol { status, reason, .. } => anyhow!(NoAnswer(format!(
            "the node at {base} gave an answer exchange-admin does not understand (HTTP {status}: {}); \
             check that {option} is the node's {name} address ({setting} in its configuration) and that \
             exchange-admin and exchange-node are the same release",
            sanitize(&reason)
        ))),
        ClientError::Transport { reason, .. } => anyhow!(NoAnswer(format!(
            "cannot reach the node's {name} at {base}: {reason}; is exchange-node running? set {option} or \
             {env} to its {setting} address"
        ))),
        ClientError::Refused { status, body } => anyhow!(
            "the node refused: {} [{}, HTTP {status} from {base}]",
            sanitize(&body.message),
            sanitize(&body.error)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::api::ErrorBody;

    #[test]
    fn urls_are_checked_before_any_call() {
        let ctx = Ctx {
            node: "127.0.0.1:8080".into(),
            admin: "localhost".into(),
            json: false,
        };
        let err = ctx.agency().err().unwrap().to_string();
        assert!(err.contains("--node") && err.contains("8080"), "{err}");
        let err = ctx.admin().err().unwrap().to_string();
        assert!(err.contains("--admin") && err.contains("9080"), "{err}");
    }

    #[test]
    fn no_answer_names_the_option_to_fix() {
        let e = explain(
            Api::Admin,
            "http://127.0.0.1:9080",
            ClientError::Transport {
                url: "x".into(),
                reason: "connection refused".into(),
            },
        );
        let text = e.to_string();
        assert!(e.downcast_ref::<NoAnswer>().is_some());
        assert!(
            text.contains("--admin") && text.contains("EXCHANGE_ADMIN"),
            "{text}"
        );

        let e = explain(
            Api::Agency,
            "http://127.0.0.1:8080",
            ClientError::Protocol {
                url: "x".into(),
                status: 200,
                reason: "missing field `id`".into(),
            },
        );
        assert!(e.downcast_ref::<NoAnswer>().is_some());
        assert!(e.to_string().contains("does not understand"), "{e}");
    }

    #[test]
    fn refusals_are_not_no_answer() {
        let e = explain(
            Api::Admin,
            "http://127.0.0.1:9080",
            ClientError::Refused {
                status: 404,
                body: ErrorBody {
                    error: "not-found".into(),
                    message: "no such endpoint\x1b[2J".into(),
                },
            },
        );
        assert!(e.downcast_ref::<NoAnswer>().is_none());
        let text = e.to_string();
        assert!(
            text.contains("HTTP 404 from http://127.0.0.1:9080"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }
}
