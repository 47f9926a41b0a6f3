//! Which of a node's two APIs a command talks to, and what a failed call means to the person at the
//! terminal.
//!
//! A node has an agency API (`--node`, for agency systems) and an admin API on a separate listener
//! (`--admin`, loopback by default, for operators). Errors name the option and environment variable
//! that chose the address, so a wrong address is easy to fix.
//!
//! Agency calls carry the unit token given by `--token` / `EXCHANGE_TOKEN`; a refusal for want of a
//! good token (`unauthenticated`, `forbidden`) says which unit's token the call needed. Admin calls
//! never carry it: a unit token has no business on the operators' listener. They carry the node's
//! operator token instead, read from the file given by `--admin-token-file` /
//! `EXCHANGE_ADMIN_TOKEN_FILE` (the node writes it at first start to `admin.token` in its data
//! directory).

use std::fmt;

use anyhow::{Result, anyhow, bail};
use exchange_wire::UnitAddress;
use exchange_wire::client::{ApiClient, ClientError};

use crate::output::sanitize;
use crate::parse;

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
    /// The unit token sent with agency calls (`--token`, `EXCHANGE_TOKEN`).
    pub token: Option<String>,
    /// The file holding the node's operator token, sent with admin calls (`--admin-token-file`,
    /// `EXCHANGE_ADMIN_TOKEN_FILE`).
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Certificate authorities to trust for `https://` node addresses (`--ca-file`, `EXCHANGE_CA_FILE`).
    pub ca_file: Option<std::path::PathBuf>,
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

/// The unit an agency call acts for: the node wants a token of that unit.
#[derive(Debug, Clone, Copy)]
pub enum ActingFor<'a> {
    /// The unit named on the command line (`send --from`, `inbox --unit`, `sign-for --unit`,
    /// `return --unit`).
    Unit(&'a UnitAddress),
    /// The unit that sent the message asked about (`status MESSAGE_ID`), unknown until the node says.
    SenderOf(&'a exchange_wire::MessageId),
}

impl ActingFor<'_> {
    fn describe(self) -> String {
        match self {
            ActingFor::Unit(u) => format!("unit {u}"),
            ActingFor::SenderOf(id) => format!("the unit that sent message {id}"),
        }
    }

    /// The value to pass to `tokens issue --unit`.
    fn unit_arg(self) -> String {
        match self {
            ActingFor::Unit(u) => u.to_string(),
            ActingFor::SenderOf(_) => "UNIT".into(),
        }
    }
}

/// What an agency call authenticated with, to explain a refusal of it.
#[derive(Debug, Clone)]
struct Auth {
    /// Whom the call acts for, as a phrase (`unit gz/civil-affairs`).
    acting_for: String,
    /// The address to give `tokens issue --unit`.
    unit_arg: String,
    /// Whether a token was sent at all.
    token_given: bool,
}

/// A client for one of the node's APIs, which explains its failures.
pub struct Endpoint {
    client: ApiClient,
    api: Api,
    auth: Option<Auth>,
    /// For admin calls: the operator token file given, if any (to explain a 401).
    operator: Option<Option<std::path::PathBuf>>,
}

impl Ctx {
    /// The node's agency API, authenticating with the unit token if one was given. Made per command,
    /// so `keygen` and `pubkey` never look at `--node` or `--token`.
    /// An empty token (`EXCHANGE_TOKEN=`) counts as none; a malformed one is refused here, not when
    /// the command line is parsed, so it never gets in the way of commands that do not use it.
    pub fn agency(&self, acting_for: ActingFor<'_>) -> Result<Endpoint> {
        let mut endpoint = Endpoint::new(Api::Agency, &self.node, self.ca_file.as_deref())?;
        let token = match self.token.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) => {
                Some(parse::token(t).map_err(|e| anyhow!("--token or EXCHANGE_TOKEN: {e}"))?)
            }
        };
        endpoint.auth = Some(Auth {
            acting_for: acting_for.describe(),
            unit_arg: acting_for.unit_arg(),
            token_given: token.is_some(),
        });
        if let Some(token) = token {
            endpoint.client = endpoint.client.with_token(token);
        }
        Ok(endpoint)
    }

    /// The node's admin API, with the operator token read from `--admin-token-file` if given. It
    /// never carries the unit token.
    pub fn admin(&self) -> Result<Endpoint> {
        let mut endpoint = Endpoint::new(Api::Admin, &self.admin, self.ca_file.as_deref())?;
        let file = self.admin_token_file.clone().filter(|f| !f.as_os_str().is_empty());
        if let Some(path) = &file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                anyhow!(
                    "cannot read the operator token file {} (--admin-token-file or EXCHANGE_ADMIN_TOKEN_FILE): {e}; \
                     the node writes it at first start to admin.token in its data_dir (admin.token_file in its \
                     configuration), readable only by the node's user: run exchange-admin as that user",
                    path.display()
                )
            })?;
            endpoint.client = endpoint.client.with_token(token.trim());
        }
        endpoint.operator = Some(file);
        Ok(endpoint)
    }
}

