//! One stream's response body: its opening, then a frame for each of its channel's notices,
//! taken from the channel's broadcast when hyper asks for more. No task and no buffer of its
//! own: a change wakes the stream's connection once, and the frame it writes is a clone of the
//! bytes rendered once for every stream (an identity's stream renders its own, as only it can).
//!
//! hyper stops asking while the client does not read (its socket and hyper's bounded write queue
//! are full); the notices then wait in the broadcast, counted by the channel against the
//! stream's [`Tail`], and the hub closes the connection of a stream that falls too far behind.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_util::sync::ReusableBoxFuture;

use super::events::{Audience, FlagTable, HEARTBEAT, Position, diff, native_frame};
use super::{EndReason, Notice, StreamSlot, Subscription, Tail};

/// What a stream sends besides the hub's shared frames.
pub enum Kind {
    /// Flagsmith's realtime events.
    Flagsmith,
    /// The environment's own flags: the hub renders them once for every such stream.
    Environment,
    /// One identity: evaluated by its stream on each change of its environment.
    Identity { audience: Audience, last: FlagTable },
}

/// A notice, and the receiver to take the next one from.
type Taken = (Result<Notice, RecvError>, broadcast::Receiver<Notice>);

async fn take(mut notices: broadcast::Receiver<Notice>) -> Taken {
    let notice = notices.recv().await;
    (notice, notices)
}

/// A stream's body. Holding the slot, it gives it back when hyper drops it, however it ended.
pub struct Feed {
    env: u64,
    kind: Kind,
    /// The position the client has: older changes (already in its opening) are skipped.
    revision: u64,
    opening: Option<Bytes>,
    /// The wait for the next notice, its allocation reused from one notice to the next.
    next: ReusableBoxFuture<'static, Taken>,
    tail: Arc<Tail>,
    /// The body has ended: hyper gets no more frames.
    done: bool,
    slot: StreamSlot,
}

impl Feed {
    pub fn new(env: u64, kind: Kind, subscription: Subscription, slot: StreamSlot) -> Feed {
        let feed = Feed {
            env,
            kind,
            revision: subscription.revision,
            opening: Some(subscription.opening),
            next: ReusableBoxFuture::new(take(subscription.notices)),
            tail: subscription.tail,
            done: subscription.ended.is_some(),
            slot,
        };
        if let Some(reason) = subscription.ended {
            feed.slot.hub.end(&feed.tail, reason);
        }
        feed
    }

    /// The frame `notice` brings this stream (`None`: nothing for it), or why it ends.
    fn frame_of(&mut self, notice: Result<Notice, RecvError>) -> Result<Option<Bytes>, EndReason> {
        self.tail.taken.fetch_add(1, Ordering::AcqRel);
        match notice {
            Ok(Notice::Changed(changed)) if changed.revision > self.revision => {
                self.revision = changed.revision;
                Ok(match &self.kind {
                    Kind::Flagsmith => Some(changed.flagsmith.clone()),
                    Kind::Environment => changed.native.clone(),
                    Kind::Identity { .. } => self.identity_changes(),
                })
            }
            Ok(Notice::Changed(_)) => Ok(None),
            Ok(Notice::Heartbeat) => Ok(Some(Bytes::from_static(HEARTBEAT))),
            Ok(Notice::End(reason)) => Err(reason),
            // The broadcast overwrote notices this stream had not taken.
            Err(RecvError::Lagged(_)) => Err(EndReason::TooSlow),
            Err(RecvError::Closed) => Err(EndReason::Shutdown),
        }
    }

    /// The identity's flags that differ from what it was last sent, from the published cache.
    fn identity_changes(&mut self) -> Option<Bytes> {
        let Kind::Identity { audience, last } = &mut self.kind else {
            return None;
        };
        let cache = self.slot.hub.cache.load();
        let env = cache.env(self.env)?;
        let flags = audience.evaluate(Some(env));
        let (changed, deleted) = diff(last, &flags);
        *last = flags;
        if changed.is_empty() && deleted.is_empty() {
            return None;
        }
        let at = Position {
            file_id: self.slot.hub.file_id(),
            env: self.env,
            revision: env.revision,
            updated_at_micros: env.updated_at_micros,
        };
        let identifier = audience.identity.as_ref().map(|i| i.identifier.as_str());
        Some(native_frame(at, identifier, false, &changed, &deleted))
    }
}

impl http_body::Body for Feed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(opening) = this.opening.take() {
            return Poll::Ready(Some(Ok(Frame::data(opening))));
        }
        while !this.done {
            let (notice, notices) = ready!(this.next.poll(cx));
            this.next.set(take(notices));
            match this.frame_of(notice) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(Frame::data(frame)))),
                Ok(None) => {}
                Err(reason) => {
                    this.done = true;
                    this.slot.hub.end(&this.tail, reason);
                }
            }
        }
        Poll::Ready(None)
    }
}

impl Drop for Feed {
    /// Counted as the client's doing unless the stream ended for another reason first.
    fn drop(&mut self) {
        self.slot.hub.end(&self.tail, EndReason::ClientGone);
    }
}
