//! The scheduler's rules under tokio's paused clock, against a storage
//! stand-in that answers claims the way the SQL does (one endpoint's due
//! rows, in due order, after a cursor).

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use super::schedule::{Action, Claimed, Clock, Endpoints, Limits, Scheduler};
use crate::{
    model::{DeliveryStatus, DueCursor, DueDelivery, Endpoint, EndpointState, EventEnvelope},
    store::Settled,
};

const T0: i64 = 1_800_000_000_000;

impl Endpoints for HashMap<String, Arc<Endpoint>> {
    fn endpoint(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.get(id)
    }
}

fn endpoint(id: &str, max_in_flight: Option<u32>) -> Arc<Endpoint> {
    Arc::new(Endpoint {
        id: id.to_string(),
        url: format!("https://{id}.example/hook"),
        tenant_id: None,
        secret: String::new(),
        headers: Default::default(),
        timeout: None,
        retry_schedule: None,
        max_in_flight,
        state: EndpointState::Enabled,
        description: String::new(),
        options: Default::default(),
        previous_secret: None,
        disabled_reason: None,
        failing_since_ms: None,
        version: 1,
        created_ms: 0,
        updated_ms: 0,
    })
}

/// How a sent attempt ends.
#[derive(Clone, Copy)]
enum End {
    Ok,
    /// No connection: unreachable, retried after the delay.
    Refused(Duration),
    /// Answered 500: reached, retried after the delay.
    Error(Duration),
}

struct Sim {
    sched: Scheduler,
    endpoints: HashMap<String, Arc<Endpoint>>,
    /// Pending rows by id: the delivery with its current due time.
    storage: BTreeMap<u64, DueDelivery>,
    /// Sent and not yet ended, in send order.
    in_flight: Vec<DueDelivery>,
    /// Every send, in order, by endpoint.
    sent: Vec<Arc<str>>,
    claims: usize,
    next_id: u64,
}

impl Sim {
    fn new(limits: Limits, endpoints: &[Arc<Endpoint>]) -> Sim {
        Sim {
            sched: Scheduler::new(limits, Clock::following_tokio(T0)),
            endpoints: endpoints
                .iter()
                .map(|e| (e.id.clone(), e.clone()))
                .collect(),
            storage: BTreeMap::new(),
            in_flight: Vec::new(),
            sent: Vec::new(),
            claims: 0,
            next_id: 0,
        }
    }

    fn now(&self) -> i64 {
        self.sched.now_ms()
    }

    fn row(&mut self, endpoint: &str, due_ms: i64) -> DueDelivery {
        self.next_id += 1;
        let delivery = DueDelivery {
            id: self.next_id,
            subscription_id: "s".into(),
            endpoint_id: endpoint.into(),
            attempts: 0,
            due_ms,
            ordered: false,
            event: Arc::new(EventEnvelope {
                seq: self.next_id,
                id: format!("ev-{}", self.next_id),
                name: "lead.created".into(),
                source: "test".into(),
                tenant_id: None,
                time_ms: due_ms,
                payload: "{}".into(),
            }),
        };
        self.storage.insert(delivery.id, delivery.clone());
        delivery
    }

    /// Deliveries committed now, announced by the writer.
    fn publish(&mut self, endpoint: &str, n: usize) {
        for _ in 0..n {
            let now = self.now();
            let delivery = self.row(endpoint, now);
            self.sched.deliver(delivery, &self.endpoints);
        }
        self.run();
    }

    /// Deliveries left in storage by an earlier run; then the start.
    fn start_with_stored(&mut self, rows: &[(&str, usize)]) {
        for &(endpoint, n) in rows {
            for _ in 0..n {
                let now = self.now();
                self.row(endpoint, now);
            }
        }
        let mut due: HashMap<String, i64> = HashMap::new();
        for d in self.storage.values() {
            let e = due.entry(d.endpoint_id.to_string()).or_insert(d.due_ms);
            *e = (*e).min(d.due_ms);
        }
        self.sched
            .stored(due.into_iter().collect(), &self.endpoints);
        self.run();
    }