impl Endpoint {
    fn new(api: Api, url: &str, ca_file: Option<&std::path::Path>) -> Result<Endpoint> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!(
                "{} {url:?} is not a URL: give the node's {} address ({} in its configuration), such as {}",
                api.option(),
                api.name(),
                api.setting(),
                api.example()
            );
        }
        let client = match ca_file {
            Some(ca) => ApiClient::with_ca_file(url, ca).map_err(|e| anyhow!("--ca-file or EXCHANGE_CA_FILE: {e}"))?,
            None => ApiClient::new(url),
        };
        Ok(Endpoint {
            client,
            api,
            auth: None,
            operator: None,
        })
    }

    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// Makes one call and turns its error into one a person can act on.
    pub fn call<T>(&self, f: impl FnOnce(&ApiClient) -> Result<T, ClientError>) -> Result<T> {
        f(&self.client).map_err(|e| self.explain(e))
    }

    /// As [`Endpoint::call`], but a `not-found` answer (HTTP 404) is `None` rather than an error, for
    /// look-ups whose absence the command reports itself.
    pub fn call_found<T>(
        &self,
        f: impl FnOnce(&ApiClient) -> Result<T, ClientError>,
    ) -> Result<Option<T>> {
        match f(&self.client) {
            Ok(v) => Ok(Some(v)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.explain(e)),
        }
    }

    /// A failed call as the user should read it; on the admin API, a 401 says where the operator
    /// token comes from.
    fn explain(&self, e: ClientError) -> anyhow::Error {
        match (&self.operator, &e) {
            (Some(file), ClientError::Refused { status: 401, body }) => {
                let fix = match file {
                    Some(path) => format!(
                        "the operator token in {} is not this node's: give --admin-token-file (or EXCHANGE_ADMIN_TOKEN_FILE) \
                         the admin.token of the node at {}, found in its data_dir (admin.token_file in its configuration)",
                        path.display(),
                        self.client.base_url()
                    ),
                    None => "the admin API requires the node's operator token: set --admin-token-file or \
                             EXCHANGE_ADMIN_TOKEN_FILE to the file the node wrote at first start, admin.token in its \
                             data_dir (admin.token_file in its configuration); run as the node's user, who alone may read it"
                        .to_string(),
                };
                anyhow!(
                    "the node refused: {} [{}, HTTP 401 from {}]\nhint: {fix}",
                    sanitize(&body.message),
                    sanitize(&body.error),
                    self.client.base_url()
                )
            }
            _ => explain(self.api, self.client.base_url(), self.auth.as_ref(), e),
        }
    }
}

/// Whether the node answered that what was asked for does not exist.
fn is_not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Refused { status: 404, body } if body.error == "not-found")
}

/// What to do about a refusal for want of a good unit token, if it is one: `unauthenticated` (401,
/// no valid token) or `forbidden` (a valid token of another unit).
fn token_hint(auth: &Auth, status: u16, code: &str) -> Option<String> {
    let (who, unit) = (&auth.acting_for, &auth.unit_arg);
    let issue = format!(
        "an operator of the unit's node issues one with `exchange-admin tokens issue --unit {unit}`"
    );
    if code == "unauthenticated" || status == 401 {
        Some(if auth.token_given {
            format!(
                "the token given (--token or EXCHANGE_TOKEN) was not accepted: mistyped, revoked, or issued by \
                 another node? Set --token or EXCHANGE_TOKEN to a valid token of {who}; {issue}"
            )
        } else {
            format!(
                "the node requires a unit token: set --token or EXCHANGE_TOKEN to a token of {who}; {issue}"
            )
        })
    } else if code == "forbidden" {
        // Only this code: a node answers 403 for other reasons too (a bad signature, a suspended unit),
        // and those have nothing to do with the token.
        Some(format!(
            "a token acts for one unit only: set --token or EXCHANGE_TOKEN to a token of {who}, not of another \
             unit; {issue}"
        ))
    } else {
        None
    }
}

