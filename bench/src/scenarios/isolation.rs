//! `isolation`: one endpoint's trouble must not delay another's. Endpoint
//! `dead` is a loopback port where nothing listens (every connection is
//! refused); endpoint `healthy` is the sink. First `--backlog` events routed
//! to `dead` arrive over gRPC PublishBatch, all due at once and none
//! deliverable; then events routed to `healthy` are published over HTTP at a
//! fixed rate (open loop, as in `end-to-end`) while that backlog is due, and
//! their latency until the sink receives them is measured. A baseline runs the
//! same healthy phase first on a fresh daemon without the backlog, so the
//! table shows what the dead endpoint's backlog costs the healthy one.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{
    cpu_per,
    end_to_end::{self, Delivered},
    run_prefix, Common,
};
use crate::{
    daemon::{CpuClock, Daemon, DaemonSpec},
    load::{self, GrpcWorker, HttpWorker, Plan},
    report::{self, Latency, Table, LATENCY_HEADERS},
    sink::{Sink, SinkConfig},
};

/// Payload of each backlog event, as in `backlog`.
const BACKLOG_PAYLOAD: usize = 256;
/// A delivery to the healthy endpoint later than this from its intended send
/// counts as late.
const LATE: Duration = Duration::from_secs(1);

pub struct IsolationArgs {
    /// Events routed to `dead` before the healthy phase (0: none).
    pub backlog: u64,
    pub batch: usize,
    /// PublishBatch calls in flight while the backlog arrives.
    pub concurrency: usize,
    /// Healthy events per second.
    pub rate: f64,
    pub connections: usize,
    pub payload: usize,
    /// Run the healthy phase on a fresh daemon without the backlog first.
    pub baseline: bool,
}

/// The dead endpoint's backlog as it arrived.
struct BacklogIntake {
    events: u64,
    errors: u64,
    elapsed: Duration,
}

/// One daemon's run: the backlog (if any), then the healthy phase.
struct Trial {
    backlog: u64,
    intake: Option<BacklogIntake>,
    published: u64,
    publish_errors: u64,
    first_error: Option<String>,
    send_to_ack: Latency,
    delivered: Delivered,
    /// Sampled `VmRSS` peak once the backlog was in, and the whole run's
    /// peak (with the kernel's `VmHWM`).
    rss_after_backlog_kib: u64,
    peak_rss_kib: u64,
    /// Daemon CPU time per healthy event, µs.
    cpu_us: Option<f64>,
    /// PostgreSQL's, when the daemon stores in the harness's own cluster.
    pg_cpu_us: Option<f64>,
}

pub async fn run(common: &Common, args: &IsolationArgs) -> anyhow::Result<()> {
    let mut trials = Vec::new();
    if args.baseline && args.backlog > 0 {
        trials.push(trial(common, args, 0).await?);
    }
    trials.push(trial(common, args, args.backlog).await?);

    let mut headers = vec!["dead backlog", "measure"];
    headers.extend(LATENCY_HEADERS);
    headers.extend([
        "count",
        "lost",
        "over 1 s",
        "peak RSS MiB",
        "cpu us/ev",
        "pg cpu us/ev",
    ]);
    let mut table = Table::new(&headers);
    for trial in &trials {
        for row in rows(trial) {
            table.row(row);
        }
    }
    println!(
        "\nisolation on {}: `healthy` at {} events/s (HTTP open loop, {} connections, {} B) for {:?} after {:?} warm-up, while `dead` (connections refused) has the backlog due\n{}",
        common.storage.label(),
        args.rate,
        args.connections,
        args.payload,
        common.duration,
        common.warmup,
        table.render()
    );
    for trial in &trials {
        if let Some(error) = &trial.first_error {
            println!(
                "backlog {}: first publish error of {}: {error}",
                trial.backlog, trial.publish_errors
            );
        }
    }
    report::write_json(
        &common.json,
        &json!({
            "scenario": "isolation",
            "rate": args.rate,
            "connections": args.connections,
            "payload": args.payload,
            "duration_s": common.duration.as_secs_f64(),
            "warmup_s": common.warmup.as_secs_f64(),
            "backlog_batch": args.batch,
            "backlog_concurrency": args.concurrency,
            "runs": trials.iter().map(trial_json).collect::<Vec<_>>(),
        }),
    )?;
    println!("wrote {}", common.json.display());
    Ok(())
}