    /// Carries out the scheduler's actions until there are none; claims are
    /// answered at once.
    fn run(&mut self) {
        let mut actions = Vec::new();
        loop {
            self.sched.take_actions(&mut actions);
            if actions.is_empty() {
                return;
            }
            for action in actions.drain(..) {
                match action {
                    Action::Send { delivery, .. } => {
                        self.sent.push(delivery.endpoint_id.clone());
                        self.in_flight.push(delivery);
                    }
                    Action::Claim {
                        endpoint_id,
                        after,
                        limit,
                        now_ms,
                    } => {
                        self.claims += 1;
                        let claimed = self.claim(endpoint_id, after, limit, now_ms);
                        self.sched.claimed(claimed, &self.endpoints);
                    }
                    Action::Abandon { delivery, .. } => {
                        self.storage.remove(&delivery.id);
                        let settled = settled(delivery, DeliveryStatus::Dead, None);
                        self.sched.settled(&[settled], &self.endpoints);
                    }
                }
            }
        }
    }

    fn claim(
        &self,
        endpoint_id: Arc<str>,
        after: Option<DueCursor>,
        limit: usize,
        now_ms: i64,
    ) -> Claimed {
        let mut due: Vec<&DueDelivery> = self
            .storage
            .values()
            .filter(|d| d.endpoint_id == endpoint_id && d.due_ms <= now_ms)
            .filter(|d| after.is_none_or(|a| d.cursor() > a))
            .collect();
        due.sort_by_key(|d| d.cursor());
        let rows: Vec<DueDelivery> = due.into_iter().take(limit).cloned().collect();
        let next_due = (rows.len() < limit)
            .then(|| {
                self.storage
                    .values()
                    .filter(|d| d.endpoint_id == endpoint_id && d.due_ms > now_ms)
                    .map(|d| d.due_ms)
                    .min()
            })
            .flatten();
        Claimed {
            endpoint_id,
            asked: limit,
            rows: Ok(rows),
            next_due,
        }
    }

    /// Ends every attempt in flight for `endpoint` as `end`; returns how many.
    fn end_all(&mut self, endpoint: &str, end: End) -> usize {
        let (done, rest): (Vec<_>, Vec<_>) = self
            .in_flight
            .drain(..)
            .partition(|d| &*d.endpoint_id == endpoint);
        self.in_flight = rest;
        let n = done.len();
        for delivery in done {
            self.end(delivery, end);
        }
        self.run();
        n
    }

    fn end(&mut self, mut delivery: DueDelivery, end: End) {
        let now = self.now();
        let id = delivery.endpoint_id.clone();
        delivery.attempts += 1;
        let (reached, status, next) = match end {
            End::Ok => (true, DeliveryStatus::Succeeded, None),
            End::Refused(after) => (
                false,
                DeliveryStatus::Failed,
                Some(now + after.as_millis() as i64),
            ),
            End::Error(after) => (
                true,
                DeliveryStatus::Failed,
                Some(now + after.as_millis() as i64),
            ),
        };
        self.sched
            .attempt_ended(&id, reached, false, &self.endpoints);
        match next {
            Some(at) => {
                let mut stored = delivery.clone();
                stored.due_ms = at;
                stored.attempts = delivery.attempts;
                self.storage.insert(delivery.id, stored);
            }
            None => {
                self.storage.remove(&delivery.id);
            }
        }
        let settled = settled(delivery, status, next);
        self.sched.settled(&[settled], &self.endpoints);
    }

    /// Lets tokio's clock run to `by` from now, firing timers on the way.
    async fn advance(&mut self, by: Duration) {
        let until = tokio::time::Instant::now() + by;
        loop {
            let fired = tokio::select! {
                biased;
                fired = self.sched.next_timer() => fired,
                _ = tokio::time::sleep_until(until) => None,
            };
            match fired {
                Some(fired) => {
                    self.sched.on_timer(fired, &self.endpoints);
                    self.run();
                }
                None if tokio::time::Instant::now() >= until => return,
                None => tokio::time::sleep_until(until).await,
            }
        }
    }

