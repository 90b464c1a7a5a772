//! `end-to-end`: HTTP publishes at a fixed rate (open loop) to a daemon that
//! delivers every event to the sink. Reports intake latency (intended send →
//! 202) and end-to-end latency (202 → the sink received the webhook, and
//! intended send → received), per rate.
//!
//! With `endpoints` above 1, endpoint `k` is a path of its own on the sink
//! with a subscription of its own (`bench.e2e.<k>`), and each event goes to
//! one of them: every event is still delivered once, but several daemons
//! (`--nodes`) each have endpoints to send for. HTTP connection `w` posts to
//! daemon `w mod n` and endpoint `(w / n) mod endpoints`, so every endpoint
//! gets events through every daemon, and most deliveries are read by
//! another daemon than the one that took the event.
//!
//! With `ordering_keys` N above 0 every endpoint orders by `{{
//! event.payload.key }}` and event `i` carries `"key": "k<i mod N>"`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::json;

use super::{cpu_per, out_of_order, run_prefix, Common};
use crate::{
    daemon::{CpuClock, DaemonSpec},
    load::{self, event_id, HttpWorker, Outcome, Plan},
    nodes::{self, Nodes},
    report::{self, Latency, Table, LATENCY_HEADERS},
    sink::{Sink, SinkConfig},
};

/// How long the sink may take to receive everything acknowledged.
const SETTLE: Duration = Duration::from_secs(60);

pub struct EndToEndArgs {
    pub rates: Vec<f64>,
    /// Endpoints the events are spread over (each event to one).
    pub endpoints: usize,
    pub connections: usize,
    pub payload: usize,
    /// Ordering keys the events are spread over; 0: unordered.
    pub ordering_keys: u64,
}

pub async fn run(common: &Common, args: &EndToEndArgs) -> anyhow::Result<()> {
    let mut headers = vec!["nodes", "rate/s", "measure"];
    headers.extend(LATENCY_HEADERS);
    headers.extend(["count", "lost"]);
    let mut table = Table::new(&headers);
    let mut results = Vec::new();
    let mut summary = Vec::new();
    let endpoints = args.endpoints.max(1);
    for (&n, &rate) in common
        .nodes
        .iter()
        .flat_map(|n| args.rates.iter().map(move |r| (n, r)))
    {
        let sink = Sink::start(SinkConfig::default()).await?;
        let base = if args.ordering_keys > 0 {
            DaemonSpec::default().ordered_by_payload_key()
        } else {
            DaemonSpec::default()
        };
        let spec = if endpoints == 1 {
            base.route(
                "sink",
                &sink.url("/hook"),
                &["bench.*"],
                &["0s", "1s", "1s"],
            )
        } else {
            (0..endpoints).fold(base, |spec, k| {
                spec.route(
                    &format!("sink{k}"),
                    &sink.url(&format!("/hook/{k}")),
                    &[&format!("bench.e2e.{k}")],
                    &["0s", "1s", "1s"],
                )
            })
        };
        let daemons = Nodes::start(&common.hookyard, &common.storage, &spec, n).await?;
        let leases = match daemons.wait_leases_spread(endpoints).await {
            Ok(leases) => leases,
            Err(error) => {
                daemons.stop().await;
                return Err(error);
            }
        };
        let prefix = run_prefix("e2e");
        let addrs = daemons.listens();
        let workers = (0..args.connections)
            .map(|w| {
                let name = if endpoints == 1 {
                    "bench.e2e".to_string()
                } else {
                    format!("bench.e2e.{}", (w / addrs.len()) % endpoints)
                };
                HttpWorker::new(addrs[w % addrs.len()], &name, &prefix, args.payload)
                    .with_keys(args.ordering_keys)
                    .record_acks()
            })
            .collect();
        let plan = Plan {
            workers: args.connections,
            warmup: common.warmup,
            duration: common.duration,
            rate: Some(rate),
            limit: None,
        };
        // CPU from the end of the warm-up until everything acknowledged
        // has arrived: intake and delivery together, per event acknowledged
        // in the measured window.
        let clocks = (daemons.cpu_clock(), daemons.pg_cpu_clock());
        let read = move || (clocks.0.read(), clocks.1.and_then(CpuClock::read));
        let warmup = common.warmup;
        let cpu_start = {
            let read = read.clone();
            tokio::spawn(async move {
                tokio::time::sleep(warmup).await;
                read()
            })
        };
        let outcome = load::run(plan, workers).await;
        let arrived = delivered(&outcome, &sink, &prefix, rate, common.warmup).await;
        let cpu_end = read();
        let cpu_start = cpu_start.await.unwrap_or_default();
        let cpu_us = cpu_per(cpu_start.0, cpu_end.0, outcome.events);
        let pg_cpu_us = cpu_per(cpu_start.1, cpu_end.1, outcome.events);
        let misordered = (args.ordering_keys > 0).then(|| {
            out_of_order(
                &sink.first_delivered(),
                &prefix,
                1,
                args.connections,
                args.ordering_keys,
            )
        });
        let acked_per_s = report::rate(outcome.events, outcome.elapsed);
        let (from_ack, from_send) = (
            Latency::of(&arrived.from_ack),
            Latency::of(&arrived.from_send),
        );
        daemons.stop().await;
        let rows = [
            (
                "intake (send→202)",
                Latency::of(&outcome.latency),
                outcome.errors,
            ),
            ("e2e (202→sink)", from_ack, arrived.lost),
            ("e2e (send→sink)", from_send, arrived.lost),
        ];
        for (label, latency, bad) in &rows {
            let mut row = vec![n.to_string(), format!("{rate}"), label.to_string()];
            row.extend(latency.cells());
            row.push(latency.count.to_string());
            row.push(bad.to_string());
            table.row(row);
        }
        if let Some(error) = &outcome.first_error {
            println!(
                "{n} node(s), rate {rate}: first error of {}: {error}",
                outcome.errors
            );
        }
        let us = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        summary.push(format!(
            "{n} node(s), rate {rate}: {} acknowledged/s; cpu us/ev {} (daemons), {} \
             (PostgreSQL); endpoint leases per daemon {}{}",
            report::thousands(acked_per_s),
            us(cpu_us),
            us(pg_cpu_us),
            nodes::leases_text(leases.as_deref()),
            misordered.map_or_else(String::new, |m| format!(
                "; {m} arrived after a later event with their key"
            )),
        ));
        results.push(json!({
            "nodes": n,
            "endpoints": endpoints,
            "leases_per_node": leases,
            "rate": rate,
            "ordering_keys": args.ordering_keys,
            "out_of_order": misordered,
            "published": outcome.requests,
            "publish_errors": outcome.errors,
            "acknowledged": arrived.acknowledged,
            "lost": arrived.lost,
            "intake": Latency::of(&outcome.latency),
            "e2e_from_ack": from_ack,
            "e2e_from_send": from_send,
            "acknowledged_per_s": acked_per_s,
            "daemon_cpu_us_per_event": cpu_us,
            "pg_cpu_us_per_event": pg_cpu_us,
        }));
    }
    println!(
        "\nend-to-end on {}: HTTP open loop over {} connections, {endpoints} endpoint(s){}, payload {} B, {:?} per rate after {:?} warm-up\n{}",
        common.storage.label(),
        args.connections,
        if args.ordering_keys > 0 {
            format!(" ordered by {} keys", args.ordering_keys)
        } else {
            " unordered".to_string()
        },
        args.payload,
        common.duration,
        common.warmup,
        table.render()
    );
    for line in &summary {
        println!("{line}");
    }
    println!(
        "cpu us/ev: CPU time from the end of the warm-up until all acknowledged events arrived, \
         per event acknowledged in the measured window (intake and delivery, all the daemons \
         together); PostgreSQL: all its server processes (own cluster only)."
    );
    report::write_json(
        &common.json,
        &json!({"scenario": "end-to-end", "storage": common.storage.label(), "nodes": common.nodes, "endpoints": endpoints, "connections": args.connections, "duration_s": common.duration.as_secs_f64(), "runs": results}),
    )?;
    println!("wrote {}", common.json.display());
    Ok(())
}

