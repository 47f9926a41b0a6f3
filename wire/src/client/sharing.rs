//! The data-sharing calls of the API client: catalog, records, subscriptions.

use std::time::Duration;

use crate::address::UnitAddress;
use crate::api::SignedMessage;
use crate::sharing::*;
use crate::api::AdminActionResponse;
use super::{ApiClient, ClientError};
use crate::envelope::SignedEnvelope;

fn unit_path(u: &UnitAddress) -> String {
    format!("/v1/units/{u}")
}

impl ApiClient {
    /// `GET /v1/catalog`: the catalog this node holds.
    pub fn catalog(&self) -> Result<Catalog, ClientError> {
        self.get("/v1/catalog", &[])
    }

    /// `POST /v1/records`: publishes a record signed by the topic's owner.
    pub fn publish(&self, record: &SignedEnvelope, payload: &[u8]) -> Result<PublishResponse, ClientError> {
        self.post("/v1/records", &SignedMessage::new(record, payload))
    }

    /// `POST /v1/records:batch`: several records, numbered in order and committed together.
    pub fn publish_batch(&self, records: Vec<SignedMessage>) -> Result<BatchPublishResponse, ClientError> {
        self.post("/v1/records:batch", &BatchPublishRequest { records })
    }

    /// `POST /v1/subscriptions`: sends a subscription request signed by the subscriber.
    pub fn subscribe(&self, request: &SignedEnvelope, payload: &[u8]) -> Result<SubscriptionView, ClientError> {
        self.post("/v1/subscriptions", &SignedMessage::new(request, payload))
    }

    /// `GET /v1/units/{unit}/subscriptions`: the subscriptions `unit` holds or asked for.
    pub fn subscriptions(&self, unit: &UnitAddress) -> Result<SubscriptionsResponse, ClientError> {
        self.get(&format!("{}/subscriptions", unit_path(unit)), &[])
    }

    /// `GET /v1/units/{owner}/subscribers`: subscriptions to the topics `owner` owns.
    pub fn subscribers(&self, owner: &UnitAddress) -> Result<SubscriptionsResponse, ClientError> {
        self.get(&format!("{}/subscribers", unit_path(owner)), &[])
    }

    /// `POST /v1/units/{owner}/subscribers:decide`: the owner grants or refuses a request.
    pub fn decide(&self, owner: &UnitAddress, request: &DecideRequest) -> Result<SubscriptionView, ClientError> {
        self.post(&format!("{}/subscribers:decide", unit_path(owner)), request)
    }

    /// `GET /v1/units/{unit}/subscriptions/{topic}/records`: records after `after` (`None`:
    /// after the cursor), in sequence order, waiting up to `wait` for the first.
    pub fn records(&self, unit: &UnitAddress, topic: &str, after: Option<u64>, limit: u32, wait: Duration) -> Result<RecordsResponse, ClientError> {
        let mut q = vec![("limit", limit.to_string()), ("wait_ms", wait.as_millis().to_string())];
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        self.get(&format!("{}/subscriptions/{topic}/records", unit_path(unit)), &q)
    }

    /// `POST /v1/units/{unit}/subscriptions/{topic}/ack`: moves the cursor to `seq`.
    pub fn ack(&self, unit: &UnitAddress, topic: &str, seq: u64) -> Result<SubscriptionView, ClientError> {
        self.post(&format!("{}/subscriptions/{topic}/ack", unit_path(unit)), &AckRequest { seq })
    }

    /// Admin API `GET /admin/v1/catalog`.
    pub fn admin_catalog(&self) -> Result<Catalog, ClientError> {
        self.get("/admin/v1/catalog", &[])
    }

    /// Admin API `POST /admin/v1/catalog`: the root signs and publishes a new catalog version.
    pub fn publish_catalog(&self, catalog: &Catalog) -> Result<AdminActionResponse, ClientError> {
        self.post("/admin/v1/catalog", catalog)
    }

    /// Admin API `GET /admin/v1/subscriptions`: subscriptions to topics owned by units of this node.
    pub fn admin_subscriptions(&self) -> Result<SubscriptionsResponse, ClientError> {
        self.get("/admin/v1/subscriptions", &[])
    }

    /// Admin API `POST /admin/v1/subscriptions:decide`: an operator grants or refuses a request.
    pub fn admin_decide(&self, request: &DecideRequest) -> Result<SubscriptionView, ClientError> {
        self.post("/admin/v1/subscriptions:decide", request)
    }
}