    fn in_flight_to(&self, endpoint: &str) -> usize {
        self.in_flight
            .iter()
            .filter(|d| &*d.endpoint_id == endpoint)
            .count()
    }

    fn sent_to(&self, endpoint: &str) -> usize {
        self.sent.iter().filter(|e| &***e == endpoint).count()
    }
}

fn settled(delivery: DueDelivery, status: DeliveryStatus, next: Option<i64>) -> Settled {
    Settled {
        delivery,
        attempt: None,
        status,
        next_attempt_ms: next,
        last_error: None,
        endpoint_gone: false,
        lease: None,
    }
}

fn limits() -> Limits {
    Limits {
        memory_queue: 10_000,
        window: 64,
        max_in_flight: 4,
        max_concurrent: 1_000,
    }
}

#[tokio::test(start_paused = true)]
async fn a_lane_sends_up_to_its_limit_and_the_next_when_a_slot_frees() {
    let mut sim = Sim::new(limits(), &[endpoint("a", Some(2))]);
    sim.publish("a", 5);
    assert_eq!(sim.in_flight_to("a"), 2);
    let first = sim.in_flight.remove(0);
    sim.end(first, End::Ok);
    sim.run();
    assert_eq!(sim.in_flight_to("a"), 2);
    assert_eq!(sim.sent_to("a"), 3);
    while sim.end_all("a", End::Ok) > 0 {}
    assert_eq!(sim.sent_to("a"), 5);
    assert_eq!(sim.sched.held(), 0);
    assert!(sim.storage.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_backlog_beyond_the_window_stays_in_storage_and_is_claimed_in_pages() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None)]);
    sim.publish("a", 1_000);
    assert!(
        sim.sched.held_by("a") <= 64,
        "held {}",
        sim.sched.held_by("a")
    );
    let mut rounds = 0;
    while sim.end_all("a", End::Ok) > 0 {
        assert!(sim.sched.held_by("a") <= 64);
        rounds += 1;
    }
    assert_eq!(sim.sent_to("a"), 1_000, "every delivery went out once");
    assert!(sim.storage.is_empty());
    assert!(rounds >= 250, "four at a time: {rounds} rounds");
    assert!(sim.claims > 1, "the rest was read back from storage");
}

#[tokio::test(start_paused = true)]
async fn on_start_each_endpoint_claims_its_own_backlog() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None), endpoint("b", None)]);
    sim.start_with_stored(&[("a", 500), ("b", 3)]);
    assert_eq!(sim.in_flight_to("a"), 4);
    assert_eq!(sim.in_flight_to("b"), 3);
    assert!(sim.sched.held_by("a") <= 64);
    while sim.end_all("a", End::Ok) + sim.end_all("b", End::Ok) > 0 {}
    assert_eq!((sim.sent_to("a"), sim.sent_to("b")), (500, 3));
}

#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_pauses_holds_nothing_and_never_delays_another() {
    let mut sim = Sim::new(limits(), &[endpoint("dead", None), endpoint("ok", None)]);
    sim.start_with_stored(&[("dead", 25_000)]);
    // The breaker trips after a few refused connections.
    for _ in 0..3 {
        sim.end_all("dead", End::Refused(Duration::from_secs(5)));
    }
    assert_eq!(sim.in_flight_to("dead"), 0, "paused: nothing sent");
    assert_eq!(sim.sched.held_by("dead"), 0, "paused: nothing held");
    sim.publish("ok", 5);
    assert_eq!(sim.in_flight_to("ok"), 4, "sent at once");
    sim.end_all("ok", End::Ok);
    assert_eq!(sim.in_flight_to("ok"), 1);
    sim.end_all("ok", End::Ok);
    assert_eq!(sim.sent_to("ok"), 5);

    // While it stays down it gets one probe per pause, never a flood.
    let before = sim.sent_to("dead");
    for _ in 0..10 {
        sim.advance(Duration::from_secs(1)).await;
        sim.end_all("dead", End::Refused(Duration::from_secs(5)));
    }
    let probes = sim.sent_to("dead") - before;
    assert!((1..=5).contains(&probes), "{probes} probes in 10 s");
    assert!(sim.sched.held() <= 1, "held {}", sim.sched.held());
}