/// What became of the events an open-loop HTTP run had acknowledged.
pub struct Delivered {
    pub acknowledged: usize,
    /// 202 → the sink's first 2xx-answered arrival, for events intended
    /// after the warm-up.
    pub from_ack: Histogram<u64>,
    /// Intended send → the sink's first 2xx-answered arrival.
    pub from_send: Histogram<u64>,
    /// Acknowledged but not at the sink within `SETTLE`.
    pub lost: u64,
}

/// Waits (up to `SETTLE`) for the sink to receive every event the workers
/// had acknowledged, then measures each against its intended send time and
/// its 202.
pub async fn delivered(
    outcome: &Outcome<HttpWorker>,
    sink: &Sink,
    prefix: &str,
    rate: f64,
    warmup: Duration,
) -> Delivered {
    let start = outcome.start;
    let measure_from = start + warmup;
    // Every acknowledged event, with its intended send time and ack time.
    let mut acked: HashMap<String, (Instant, Instant)> = HashMap::new();
    for worker in &outcome.workers {
        for &(i, at) in worker.acks.iter().flatten() {
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            acked.insert(event_id(prefix, i, 0), (intended, at));
        }
    }
    sink.wait_delivered(acked.len() as u64, SETTLE).await;
    let arrived = sink.first_delivered();
    let (mut from_ack, mut from_send) = (report::histogram(), report::histogram());
    let mut lost = 0u64;
    for (id, (intended, ack)) in &acked {
        match arrived.get(id) {
            Some(&at) if *intended >= measure_from => {
                report::record(&mut from_ack, at.saturating_duration_since(*ack));
                report::record(&mut from_send, at.saturating_duration_since(*intended));
            }
            Some(_) => {}
            None => lost += 1,
        }
    }
    Delivered {
        acknowledged: acked.len(),
        from_ack,
        from_send,
        lost,
    }
}
