//! Intake from NATS JetStream, beside `POST /webhook`: this receiver's durable pull consumer on
//! flagpost's stream. The server keeps the consumer's position, so a receiver that was down
//! catches up from the stream, not from flagpost.
//!
//! Each message is a web hook: the same headers and body flagpost POSTs, verified and applied by
//! the same code ([`crate::app::Shared::take_verified`]), and acknowledged only after the writer's
//! durable commit. A message redelivered (its acknowledgement lost, or the receiver killed before
//! it) is a duplicate by its `webhook-id`; ordering is by flagpost's signed sequence, as for web
//! hooks, so messages handled concurrently end in the same cache in any order. A message that
//! fails its checks is terminated (never redelivered) and counted; one the storage cannot commit
//! is redelivered after a pause.
//!
//! The timestamp tolerance is measured from the time the stream stored the message, not from now:
//! a receiver catching up after an hour must take an hour-old message, and only a publisher
//! allowed on the subject can put a message in the stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull};
use async_nats::jetstream::{self, AckKind, Message};
use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;

use crate::app::Shared;
use crate::clock::now_unix;
use crate::config::JetStreamIntake;
use crate::intake::IntakeOutcome;

/// How often the consumer's lag is read from the server.
const LAG_EVERY: Duration = Duration::from_secs(1);
/// The longest pause between attempts to reconnect or re-create the consumer.
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// How long a message the storage could not commit waits before it is redelivered.
const NAK_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// What `/readyz` and `/metrics` say about the intake.
#[derive(Default)]
pub struct JetStreamStatus {
    connected: AtomicBool,
    /// The consumer has been read up to the end of the stream at least once since start.
    caught_up: AtomicBool,
    /// Messages not yet delivered to this consumer, and delivered but not yet acknowledged.
    lag: AtomicU64,
    last_error: Mutex<Option<String>>,
    messages: Family<OutcomeLabels, Counter>,
    lag_gauge: Gauge,
    connected_gauge: Gauge,
}

impl JetStreamStatus {
    /// Registers `flagpost_receiver_jetstream_*` in `registry`.
    pub fn new(registry: &mut Registry) -> Arc<JetStreamStatus> {
        let status = Arc::new(JetStreamStatus::default());
        let sub = registry.sub_registry_with_prefix("jetstream");
        let outcomes = IntakeOutcome::ALL
            .map(IntakeOutcome::as_str)
            .into_iter()
            .chain(["refused", "failed"]);
        flagpost::metrics::register_family(
            sub,
            "messages",
            "JetStream messages handled, by outcome (as web hooks', or refused, or failed: redelivered)",
            &status.messages,
            outcomes.map(|outcome| OutcomeLabels { outcome }),
        );
        sub.register(
            "consumer_lag",
            "Messages in the stream this receiver's consumer has not acknowledged yet",
            status.lag_gauge.clone(),
        );
        sub.register(
            "connected",
            "1 while connected to a NATS server",
            status.connected_gauge.clone(),
        );
        status
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().expect("not poisoned").clone()
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
        self.connected_gauge.set(i64::from(connected));
    }

    fn set_lag(&self, lag: u64) {
        self.lag.store(lag, Ordering::Relaxed);
        self.lag_gauge.set(i64::try_from(lag).unwrap_or(i64::MAX));
        if lag == 0 {
            self.caught_up.store(true, Ordering::Relaxed);
        }
    }

    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().expect("not poisoned") = error;
    }

    fn count(&self, outcome: &'static str) {
        self.messages
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }
}