async fn trial(common: &Common, args: &IsolationArgs, backlog: u64) -> anyhow::Result<Trial> {
    let sink = Sink::start(SinkConfig::default()).await?;
    // Bound and released at once: connecting to it is refused.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // As in `backlog`: the most retries an endpoint may have, so the backlog
    // stays due for the whole run.
    let dead_schedule = vec!["5s"; 20];
    let spec = DaemonSpec::default()
        .route(
            "dead",
            &format!("http://{dead}/hook"),
            &["dead.*"],
            &dead_schedule,
        )
        .route(
            "healthy",
            &sink.url("/hook"),
            &["healthy.*"],
            &["0s", "1s", "1s"],
        );
    let daemon = Daemon::start(&common.hookyard, &common.storage, &spec).await?;
    let sampler = daemon.rss_sampler();

    let intake = if backlog > 0 {
        Some(publish_backlog(&daemon, args, backlog).await?)
    } else {
        None
    };
    let rss_after_backlog_kib = sampler.peak_kib();

    let prefix = run_prefix("isolation");
    let workers = (0..args.connections)
        .map(|_| {
            HttpWorker::new(daemon.listen, "healthy.item", &prefix, args.payload).record_acks()
        })
        .collect();
    let plan = Plan {
        workers: args.connections,
        warmup: common.warmup,
        duration: common.duration,
        rate: Some(args.rate),
        limit: None,
    };
    let cpu = daemon.cpu_clock();
    let pg_cpu = daemon.pg_cpu_clock();
    let cpu_before = cpu.read();
    let pg_cpu_before = pg_cpu.and_then(CpuClock::read);
    let outcome = load::run(plan, workers).await;
    let delivered = end_to_end::delivered(&outcome, &sink, &prefix, args.rate, common.warmup).await;
    // Intake and delivery of the healthy phase (warm-up included), plus
    // whatever the dead endpoint's backlog costs meanwhile, per event.
    let cpu_us = cpu_per(cpu_before, cpu.read(), delivered.acknowledged as u64);
    let pg_cpu_us = cpu_per(
        pg_cpu_before,
        pg_cpu.and_then(CpuClock::read),
        delivered.acknowledged as u64,
    );
    let hwm = daemon.memory_kib().map(|m| m.1).unwrap_or(0);
    let peak_rss_kib = sampler.peak_kib().max(hwm);
    daemon.stop().await;
    Ok(Trial {
        backlog,
        intake,
        published: outcome.requests,
        publish_errors: outcome.errors,
        first_error: outcome.first_error.clone(),
        send_to_ack: Latency::of(&outcome.latency),
        delivered,
        rss_after_backlog_kib,
        peak_rss_kib,
        cpu_us,
        pg_cpu_us,
    })
}

/// Publishes `events` routed to `dead`, closed loop, and reports the rate.
async fn publish_backlog(
    daemon: &Daemon,
    args: &IsolationArgs,
    events: u64,
) -> anyhow::Result<BacklogIntake> {
    let prefix = run_prefix("isolation-dead");
    let channel = load::grpc_channel(daemon.listen)?;
    let workers = (0..args.concurrency)
        .map(|_| {
            GrpcWorker::new(
                channel.clone(),
                "dead.item",
                &prefix,
                args.batch,
                BACKLOG_PAYLOAD,
            )
        })
        .collect();
    let plan = Plan {
        workers: args.concurrency,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: None,
        limit: Some(events.div_ceil(args.batch as u64)),
    };
    let started = Instant::now();
    let outcome = load::run(plan, workers).await;
    let intake = BacklogIntake {
        events: outcome.events,
        errors: outcome.errors,
        elapsed: outcome.elapsed,
    };
    println!(
        "isolation: {} events to `dead` acknowledged in {:.1} s ({} ev/s, {} errors); RSS {} MiB; publishing to `healthy`",
        intake.events,
        started.elapsed().as_secs_f64(),
        report::thousands(report::rate(intake.events, intake.elapsed)),
        intake.errors,
        daemon.memory_kib().map(|m| m.0).unwrap_or(0) / 1024
    );
    Ok(intake)
}

