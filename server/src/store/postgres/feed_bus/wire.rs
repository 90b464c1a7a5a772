//! What travels on `hookyard_feed`: numbered batches of compact JSON, each
//! under PostgreSQL's payload limit.

use serde::{Deserialize, Serialize};

use crate::model::{
    run::{Run, RunState},
    Delivery, DeliveryStatus,
};

/// PostgreSQL refuses a payload of 8000 bytes or more.
const PAYLOAD_LIMIT: usize = 7900;
/// A delivery's last error is cut to this many bytes on the bus.
const ERROR_LIMIT: usize = 512;

/// A change waiting in the queue.
pub(super) enum Outgoing {
    Delivery(WireDelivery),
    Run(WireRun),
}

/// Packs changes into payloads under `PAYLOAD_LIMIT`, numbering them.
pub(super) struct Encoder {
    /// The node id as a JSON string.
    node: String,
    next_delivery: u64,
    next_run: u64,
}

/// One message being filled.
struct Pending {
    first_delivery: u64,
    first_run: u64,
    deliveries: Vec<String>,
    runs: Vec<String>,
    bytes: usize,
}

impl Encoder {
    pub(super) fn new(node_id: &str) -> Encoder {
        Encoder {
            node: serde_json::to_string(node_id).unwrap_or_else(|_| "\"\"".to_string()),
            next_delivery: 0,
            next_run: 0,
        }
    }

    /// The payloads for `changes`, after `dropped` (deliveries, runs) that
    /// never made it into the queue.
    pub(super) fn encode(
        &mut self,
        changes: impl IntoIterator<Item = Outgoing>,
        dropped: (u64, u64),
    ) -> Vec<String> {
        self.next_delivery += dropped.0;
        self.next_run += dropped.1;
        let mut payloads = Vec::new();
        let mut pending = self.start();
        for change in changes {
            let (entry, is_run) = match change {
                Outgoing::Delivery(mut delivery) => match fitting_delivery(&mut delivery) {
                    Some(entry) => (entry, false),
                    None => {
                        // Too big even cut: numbered, not sent; the
                        // receivers count it missed.
                        self.flush(&mut pending, &mut payloads);
                        self.next_delivery += 1;
                        pending = self.start();
                        continue;
                    }
                },
                Outgoing::Run(run) => (fitting_run(&run), true),
            };
            if pending.bytes + entry.len() + 1 > PAYLOAD_LIMIT {
                self.flush(&mut pending, &mut payloads);
                pending = self.start();
            }
            pending.bytes += entry.len() + 1;
            if is_run {
                pending.runs.push(entry);
                self.next_run += 1;
            } else {
                pending.deliveries.push(entry);
                self.next_delivery += 1;
            }
        }
        self.flush(&mut pending, &mut payloads);
        payloads
    }

    fn start(&self) -> Pending {
        Pending {
            first_delivery: self.next_delivery,
            first_run: self.next_run,
            deliveries: Vec::new(),
            runs: Vec::new(),
            // The envelope (106 bytes with the numbers at their widest).
            bytes: self.node.len() + 120,
        }
    }

    fn flush(&self, pending: &mut Pending, payloads: &mut Vec<String>) {
        if pending.deliveries.is_empty() && pending.runs.is_empty() {
            return;
        }
        payloads.push(format!(
            "{{\"node\":{},\"first_delivery\":{},\"first_run\":{},\"deliveries\":[{}],\"runs\":[{}]}}",
            self.node,
            pending.first_delivery,
            pending.first_run,
            pending.deliveries.join(","),
            pending.runs.join(","),
        ));
        pending.deliveries.clear();
        pending.runs.clear();
    }
}

/// The largest an entry may be: a message holds at least one.
const ENTRY_LIMIT: usize = PAYLOAD_LIMIT - 400;

fn fitting_delivery(delivery: &mut WireDelivery) -> Option<String> {
    if let Some(error) = &mut delivery.error {
        cut(error, ERROR_LIMIT);
    }
    serde_json::to_string(delivery)
        .ok()
        .filter(|entry| entry.len() <= ENTRY_LIMIT)
}

/// The run, or its id for the receiver to read when it is too big.
fn fitting_run(run: &WireRun) -> String {
    // `RunEntry::Whole` is untagged: the run's own JSON.
    serde_json::to_string(run)
        .ok()
        .filter(|entry| entry.len() <= ENTRY_LIMIT)
        .unwrap_or_else(|| {
            let stored = RunEntry::Stored {
                stored: run.id.clone(),
                time: run.time,
            };
            serde_json::to_string(&stored).unwrap_or_default()
        })
}