/// A client error as the user should read it. "No usable answer" stays recognisable (as `NoAnswer`)
/// for the exit code.
fn explain(api: Api, base: &str, auth: Option<&Auth>, e: ClientError) -> anyhow::Error {
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
        ClientError::Refused { status, body } => {
            let hint = auth
                .and_then(|a| token_hint(a, status, &body.error))
                .map(|h| format!("\nhint: {h}"))
                .unwrap_or_default();
            anyhow!(
                "the node refused: {} [{}, HTTP {status} from {base}]{hint}",
                sanitize(&body.message),
                sanitize(&body.error)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_wire::api::ErrorBody;

    #[test]
    fn urls_are_checked_before_any_call() {
        let ctx = Ctx {
            ca_file: None,
            node: "127.0.0.1:8080".into(),
            admin: "localhost".into(),
            token: None,
            admin_token_file: None,
            json: false,
        };
        let unit: UnitAddress = "gz/civil-affairs".parse().unwrap();
        let err = ctx
            .agency(ActingFor::Unit(&unit))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--node") && err.contains("8080"), "{err}");
        let err = ctx.admin().err().unwrap().to_string();
        assert!(err.contains("--admin") && err.contains("9080"), "{err}");
    }

    #[test]
    fn no_answer_names_the_option_to_fix() {
        let e = explain(
            Api::Admin,
            "http://127.0.0.1:9080",
            None,
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
            None,
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
    fn only_not_found_refusals_are_absent() {
        let refused = |status, code: &str| ClientError::Refused {
            status,
            body: ErrorBody {
                error: code.into(),
                message: "x".into(),
            },
        };
        assert!(is_not_found(&refused(404, "not-found")));
        assert!(!is_not_found(&refused(404, "no-route")));
        assert!(!is_not_found(&refused(403, "not-found")));
        assert!(!is_not_found(&ClientError::Protocol {
            url: "x".into(),
            status: 404,
            reason: "not json".into(),
        }));
    }

    #[test]
    fn refusals_are_not_no_answer() {
        let e = explain(
            Api::Admin,
            "http://127.0.0.1:9080",
            None,
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

    fn refusal(status: u16, code: &str) -> ClientError {
        ClientError::Refused {
            status,
            body: ErrorBody {
                error: code.into(),
                message: "refused".into(),
            },
        }
    }

    fn agency_auth(token_given: bool) -> Auth {
        let unit: UnitAddress = "gz.yuexiu/liurong-street".parse().unwrap();
        let acting = ActingFor::Unit(&unit);
        Auth {
            acting_for: acting.describe(),
            unit_arg: acting.unit_arg(),
            token_given,
        }
    }

    #[test]
    fn missing_tokens_say_what_to_set() {
        let text = explain(
            Api::Agency,
            "http://n:8080",
            Some(&agency_auth(false)),
            refusal(401, "unauthenticated"),
        )
        .to_string();
        assert!(text.contains("[unauthenticated, HTTP 401"), "{text}");
        assert!(
            text.contains(
                "set --token or EXCHANGE_TOKEN to a token of unit gz.yuexiu/liurong-street"
            ),
            "{text}"
        );
        assert!(
            text.contains("exchange-admin tokens issue --unit gz.yuexiu/liurong-street"),
            "{text}"
        );
        let text = explain(
            Api::Agency,
            "http://n:8080",
            Some(&agency_auth(true)),
            refusal(401, "unauthenticated"),
        )
        .to_string();
        assert!(text.contains("was not accepted"), "{text}");
    }

    #[test]
    fn tokens_of_another_unit_say_which_unit() {
        let text = explain(
            Api::Agency,
            "http://n:8080",
            Some(&agency_auth(true)),
            refusal(403, "forbidden"),
        )
        .to_string();
        assert!(
            text.contains("a token of unit gz.yuexiu/liurong-street, not of another unit"),
            "{text}"
        );
        let id: exchange_wire::MessageId = "ab".repeat(32).parse().unwrap();
        let acting = ActingFor::SenderOf(&id);
        let auth = Auth {
            acting_for: acting.describe(),
            unit_arg: acting.unit_arg(),
            token_given: true,
        };
        let text = token_hint(&auth, 403, "forbidden").unwrap();
        assert!(
            text.contains(&format!("the unit that sent message {id}")),
            "{text}"
        );
    }

    #[test]
    fn other_refusals_and_admin_calls_get_no_token_hint() {
        let text = explain(
            Api::Agency,
            "http://n:8080",
            Some(&agency_auth(false)),
            refusal(404, "not-found"),
        )
        .to_string();
        assert!(!text.contains("hint"), "{text}");
        let text = explain(
            Api::Agency,
            "http://n:8080",
            Some(&agency_auth(true)),
            refusal(403, "bad-signature"),
        )
        .to_string();
        assert!(!text.contains("hint"), "403 for another reason: {text}");
        let text = explain(
            Api::Admin,
            "http://n:9080",
            None,
            refusal(401, "unauthenticated"),
        )
        .to_string();
        assert!(!text.contains("--token"), "{text}");
    }

    #[test]
    fn only_agency_calls_carry_the_token() {
        let ctx = Ctx {
            ca_file: None,
            node: "http://127.0.0.1:8080".into(),
            admin: "http://127.0.0.1:9080".into(),
            token: Some("secret".into()),
            admin_token_file: None,
            json: false,
        };
        let unit: UnitAddress = "gz/civil-affairs".parse().unwrap();
        let agency = ctx.agency(ActingFor::Unit(&unit)).unwrap();
        assert!(agency.auth.as_ref().is_some_and(|a| a.token_given));
        assert!(ctx.admin().unwrap().auth.is_none());
    }

    #[test]
    fn empty_tokens_count_as_none_and_bad_ones_are_refused_when_used() {
        let mut ctx = Ctx {
            ca_file: None,
            node: "http://127.0.0.1:8080".into(),
            admin: "http://127.0.0.1:9080".into(),
            token: Some("  ".into()),
            admin_token_file: None,
            json: false,
        };
        let unit: UnitAddress = "gz/civil-affairs".parse().unwrap();
        let agency = ctx.agency(ActingFor::Unit(&unit)).unwrap();
        assert!(agency.auth.as_ref().is_some_and(|a| !a.token_given));
        ctx.token = Some("two words".into());
        let err = ctx
            .agency(ActingFor::Unit(&unit))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("EXCHANGE_TOKEN") && !err.contains("two words"),
            "{err}"
        );
        assert!(
            ctx.admin().is_ok(),
            "admin commands do not look at the token"
        );
    }

    #[test]
    fn admin_calls_say_where_the_operator_token_comes_from() {
        let mut ctx = Ctx {
            ca_file: None,
            node: "http://127.0.0.1:8080".into(),
            admin: "http://127.0.0.1:9080".into(),
            token: None,
            admin_token_file: Some("/nonexistent/admin.token".into()),
            json: false,
        };
        let err = ctx.admin().err().unwrap().to_string();
        assert!(err.contains("/nonexistent/admin.token") && err.contains("--admin-token-file") && err.contains("data_dir"), "{err}");
        let refused = || ClientError::Refused {
            status: 401,
            body: ErrorBody { error: "unauthenticated".into(), message: "the admin API requires the operator token".into() },
        };
        ctx.admin_token_file = None;
        let text = ctx.admin().unwrap().explain(refused()).to_string();
        assert!(text.contains("EXCHANGE_ADMIN_TOKEN_FILE") && text.contains("admin.token"), "{text}");
        let file = std::env::temp_dir().join(format!("exchange-admin-test-{}.token", std::process::id()));
        std::fs::write(&file, "govxop_wrong\n").unwrap();
        ctx.admin_token_file = Some(file.clone());
        let text = ctx.admin().unwrap().explain(refused()).to_string();
        let _ = std::fs::remove_file(&file);
        assert!(text.contains("is not this node's") && text.contains(&file.display().to_string()), "{text}");
    }
}