/// The table's rows for one trial: intake, 202 → sink, send → sink.
fn rows(trial: &Trial) -> Vec<Vec<String>> {
    let lost = trial.delivered.lost;
    let late = late(&trial.delivered);
    let measures = [
        (
            "send→202",
            trial.send_to_ack,
            trial.publish_errors.to_string(),
            String::new(),
        ),
        (
            "202→sink",
            Latency::of(&trial.delivered.from_ack),
            lost.to_string(),
            String::new(),
        ),
        (
            "send→sink",
            Latency::of(&trial.delivered.from_send),
            lost.to_string(),
            late.to_string(),
        ),
    ];
    measures
        .into_iter()
        .enumerate()
        .map(|(k, (label, latency, bad, late))| {
            let mut row = vec![report::thousands(trial.backlog as f64), label.to_string()];
            row.extend(latency.cells());
            row.push(latency.count.to_string());
            row.push(bad);
            row.push(late);
            if k == 0 {
                row.push(format!("{:.0}", trial.peak_rss_kib as f64 / 1024.0));
                row.push(trial.cpu_us.map(|c| format!("{c:.1}")).unwrap_or_default());
                row.push(
                    trial
                        .pg_cpu_us
                        .map_or_else(|| "-".to_string(), |c| format!("{c:.1}")),
                );
            }
            row
        })
        .collect()
}

/// Measured healthy deliveries later than `LATE` from their intended send.
fn late(delivered: &Delivered) -> u64 {
    let from = u64::try_from(LATE.as_micros()).unwrap_or(u64::MAX);
    let hist = &delivered.from_send;
    if hist.is_empty() || hist.max() < from {
        return 0;
    }
    hist.count_between(from, hist.max())
}

fn trial_json(trial: &Trial) -> Value {
    json!({
        "backlog": trial.backlog,
        "backlog_intake": trial.intake.as_ref().map(|i| json!({
            "events": i.events,
            "errors": i.errors,
            "elapsed_s": i.elapsed.as_secs_f64(),
            "events_per_s": report::rate(i.events, i.elapsed),
        })),
        "published": trial.published,
        "publish_errors": trial.publish_errors,
        "acknowledged": trial.delivered.acknowledged,
        "lost": trial.delivered.lost,
        "late_over_1s": late(&trial.delivered),
        "intake": trial.send_to_ack,
        "e2e_from_ack": Latency::of(&trial.delivered.from_ack),
        "e2e_from_send": Latency::of(&trial.delivered.from_send),
        "rss_after_backlog_kib": trial.rss_after_backlog_kib,
        "peak_rss_kib": trial.peak_rss_kib,
        "daemon_cpu_us_per_event": trial.cpu_us,
        "pg_cpu_us_per_event": trial.pg_cpu_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivered(from_send_ms: &[u64]) -> Delivered {
        let mut from_send = report::histogram();
        for &ms in from_send_ms {
            report::record(&mut from_send, Duration::from_millis(ms));
        }
        Delivered {
            acknowledged: from_send_ms.len(),
            from_ack: report::histogram(),
            from_send,
            lost: 0,
        }
    }

    #[test]
    fn late_counts_deliveries_from_one_second_on() {
        assert_eq!(late(&delivered(&[])), 0);
        assert_eq!(late(&delivered(&[2, 900, 999])), 0);
        assert_eq!(late(&delivered(&[2, 1000, 1500, 60_000])), 3);
    }

    #[test]
    fn cpu_per_divides_the_time_spent_between_readings() {
        let at = |ms| Some(Duration::from_millis(ms));
        assert_eq!(cpu_per(at(100), at(300), 1000), Some(200.0));
        assert_eq!(cpu_per(at(100), at(300), 0), None);
        assert_eq!(cpu_per(None, at(300), 10), None);
        // A clock read backwards (the process was replaced) gives nothing.
        assert_eq!(cpu_per(at(300), at(100), 10), None);
    }
}