/// Cuts `s` to at most `limit` bytes, on a character boundary.
fn cut(s: &mut String, limit: usize) {
    if s.len() <= limit {
        return;
    }
    let mut end = limit;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[derive(Deserialize)]
pub(super) struct Message {
    pub(super) node: String,
    pub(super) first_delivery: u64,
    pub(super) first_run: u64,
    #[serde(default)]
    pub(super) deliveries: Vec<WireDelivery>,
    #[serde(default)]
    pub(super) runs: Vec<RunEntry>,
}

/// A delivery change; keys kept short, as a message holds many.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WireDelivery {
    pub(super) id: u64,
    pub(super) seq: u64,
    pub(super) event: String,
    pub(super) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) tenant: Option<String>,
    pub(super) sub: String,
    pub(super) sub_name: String,
    pub(super) endpoint: String,
    pub(super) status: String,
    pub(super) attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) duration_ms: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next_ms: Option<i64>,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    /// When the change happened, on the node that made it.
    pub(super) time: i64,
}

impl WireDelivery {
    pub(super) fn new(d: &Delivery, time: i64) -> WireDelivery {
        WireDelivery {
            id: d.id,
            seq: d.event_seq,
            event: d.event_id.clone(),
            name: d.event_name.clone(),
            tenant: d.tenant_id.clone(),
            sub: d.subscription_id.clone(),
            sub_name: d.subscription_name.clone(),
            endpoint: d.endpoint_id.clone(),
            status: d.status.as_str().to_string(),
            attempts: d.attempts,
            code: d.last_status_code,
            error: d.last_error.clone(),
            duration_ms: d.last_duration_ms,
            next_ms: d.next_attempt_ms,
            created_ms: d.created_ms,
            updated_ms: d.updated_ms,
            time,
        }
    }

    /// `None` for a status this build does not know.
    pub(super) fn into_delivery(self) -> Option<Delivery> {
        Some(Delivery {
            id: self.id,
            event_seq: self.seq,
            event_id: self.event,
            event_name: self.name,
            tenant_id: self.tenant,
            subscription_id: self.sub,
            subscription_name: self.sub_name,
            also_subscriptions: Vec::new(),
            ordering_key: None,
            endpoint_id: self.endpoint,
            status: DeliveryStatus::parse(&self.status)?,
            attempts: self.attempts,
            last_status_code: self.code,
            last_error: self.error,
            last_duration_ms: self.duration_ms,
            next_attempt_ms: self.next_ms,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum RunEntry {
    Whole(WireRun),
    /// Too big to travel: read it from the database.
    Stored {
        stored: String,
        time: i64,
    },
}

/// A run as `WatchRuns` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WireRun {
    pub(super) id: String,
    pub(super) flow: String,
    pub(super) flow_version: u64,
    pub(super) state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) key: Option<String>,
    pub(super) inputs: String,
    pub(super) trigger: String,
    pub(super) step: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) wake_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    pub(super) created_ms: i64,
    pub(super) updated_ms: i64,
    pub(super) time: i64,
}

impl WireRun {
    pub(super) fn new(run: &Run, time: i64) -> WireRun {
        WireRun {
            id: run.id.clone(),
            flow: run.flow_id.clone(),
            flow_version: run.flow_version,
            state: run.state.as_str().to_string(),
            key: run.key.clone(),
            inputs: run.inputs.clone(),
            trigger: run.trigger.clone(),
            step: run.step_index,
            wake_ms: run.wake_ms,
            error: run.error.clone(),
            created_ms: run.created_ms,
            updated_ms: run.updated_ms,
            time,
        }
    }

