//! Rates over the last minute, computed from the live stream: events/s,
//! finished attempts/s, success rate and p99 latency, in one-second buckets.
//! Memory is bounded: 60 buckets, each keeping at most a fixed number of
//! latency samples.

use std::collections::VecDeque;

use hookyard::v1::{DeliveryStatus, DeliveryUpdate};

pub const WINDOW_SECS: u64 = 60;
const SAMPLES_PER_BUCKET: usize = 1024;

#[derive(Debug, Default, Clone)]
struct Bucket {
    second: u64,
    events: u64,
    finished: u64,
    succeeded: u64,
    latencies: Vec<u32>,
}

#[derive(Debug, Default)]
pub struct Stats {
    buckets: VecDeque<Bucket>,
    /// The highest event offset seen, so an event routed to several
    /// subscriptions counts once.
    max_event_seq: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub events_per_sec: f64,
    pub deliveries_per_sec: f64,
    /// `None` before any attempt finished.
    pub success_rate: Option<f64>,
    pub p99_ms: Option<u32>,
    /// Finished attempts per second, oldest first, one per second of the window.
    pub spark: Vec<u64>,
}

impl Stats {
    pub fn record(&mut self, now: u64, update: &DeliveryUpdate) {
        let Some(delivery) = &update.delivery else {
            return;
        };
        let new_event = delivery.status() == DeliveryStatus::Pending
            && delivery.attempts == 0
            && (delivery.event_seq > self.max_event_seq || delivery.event_seq == 0);
        self.max_event_seq = self.max_event_seq.max(delivery.event_seq);
        let bucket = self.bucket(now);
        if new_event {
            bucket.events += 1;
        }
        match delivery.status() {
            DeliveryStatus::Succeeded | DeliveryStatus::Failed | DeliveryStatus::Dead => {
                bucket.finished += 1;
                if delivery.status() == DeliveryStatus::Succeeded {
                    bucket.succeeded += 1;
                }
                if bucket.latencies.len() < SAMPLES_PER_BUCKET {
                    bucket.latencies.push(delivery.last_duration_ms);
                }
            }
            _ => {}
        }
    }

    fn bucket(&mut self, now: u64) -> &mut Bucket {
        self.expire(now);
        if self.buckets.back().is_none_or(|b| b.second != now) {
            self.buckets.push_back(Bucket {
                second: now,
                ..Bucket::default()
            });
        }
        self.buckets
            .back_mut()
            .expect("a bucket for this second was just ensured")
    }

    fn expire(&mut self, now: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|b| b.second + WINDOW_SECS <= now)
        {
            self.buckets.pop_front();
        }
    }

    pub fn summary(&self, now: u64) -> Summary {
        let live = || {
            self.buckets
                .iter()
                .filter(move |b| b.second + WINDOW_SECS > now && b.second <= now)
        };
        let events: u64 = live().map(|b| b.events).sum();
        let finished: u64 = live().map(|b| b.finished).sum();
        let succeeded: u64 = live().map(|b| b.succeeded).sum();
        let mut latencies: Vec<u32> = live().flat_map(|b| b.latencies.iter().copied()).collect();
        latencies.sort_unstable();
        let p99_ms = (!latencies.is_empty()).then(|| {
            let rank = (latencies.len() * 99).div_ceil(100).max(1);
            latencies[rank - 1]
        });
        let mut spark = vec![0; WINDOW_SECS as usize];
        for b in live() {
            let age = now - b.second;
            spark[(WINDOW_SECS - 1 - age) as usize] = b.finished;
        }
        let secs = WINDOW_SECS as f64;
        Summary {
            events_per_sec: events as f64 / secs,
            deliveries_per_sec: finished as f64 / secs,
            success_rate: (finished > 0).then(|| succeeded as f64 / finished as f64),
            p99_ms,
            spark,
        }
    }
}

#[cfg(test)]
mod tests {
    use hookyard::v1::Delivery;

    use super::*;

    fn update(seq: u64, status: DeliveryStatus, ms: u32) -> DeliveryUpdate {
        DeliveryUpdate {
            delivery: Some(Delivery {
                event_seq: seq,
                status: status.into(),
                last_duration_ms: ms,
                ..Delivery::default()
            }),
            ..DeliveryUpdate::default()
        }
    }

    #[test]
    fn counts_events_once_and_rates_attempts_over_the_window() {
        let mut stats = Stats::default();
        stats.record(100, &update(1, DeliveryStatus::Pending, 0));
        stats.record(100, &update(1, DeliveryStatus::Pending, 0));
        stats.record(101, &update(2, DeliveryStatus::Pending, 0));
        for ms in 1..=99 {
            stats.record(101, &update(1, DeliveryStatus::Succeeded, ms));
        }
        stats.record(102, &update(2, DeliveryStatus::Failed, 500));
        let s = stats.summary(102);
        assert_eq!(s.events_per_sec, 2.0 / 60.0);
        assert_eq!(s.deliveries_per_sec, 100.0 / 60.0);
        assert_eq!(s.success_rate, Some(0.99));
        assert_eq!(s.p99_ms, Some(99));
        assert_eq!(s.spark[59], 1);
        assert_eq!(s.spark[58], 99);
    }

    #[test]
    fn forgets_what_is_older_than_a_minute() {
        let mut stats = Stats::default();
        stats.record(100, &update(1, DeliveryStatus::Succeeded, 5));
        assert_eq!(stats.summary(159).p99_ms, Some(5));
        let later = stats.summary(160);
        assert_eq!(later.p99_ms, None);
        assert_eq!(later.success_rate, None);
        assert!(later.spark.iter().all(|n| *n == 0));
    }
}