#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_drains_its_backlog_after_a_successful_probe() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None)]);
    sim.start_with_stored(&[("a", 200)]);
    for _ in 0..2 {
        sim.end_all("a", End::Refused(Duration::from_millis(100)));
    }
    assert_eq!(sim.in_flight_to("a"), 0, "paused");
    sim.advance(Duration::from_secs(1)).await;
    assert_eq!(sim.in_flight_to("a"), 1, "one probe");
    sim.end_all("a", End::Ok);
    assert_eq!(sim.in_flight_to("a"), 4, "open again at full speed");
    while sim.end_all("a", End::Ok) > 0 {}
    assert!(sim.storage.is_empty(), "{} left", sim.storage.len());
}

#[tokio::test(start_paused = true)]
async fn request_slots_are_shared_round_robin() {
    let limits = Limits {
        max_concurrent: 4,
        max_in_flight: 4,
        ..limits()
    };
    let mut sim = Sim::new(limits, &[endpoint("hot", None), endpoint("cold", None)]);
    sim.start_with_stored(&[("hot", 100_000)]);
    assert_eq!(sim.in_flight_to("hot"), 4);
    sim.publish("cold", 10);
    assert_eq!(sim.in_flight_to("cold"), 0, "all slots are taken");
    // Each freed slot goes to the next lane in line: cold gets every other.
    let mut slots = 0;
    while sim.sent_to("cold") < 10 {
        let oldest = sim.in_flight.remove(0);
        sim.end(oldest, End::Ok);
        sim.run();
        slots += 1;
        assert!(
            slots <= 2 * 10 + 4,
            "cold waited {slots} slots for 10 sends"
        );
    }
    assert!(sim.sched.held_by("hot") <= 64);
}

#[tokio::test(start_paused = true)]
async fn a_cold_endpoint_is_claimed_within_one_round_of_a_hot_ones() {
    let limits = Limits {
        memory_queue: 128,
        ..limits()
    };
    let endpoints: Vec<_> = ["h1", "h2", "h3", "cold"]
        .iter()
        .map(|id| endpoint(id, None))
        .collect();
    let mut sim = Sim::new(limits, &endpoints);
    sim.start_with_stored(&[("h1", 10_000), ("h2", 10_000), ("h3", 10_000), ("cold", 10)]);
    let claims_before = sim.claims;
    let mut turns = 0;
    while sim.sent_to("cold") < 10 {
        for hot in ["h1", "h2", "h3", "cold"] {
            sim.end_all(hot, End::Ok);
        }
        turns += 1;
        assert!(
            turns <= 6,
            "cold sent {} after {turns} turns",
            sim.sent_to("cold")
        );
    }
    assert!(sim.claims > claims_before);
    assert!(sim.sched.held() <= 128);
}

#[tokio::test(start_paused = true)]
async fn a_short_retry_waits_in_memory_and_a_long_one_in_storage() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None)]);
    sim.publish("a", 2);
    let (short, long) = (sim.in_flight.remove(0), sim.in_flight.remove(0));
    sim.end(short, End::Error(Duration::from_secs(5)));
    sim.end(long, End::Error(Duration::from_secs(300)));
    sim.run();
    assert_eq!(sim.sched.held_by("a"), 1, "the 5 s retry stays in memory");
    sim.advance(Duration::from_millis(4_900)).await;
    assert_eq!(sim.in_flight_to("a"), 0);
    sim.advance(Duration::from_millis(200)).await;
    assert_eq!(sim.in_flight_to("a"), 1, "sent when due");
    sim.end_all("a", End::Ok);
    sim.advance(Duration::from_secs(290)).await;
    assert_eq!(sim.in_flight_to("a"), 0, "the 5 min retry is not early");
    let claims = sim.claims;
    sim.advance(Duration::from_secs(11)).await;
    assert_eq!(sim.in_flight_to("a"), 1, "claimed from storage when due");
    assert!(sim.claims > claims);
}