/// Consumes for ever: connects, finds the stream, takes this receiver's durable consumer and
/// handles its messages; after any failure, waits (doubling up to [`MAX_PAUSE`]) and starts again.
pub async fn consume(shared: Arc<Shared>, settings: JetStreamIntake, status: Arc<JetStreamStatus>) {
    const FIRST_PAUSE: Duration = Duration::from_millis(250);
    let mut pause = FIRST_PAUSE;
    loop {
        let (error, consumed) = consume_once(&shared, &settings, &status).await;
        if consumed {
            // It worked for a while: the next failure starts the backoff over.
            pause = FIRST_PAUSE;
        }
        status.set_connected(false);
        tracing::warn!(stream = %settings.stream, durable = %settings.durable, %error, "JetStream intake interrupted; starting again");
        status.set_error(Some(error));
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// One connection's worth of consuming; answers why it ended, and whether the consumer opened.
async fn consume_once(
    shared: &Arc<Shared>,
    settings: &JetStreamIntake,
    status: &Arc<JetStreamStatus>,
) -> (String, bool) {
    let consumer = match open_consumer(settings).await {
        Ok(consumer) => consumer,
        Err(error) => return (error, false),
    };
    status.set_connected(true);
    status.set_error(None);
    tracing::info!(stream = %settings.stream, durable = %settings.durable, "JetStream intake consuming");
    let lag = tokio::spawn(watch_lag(
        consumer.0.clone(),
        consumer.1.clone(),
        status.clone(),
    ));
    let ended = handle_messages(shared, &consumer.1, settings, status).await;
    lag.abort();
    (ended, true)
}

/// Connects, finds the stream and creates (or finds) this receiver's durable consumer.
async fn open_consumer(
    settings: &JetStreamIntake,
) -> Result<(async_nats::Client, PullConsumer), String> {
    let client = settings
        .connection
        .connect(&format!("flagpost-receiver {}", settings.durable))
        .await
        .map_err(|e| e.to_string())?;
    let context = jetstream::new(client.clone());
    let stream = context.get_stream(&settings.stream).await.map_err(|e| {
        format!(
            "stream {:?} is not there (flagpost creates it on its first publish): {e}",
            settings.stream
        )
    })?;
    let config = pull::Config {
        durable_name: Some(settings.durable.clone()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_ack_pending: i64::try_from(settings.batch * 4).unwrap_or(i64::MAX),
        filter_subject: settings.subject.clone(),
        ..Default::default()
    };
    let consumer = stream
        .get_or_create_consumer(&settings.durable, config)
        .await
        .map_err(|e| format!("cannot open consumer {:?}: {e}", settings.durable))?;
    Ok((client, consumer))
}

/// Takes messages as they come, each handled in a task of its own (so that the writer commits
/// many in one transaction), at most `batch * 4` at once; answers why the stream of messages
/// ended.
async fn handle_messages(
    shared: &Arc<Shared>,
    consumer: &PullConsumer,
    settings: &JetStreamIntake,
    status: &Arc<JetStreamStatus>,
) -> String {
    let mut messages = match consumer
        .stream()
        .max_messages_per_batch(settings.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
    {
        Ok(messages) => messages,
        Err(error) => return format!("cannot read messages: {error}"),
    };
    let limit = settings.batch * 4;
    let mut handling = JoinSet::new();
    loop {
        tokio::select! {
            next = messages.next(), if handling.len() < limit => match next {
                Some(Ok(message)) => {
                    handling.spawn(handle(shared.clone(), status.clone(), message));
                }
                Some(Err(error)) => {
                    // Missed heartbeats and the like: the stream says so, and goes on.
                    tracing::debug!(%error, "JetStream message stream");
                    status.set_connected(false);
                    if error.kind() == pull::MessagesErrorKind::ConsumerDeleted {
                        return "the consumer was deleted".into();
                    }
                }
                None => return "the message stream ended".into(),
            },
            Some(_) = handling.join_next(), if !handling.is_empty() => {}
        }
    }
}

/// Verifies and applies one message, then acknowledges it (after the durable commit), terminates
/// it (refused: bad input is never retried), or asks for it again later (storage failed).
async fn handle(shared: Arc<Shared>, status: Arc<JetStreamStatus>, message: Message) {
    status.set_connected(true);
    let headers = http_headers(message.headers.as_ref());
    let stored_at = message
        .info()
        .map(|info| info.published.unix_timestamp())
        .unwrap_or_else(|_| now_unix());
    let checked = crate::intake::request::check_content_type(&headers);
    let result = match checked {
        Ok(()) => {
            shared
                .take_verified(&headers, &message.payload, stored_at, &mut (None, None))
                .await
        }
        Err(error) => Err(error),
    };
    let (kind, outcome) = match &result {
        Ok(outcome) => {
            shared.metrics.accepted(*outcome);
            (AckKind::Ack, outcome.as_str())
        }
        Err(error) => match error.refusal() {
            Some(reason) => {
                shared.metrics.refused(reason);
                tracing::warn!(%error, subject = %message.subject, "JetStream message refused; terminated");
                (AckKind::Term, "refused")
            }
            None => {
                tracing::warn!(%error, "JetStream message not stored; it will be delivered again");
                (AckKind::Nak(Some(NAK_DELAY)), "failed")
            }
        },
    };
    status.count(outcome);
    if let Err(error) = message.ack_with(kind).await {
        // The server delivers it again after ack_wait; the duplicate is recognised by id.
        tracing::debug!(%error, "JetStream acknowledgement not sent");
    }
}

/// The message's headers as an HTTP request's, for the web hook checks.
fn http_headers(headers: Option<&async_nats::HeaderMap>) -> http::HeaderMap {
    let mut converted = http::HeaderMap::new();
    for (name, values) in headers.into_iter().flat_map(|h| h.iter()) {
        let Ok(name) = http::HeaderName::from_bytes(name.to_string().as_bytes()) else {
            continue;
        };
        for value in values {
            if let Ok(value) = http::HeaderValue::from_str(value.as_str()) {
                converted.append(name.clone(), value);
            }
        }
    }
    converted
}

/// Reads the consumer's lag and the connection's state every [`LAG_EVERY`].
async fn watch_lag(
    client: async_nats::Client,
    consumer: PullConsumer,
    status: Arc<JetStreamStatus>,
) {
    loop {
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        status.set_connected(connected);
        if let Ok(info) = consumer.get_info().await {
            status.set_lag(info.num_pending + info.num_ack_pending as u64);
        }
        tokio::time::sleep(LAG_EVERY).await;
    }
}
