//! The JetStream transport: each delivery is published on the endpoint's subject with
//! `Nats-Msg-Id` set to the event id (so JetStream drops the copies that at-least-once delivery
//! makes), carrying the same signature headers as an HTTP delivery, and counts as delivered only
//! when the stream acknowledges it (its PubAck: stored, and replicated where the stream is).
//!
//! The connection is opened, and the stream checked (or created), on the first attempt and again
//! after any failure to do so; until then every attempt fails with the reason, which the lane
//! retries and backs off on as it does for an HTTP endpoint that is down. Once open, the client
//! reconnects by itself; a publish made while it is away times out and is tried again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::jetstream::{self, Context};

use super::client::{AttemptOutcome, KeyedDelivery, unix_millis};
use crate::config::JetStreamTarget;
use crate::signing::{
    FLAGSMITH_SIGNATURE_HEADER, SEQUENCE_HEADER, WEBHOOK_ID_HEADER, WEBHOOK_SIGNATURE_HEADER,
    WEBHOOK_TIMESTAMP_HEADER, standard_signature_header_with,
};

pub(crate) struct JetStreamPublisher {
    endpoint: Arc<str>,
    target: Arc<JetStreamTarget>,
    /// Bounds connecting, and each publish from sending to its acknowledgement.
    timeout: Duration,
    /// The JetStream context once connected with the stream checked.
    ready: tokio::sync::Mutex<Option<Context>>,
    /// A failure to get ready was logged: the next success is logged too, the repeats are not.
    failing: AtomicBool,
}

impl JetStreamPublisher {
    pub(crate) fn new(
        endpoint: Arc<str>,
        target: Arc<JetStreamTarget>,
        timeout: Duration,
    ) -> JetStreamPublisher {
        JetStreamPublisher {
            endpoint,
            target,
            timeout,
            ready: tokio::sync::Mutex::new(None),
            failing: AtomicBool::new(false),
        }
    }

    pub(crate) fn target(&self) -> &JetStreamTarget {
        &self.target
    }

    /// Publishes one delivery and waits for the stream's acknowledgement.
    pub(crate) async fn publish(&self, delivery: KeyedDelivery<'_>) -> AttemptOutcome {
        let now = SystemTime::now();
        let started = Instant::now();
        let result = async {
            let context = self.context().await?;
            let message = self.message(&delivery, now);
            let sent = context
                .send_publish(self.target.subject.clone(), message)
                .await
                .map_err(|e| format!("publishing: {e}"))?;
            let ack = sent.await.map_err(|e| {
                // The stream is gone (deleted, or a server's store lost): check it (and create
                // it, when configured to) again before the next publish.
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.forget_stream();
                }
                format!("waiting for the stream's acknowledgement: {e}")
            })?;
            Ok::<_, String>(ack)
        };
        let error = match tokio::time::timeout(self.timeout, result).await {
            Ok(Ok(_ack)) => None,
            Ok(Err(error)) => Some(error),
            Err(_) => Some(format!(
                "no acknowledgement from the stream within {} ms",
                self.timeout.as_millis()
            )),
        };
        AttemptOutcome {
            started_at_ms: unix_millis(now),
            latency: started.elapsed(),
            status: None,
            error,
            retry_after: None,
        }
    }

    /// The message: the body, `Nats-Msg-Id`, the stream it must land in, and the signature
    /// headers an HTTP delivery carries, signed with this attempt's timestamp.
    fn message(&self, delivery: &KeyedDelivery<'_>, now: SystemTime) -> Publish {
        let timestamp = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string();
        let mut message = Publish::build()
            .payload(delivery.body.clone())
            .message_id(delivery.event_id)
            .expected_stream(&self.target.stream.name)
            .header("Content-Type", "application/json")
            .header(WEBHOOK_ID_HEADER, delivery.event_id)
            .header(WEBHOOK_TIMESTAMP_HEADER, timestamp.as_str())
            .header(SEQUENCE_HEADER, delivery.sequence.to_string());
        if let Some(newest) = delivery.keys.first() {
            let standard = standard_signature_header_with(
                delivery.keys,
                delivery.event_id,
                &timestamp,
                &delivery.body,
            );
            message = message
                .header(
                    FLAGSMITH_SIGNATURE_HEADER,
                    newest.flagsmith_signature(&delivery.body),
                )
                .header(WEBHOOK_SIGNATURE_HEADER, standard);
        }
        message
    }

    /// Drops the connection, so that the next attempt connects and checks the stream again.
    fn forget_stream(&self) {
        if let Ok(mut ready) = self.ready.try_lock() {
            *ready = None;
        }
    }

    /// The connected context, connecting and checking the stream first when not yet done.
    async fn context(&self) -> Result<Context, String> {
        let mut ready = self.ready.lock().await;
        if let Some(context) = ready.as_ref() {
            return Ok(context.clone());
        }
        let opened = async {
            let client = self
                .target
                .connection
                .connect(&format!("flagpost {}", self.endpoint))
                .await
                .map_err(|e| e.to_string())?;
            let context = jetstream::ContextBuilder::new()
                .timeout(self.timeout)
                .build(client);
            self.target
                .stream
                .ensure(&context, &self.target.subject)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(context)
        };
        match tokio::time::timeout(self.timeout * 2, opened).await {
            Ok(Ok(context)) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(endpoint = %self.endpoint, stream = %self.target.stream.name, "JetStream reachable again");
                } else {
                    tracing::info!(endpoint = %self.endpoint, stream = %self.target.stream.name, subject = %self.target.subject, "JetStream connected, stream ready");
                }
                *ready = Some(context.clone());
                Ok(context)
            }
            Ok(Err(error)) => Err(self.not_ready(error)),
            Err(_) => Err(self.not_ready(format!(
                "connecting and checking the stream took over {} ms",
                (self.timeout * 2).as_millis()
            ))),
        }
    }

    /// Says once, as an error, why the endpoint cannot be published to; deliveries wait.
    fn not_ready(&self, error: String) -> String {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(endpoint = %self.endpoint, %error, "JetStream endpoint not ready: deliveries wait and are retried");
        }
        error
    }
}
