//! How a lane hands one signed delivery to its endpoint: POSTed over HTTP, or published to a
//! JetStream stream. The lane decides what is due, retried, backed off and dead-lettered; the
//! transport only makes the attempt and says how it went, the same way for both kinds.

use std::sync::Arc;
use std::time::Duration;

use super::client::{AttemptOutcome, DeliveryClient, KeyedDelivery};
use super::http_target::HttpTarget;
use super::jetstream::JetStreamPublisher;
use crate::config::Webhook;

#[derive(Clone)]
pub(crate) enum Transport {
    /// The endpoint's request parts and its own connections.
    Http(Arc<HttpTarget>),
    /// One publisher per endpoint, holding its connection and its checked stream.
    JetStream(Arc<JetStreamPublisher>),
}

impl Transport {
    /// The transport for `webhook`; one whose target is unchanged is kept (with its
    /// connections) across configuration reloads.
    pub(crate) fn for_endpoint(
        webhook: &Webhook,
        http: &DeliveryClient,
        timeout: Duration,
        previous: Option<&Transport>,
    ) -> Transport {
        let Some(target) = &webhook.jetstream else {
            let credentials = webhook.credentials.as_ref();
            return match previous {
                Some(Transport::Http(kept)) if kept.sends_to(&webhook.url, credentials) => {
                    Transport::Http(kept.clone())
                }
                _ => Transport::Http(Arc::new(HttpTarget::new(http, &webhook.url, credentials))),
            };
        };
        match previous {
            Some(Transport::JetStream(publisher)) if publisher.target() == target.as_ref() => {
                Transport::JetStream(publisher.clone())
            }
            _ => Transport::JetStream(Arc::new(JetStreamPublisher::new(
                webhook.name.as_str().into(),
                target.clone(),
                timeout,
            ))),
        }
    }

    /// Makes one attempt. Never fails: every way it can go wrong is an outcome to record.
    pub(crate) async fn attempt(&self, delivery: KeyedDelivery<'_>) -> AttemptOutcome {
        match self {
            Transport::Http(target) => target.attempt(&delivery).await,
            Transport::JetStream(publisher) => publisher.publish(delivery).await,
        }
    }
}
