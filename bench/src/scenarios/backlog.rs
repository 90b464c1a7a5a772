//! `backlog`: the endpoint is down (nothing listens on its port) while N
//! events arrive over gRPC PublishBatch; then the sink comes up on that port.
//! Reports the intake rate while the endpoint is down, the drain rate once it
//! is up (deliveries from the sink's first request to its last, since the
//! first retries fall due up to 5 s after it comes up), and the daemon's resident memory throughout (sampled `VmRSS` and
//! the kernel's peak, `VmHWM`).
//!
//! With `ordering_keys` N above 0 the endpoint has `ordering_key: "{{
//! event.payload.key }}"` and event number `n` carries `"key": "k<n mod N>"`:
//! each key's deliveries then go one at a time, so the drain measures ordered
//! delivery. The sink's arrivals are checked against publish order per key.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{cpu_per, out_of_order, run_prefix, Common};
use crate::{
    daemon::{rss_kib, CpuClock, Daemon, DaemonSpec},
    load::{self, GrpcWorker, Plan},
    report::{self, Table},
    sink::{Sink, SinkConfig},
};

const DRAIN_LIMIT: Duration = Duration::from_secs(600);

pub struct BacklogArgs {
    pub memory_queue: usize,
    pub events: u64,
    pub batch: usize,
    pub concurrency: usize,
    pub payload: usize,
    /// Ordering keys the events are spread over; 0: unordered.
    pub ordering_keys: u64,
}

