//! How long the writer gathers a batch: until the senders its last commit answered are back, and
//! no longer than half that commit's time.
//!
//! Senders that each wait for their answer before sending again (every HTTP sender, a JetStream
//! consumer's messages in flight) otherwise split into two groups that alternate: while one
//! group's commit runs the other's requests queue, and each commit takes only the group that
//! queued. Every request then waits for a commit that is not its own and then for its own, so 32
//! senders get at most 16 per commit. Waiting the short round trip for the answered senders to
//! come back lets one commit take them all.
//!
//! It never delays a lone sender: a batch waits only for as many senders as the last commit
//! answered plus those already queued, so one request at a time is committed at once (the end to
//! end latency bench), and it waits no longer than [`MAX_GATHER`], nor than half the last commit
//! took (so a fast disk keeps short waits), nor past a silence of [`MAX_GAP`], for senders that
//! do not come back.

use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// The longest a batch waits for answered senders to come back.
pub const MAX_GATHER: Duration = Duration::from_micros(1_000);

/// A batch stops waiting once no sender came back for this long: senders that are coming back
/// arrive one after another, so a silence this long means the rest are not coming soon.
pub const MAX_GAP: Duration = Duration::from_micros(250);

/// What the writer knows of its senders: how many the last commit answered, and how long it took.
#[derive(Debug, Default)]
pub struct Gather {
    answered: usize,
    last_commit: Duration,
}

impl Gather {
    /// Records a commit that answered `answered` jobs and took `took`.
    pub fn committed(&mut self, answered: usize, took: Duration) {
        self.answered = answered;
        self.last_commit = took;
    }

    /// Blocks for the next jobs and takes, into `jobs`, every job queued and those of the
    /// senders just answered as they come back (see the module's notes); false once every
    /// sender is gone. Senders wake the thread ([`Thread::unpark`]) after each job they queue.
    pub fn take<T>(
        &mut self,
        queue: &mut mpsc::Receiver<T>,
        jobs: &mut Vec<T>,
        max: usize,
    ) -> bool {
        if queue.blocking_recv_many(jobs, max) == 0 {
            return false;
        }
        let expected = (jobs.len() + std::mem::take(&mut self.answered)).min(max);
        let started = Instant::now();
        let deadline = started + (self.last_commit / 2).min(MAX_GATHER);
        let mut last_arrival = started;
        while jobs.len() < expected {
            let before = jobs.len();
            while jobs.len() < max {
                match queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if jobs.len() > before {
                last_arrival = now;
            }
            let quiet_until = last_arrival + MAX_GAP;
            if jobs.len() >= expected || now >= deadline || now >= quiet_until {
                break;
            }
            std::thread::park_timeout(deadline.min(quiet_until) - now);
        }
        true
    }
}

/// Wakes the writer thread if it is gathering (a no-op costing one atomic swap otherwise).
pub fn wake(writer: &Thread) {
    writer.unpark();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_takes_what_is_queued_and_stops_at_its_deadline_for_senders_that_do_not_come_back() {
        let (sender, mut queue) = mpsc::channel(16);
        for job in 0..3 {
            sender.try_send(job).unwrap();
        }
        let mut gather = Gather::default();
        let mut jobs = Vec::new();
        assert!(gather.take(&mut queue, &mut jobs, 16));
        assert_eq!(jobs, [0, 1, 2]);

        // Five answered, one back: the batch waits at most MAX_GATHER for the other four.
        gather.committed(5, Duration::from_secs(3_600));
        sender.try_send(3).unwrap();
        jobs.clear();
        assert!(gather.take(&mut queue, &mut jobs, 16));
        assert_eq!(jobs, [3]);

        // No more than `max` per batch, the rest left for the next.
        for job in 4..10 {
            sender.try_send(job).unwrap();
        }
        jobs.clear();
        assert!(gather.take(&mut queue, &mut jobs, 4));
        assert_eq!(jobs, [4, 5, 6, 7]);

        drop(sender);
        jobs.clear();
        assert!(gather.take(&mut queue, &mut jobs, 16));
        assert_eq!(jobs, [8, 9]);
        jobs.clear();
        assert!(!gather.take(&mut queue, &mut jobs, 16), "every sender gone");
    }
}