#[tokio::test(start_paused = true)]
async fn a_disabled_endpoint_keeps_its_backlog_in_storage_until_enabled() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None)]);
    let mut disabled = (*sim.endpoints["a"]).clone();
    disabled.state = EndpointState::Disabled;
    sim.endpoints.insert("a".into(), Arc::new(disabled));
    sim.start_with_stored(&[("a", 50)]);
    sim.publish("a", 5);
    assert_eq!(sim.sent_to("a"), 0);
    assert_eq!(sim.sched.held(), 0, "nothing in memory");
    assert_eq!(sim.storage.len(), 55, "nothing given up");

    sim.endpoints.insert("a".into(), endpoint("a", None));
    sim.sched.catalog_changed(&sim.endpoints);
    sim.run();
    while sim.end_all("a", End::Ok) > 0 {}
    assert_eq!(sim.sent_to("a"), 55);
}

#[tokio::test(start_paused = true)]
async fn a_deleted_endpoints_deliveries_are_abandoned() {
    let mut sim = Sim::new(limits(), &[]);
    sim.start_with_stored(&[("gone", 300)]);
    assert_eq!(sim.sent_to("gone"), 0);
    assert!(sim.storage.is_empty(), "every one recorded dead");
    assert_eq!(sim.sched.held(), 0);
}

#[tokio::test(start_paused = true)]
async fn results_that_cannot_be_stored_pause_sending_with_growing_backoff() {
    let mut sim = Sim::new(limits(), &[endpoint("a", None)]);
    sim.publish("a", 4);
    let failed: Vec<Settled> = sim
        .in_flight
        .drain(..)
        .map(|mut d| {
            d.attempts += 1;
            settled(d, DeliveryStatus::Succeeded, None)
        })
        .collect();
    for s in &failed {
        sim.sched
            .attempt_ended(&s.delivery.endpoint_id, true, false, &sim.endpoints);
    }
    sim.sched.settle_failed(&failed, &sim.endpoints);
    sim.run();
    assert_eq!(sim.in_flight_to("a"), 0, "not sent again at once");
    sim.advance(Duration::from_millis(900)).await;
    assert_eq!(sim.in_flight_to("a"), 0);
    sim.advance(Duration::from_millis(200)).await;
    assert_eq!(sim.in_flight_to("a"), 4, "sent again after the pause");

    // Failing again doubles the pause.
    let failed: Vec<Settled> = sim
        .in_flight
        .drain(..)
        .map(|d| settled(d, DeliveryStatus::Succeeded, None))
        .collect();
    for s in &failed {
        sim.sched
            .attempt_ended(&s.delivery.endpoint_id, true, false, &sim.endpoints);
    }
    sim.sched.settle_failed(&failed, &sim.endpoints);
    sim.run();
    sim.advance(Duration::from_millis(1_900)).await;
    assert_eq!(sim.in_flight_to("a"), 0);
    sim.advance(Duration::from_millis(200)).await;
    assert_eq!(sim.in_flight_to("a"), 4);
}

#[tokio::test(start_paused = true)]
async fn memory_stays_within_the_total_with_many_endpoints() {
    let limits = Limits {
        memory_queue: 100,
        window: 64,
        ..limits()
    };
    let endpoints: Vec<_> = (0..20).map(|i| endpoint(&format!("e{i}"), None)).collect();
    let stored: Vec<(String, usize)> = (0..20).map(|i| (format!("e{i}"), 200)).collect();
    let stored: Vec<(&str, usize)> = stored.iter().map(|(e, n)| (e.as_str(), *n)).collect();
    let mut sim = Sim::new(limits, &endpoints);
    sim.start_with_stored(&stored);
    loop {
        assert!(sim.sched.held() <= 100, "held {}", sim.sched.held());
        let mut ended = 0;
        for e in &endpoints {
            ended += sim.end_all(&e.id, End::Ok);
        }
        if ended == 0 {
            break;
        }
    }
    assert_eq!(sim.sent.len(), 4_000);
    assert!(sim.storage.is_empty());
}