pub async fn run(common: &Common, args: &BacklogArgs) -> anyhow::Result<()> {
    // A port with nothing on it yet; the sink takes it later.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let url = format!("http://{addr}/hook");
    // 20 retries (the most an endpoint may have) 5 s apart: while the
    // endpoint is down every attempt fails fast (connection refused) and is
    // recorded; once it is up, everything is due again within 5 s.
    let schedule = vec!["5s"; 20];
    let mut spec = DaemonSpec {
        memory_queue: args.memory_queue,
        ..DaemonSpec::default()
    };
    if args.ordering_keys > 0 {
        spec = spec.ordered_by_payload_key();
    }
    let spec = spec.route("down", &url, &["backlog.*"], &schedule);
    let ordering = if args.ordering_keys > 0 {
        format!(
            "ordered, {} keys",
            report::thousands(args.ordering_keys as f64)
        )
    } else {
        "unordered".to_string()
    };
    let daemon = Daemon::start(&common.hookyard, &common.storage, &spec).await?;

    let sampler = daemon.rss_sampler();

    let prefix = run_prefix("backlog");
    let channel = load::grpc_channel(daemon.listen)?;
    let workers = (0..args.concurrency)
        .map(|_| {
            GrpcWorker::new(
                channel.clone(),
                "backlog.item",
                &prefix,
                args.batch,
                args.payload,
            )
            .with_keys(args.ordering_keys)
        })
        .collect();
    let requests = args.events.div_ceil(args.batch as u64);
    let plan = Plan {
        workers: args.concurrency,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(3600),
        rate: None,
        limit: Some(requests),
    };
    let outcome = load::run(plan, workers).await;
    let intake_rate = report::rate(outcome.events, outcome.elapsed);
    let rss_down = sampler.peak_kib();
    println!(
        "backlog: {} events acknowledged in {:.1} s ({} errors); peak RSS so far {} MiB; starting the sink",
        outcome.events,
        outcome.elapsed.as_secs_f64(),
        outcome.errors,
        rss_down / 1024
    );

    let cpu = daemon.cpu_clock();
    let pg_cpu = daemon.pg_cpu_clock();
    let cpu_before = cpu.read();
    let pg_cpu_before = pg_cpu.and_then(CpuClock::read);
    let sink = Sink::start_on(addr, SinkConfig::default()).await?;
    let up = Instant::now();
    let mut progress = Vec::new();
    let target = outcome.events;
    let mut complete = false;
    while up.elapsed() < DRAIN_LIMIT {
        if sink.wait_delivered(target, Duration::from_secs(5)).await {
            complete = true;
            break;
        }
        progress.push((up.elapsed().as_secs_f64(), sink.delivered()));
        println!(
            "  {:>5.1} s: {} delivered, RSS {} MiB",
            up.elapsed().as_secs_f64(),
            sink.delivered(),
            rss_kib(daemon.pid).unwrap_or(0) / 1024
        );
    }
    let drain = up.elapsed();
    // Everything the daemon did from the sink's start to the last delivery
    // (nothing else arrives meanwhile), per delivery.
    let cpu_us = cpu_per(cpu_before, cpu.read(), sink.delivered());
    let pg_cpu_us = cpu_per(
        pg_cpu_before,
        pg_cpu.and_then(CpuClock::read),
        sink.delivered(),
    );
    let first = sink.first_arrival().unwrap_or(up);
    let last = sink.last_delivery().unwrap_or(up);
    let busy = last.saturating_duration_since(first);
    let hwm = daemon.memory_kib().map(|m| m.1).unwrap_or(0);
    let peak_rss = sampler.peak_kib().max(hwm);
    let arrived = sink.first_delivered();
    let unique = arrived.len() as u64;
    let misordered = (args.ordering_keys > 0).then(|| {
        out_of_order(
            &arrived,
            &prefix,
            args.batch,
            args.concurrency,
            args.ordering_keys,
        )
    });
    if !complete {
        println!(
            "the drain did not finish within {} s; the daemon's log ends:\n{}",
            DRAIN_LIMIT.as_secs(),
            daemon.log_tail(40)
        );
    }
    daemon.stop().await;
    let drain_rate = report::rate(sink.delivered(), busy);

    let mut table = Table::new(&[
        "events",
        "ordering",
        "intake ev/s (down)",
        "first after s",
        "drain s",
        "drain deliveries/s",
        "peak RSS MiB",
        "unique delivered",
        "requests to sink",
        "cpu us/delivery",
        "pg cpu us/delivery",
    ]);
    table.row(vec![
        outcome.events.to_string(),
        ordering.clone(),
        report::thousands(intake_rate),
        format!("{:.1}", first.saturating_duration_since(up).as_secs_f64()),
        format!("{:.1}", busy.as_secs_f64()),
        report::thousands(drain_rate),
        format!("{:.0}", peak_rss as f64 / 1024.0),
        unique.to_string(),
        sink.requests().to_string(),
        cpu_us.map(|c| format!("{c:.1}")).unwrap_or_default(),
        pg_cpu_us.map_or_else(|| "-".to_string(), |c| format!("{c:.1}")),
    ]);
    println!(
        "\nbacklog on {}: {} events (PublishBatch of {}, {} in flight, {ordering}) while the endpoint is down, then up{}\n{}",
        common.storage.label(),
        args.events,
        args.batch,
        args.concurrency,
        if complete { "" } else { " (drain NOT complete)" },
        table.render()
    );
    if let Some(misordered) = misordered {
        println!(
            "arrivals after a later event with their key (publish order known per load worker): {misordered}"
        );
    }
    report::write_json(
        &common.json,
        &json!({
            "scenario": "backlog",
            "events": outcome.events,
            "ordering_keys": args.ordering_keys,
            "out_of_order": misordered,
            "publish_errors": outcome.errors,
            "intake_events_per_s": intake_rate,
            "up_to_all_delivered_s": drain.as_secs_f64(),
            "first_delivery_after_up_s": first.saturating_duration_since(up).as_secs_f64(),
            "first_to_last_delivery_s": busy.as_secs_f64(),
            "drain_deliveries_per_s": drain_rate,
            "complete": complete,
            "unique_delivered": unique,
            "sink_requests": sink.requests(),
            "peak_rss_kib": peak_rss,
            "drain_cpu_us_per_delivery": cpu_us,
            "drain_pg_cpu_us_per_delivery": pg_cpu_us,
            "storage": common.storage.label(),
            "peak_rss_while_down_kib": rss_down,
            "progress": progress,
        }),
    )?;
    println!("wrote {}", common.json.display());
    Ok(())
}