    /// The run without what does not travel (step records, trigger data,
    /// attempt counters); `None` for a state this build does not know.
    pub(super) fn into_run(self) -> Option<Run> {
        Some(Run {
            id: self.id,
            flow_id: self.flow,
            flow_version: self.flow_version,
            state: RunState::parse(&self.state)?,
            key: self.key,
            inputs: self.inputs,
            trigger: self.trigger,
            trigger_data: "{}".to_string(),
            step_index: self.step,
            step_waited: false,
            attempt: 0,
            attempt_group: 0,
            wake_ms: self.wake_ms,
            steps: "{}".to_string(),
            error: self.error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store::postgres::feed_bus) fn delivery(
        id: u64,
        error: Option<String>,
    ) -> Delivery {
        Delivery {
            id,
            event_seq: id,
            event_id: format!("evt_{id}"),
            event_name: "lead.created".to_string(),
            tenant_id: None,
            subscription_id: "sub".to_string(),
            subscription_name: "leads".to_string(),
            also_subscriptions: Vec::new(),
            ordering_key: None,
            endpoint_id: "crm".to_string(),
            status: DeliveryStatus::InFlight,
            attempts: 1,
            last_status_code: Some(500),
            last_error: error,
            last_duration_ms: Some(12),
            next_attempt_ms: None,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn run(id: &str, inputs: String) -> Run {
        Run {
            id: id.to_string(),
            flow_id: "welcome".to_string(),
            flow_version: 3,
            state: RunState::Waiting,
            key: Some("k".to_string()),
            inputs,
            trigger: "api".to_string(),
            trigger_data: "{}".to_string(),
            step_index: 2,
            step_waited: false,
            attempt: 0,
            attempt_group: 0,
            wake_ms: Some(99),
            steps: "{}".to_string(),
            error: None,
            created_ms: 1,
            updated_ms: 2,
        }
    }

    fn messages(payloads: &[String]) -> Vec<Message> {
        payloads
            .iter()
            .map(|p| {
                assert!(p.len() < PAYLOAD_LIMIT, "a payload of {} bytes", p.len());
                serde_json::from_str(p).expect("a payload parses")
            })
            .collect()
    }

    #[test]
    fn many_changes_are_split_under_the_payload_limit_and_numbered_in_order() {
        let mut encoder = Encoder::new("node-a");
        let changes =
            (0..500).map(|i| Outgoing::Delivery(WireDelivery::new(&delivery(i, None), 7)));
        let payloads = encoder.encode(changes, (0, 0));
        assert!(
            payloads.len() > 1,
            "500 deliveries do not fit in one notification"
        );
        let mut next = 0;
        for message in messages(&payloads) {
            assert_eq!(message.node, "node-a");
            assert_eq!(message.first_delivery, next);
            for d in message.deliveries {
                assert_eq!(d.id, next);
                let back = d.into_delivery().expect("a known status");
                assert_eq!(back.status, DeliveryStatus::InFlight);
                assert_eq!(back.last_status_code, Some(500));
                next += 1;
            }
        }
        assert_eq!(next, 500);
    }

    #[test]
    fn dropped_changes_leave_a_gap_in_the_numbers() {
        let mut encoder = Encoder::new("node-a");
        let one = |i| vec![Outgoing::Delivery(WireDelivery::new(&delivery(i, None), 7))];
        let first = messages(&encoder.encode(one(0), (0, 0)));
        assert_eq!(first[0].first_delivery, 0);
        let second = messages(&encoder.encode(one(1), (5, 2)));
        assert_eq!(second[0].first_delivery, 6, "five dropped after the first");
        assert_eq!(second[0].first_run, 2);
    }

    #[test]
    fn a_long_error_is_cut_and_a_big_run_travels_as_its_id() {
        let mut encoder = Encoder::new("node-a");
        let long = "é".repeat(10_000);
        let payloads = encoder.encode(
            vec![
                Outgoing::Delivery(WireDelivery::new(&delivery(1, Some(long)), 7)),
                Outgoing::Run(WireRun::new(&run("run_big", "x".repeat(20_000)), 8)),
                Outgoing::Run(WireRun::new(&run("run_small", "{}".to_string()), 9)),
            ],
            (0, 0),
        );
        let all = messages(&payloads);
        let deliveries: Vec<_> = all.iter().flat_map(|m| &m.deliveries).collect();
        assert!(deliveries[0]
            .error
            .as_ref()
            .is_some_and(|e| e.len() <= ERROR_LIMIT));
        let runs: Vec<_> = all.iter().flat_map(|m| &m.runs).collect();
        assert!(matches!(runs[0], RunEntry::Stored { stored, time: 8 } if stored == "run_big"));
        let RunEntry::Whole(small) = runs[1] else {
            panic!("a small run travels whole");
        };
        let back = small.clone().into_run().expect("a known state");
        assert_eq!(back.id, "run_small");
        assert_eq!(back.state, RunState::Waiting);
        assert_eq!(back.step_index, 2);
        assert_eq!(back.key.as_deref(), Some("k"));
    }

    #[test]
    fn cut_keeps_characters_whole() {
        let mut s = "aé".to_string();
        cut(&mut s, 2);
        assert_eq!(s, "a");
    }
}
