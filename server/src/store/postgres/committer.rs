//! The PostgreSQL committer: one transaction per group commit, as on SQLite.
//! A batch costs a fixed handful of round trips however many events it
//! holds: ids are taken from the sequences first (one statement each for
//! events and deliveries), then events, deliveries, attempts and delivery
//! updates are each written by one statement over arrays (`UNNEST`). Flow
//! runs, rarer, are written a statement at a time (`runs`).
//!
//! `COMMIT` returns once the commit is in the server's log on disk
//! (`synchronous_commit = on`, set on every connection), so the writer's
//! syncer has nothing left to do for this backend.

use std::{borrow::Cow, collections::HashMap, sync::Arc};

use sqlx::{PgConnection, PgPool};

use super::runs;
use crate::{
    model::{now_ms, DueDelivery, EventEnvelope, NewEvent, Published, PARKED_MS},
    store::{
        rows::to_json,
        writer::{Done, FlowAnswer, FlowOp, Rejection, Settled},
        Error, Result,
    },
};

/// PostgreSQL's text cannot hold U+0000, which text from outside (a
/// receiver's response body, an error message) may: it is dropped.
pub(super) fn no_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', ""))
    } else {
        Cow::Borrowed(text)
    }
}

/// The committer's own connection (a pool of one, which reconnects by
/// itself after PostgreSQL restarts), so reads never wait behind commits.
#[derive(Clone)]
pub struct Committer {
    pool: PgPool,
}

impl Committer {
    pub(super) async fn connect(url: &str) -> Result<Committer> {
        Ok(Committer {
            pool: super::pool(url, 1).await?,
        })
    }

    /// Commits one group: every event with its deliveries and flow runs,
    /// every attempt result and every flow op, in a single transaction.
    pub(in crate::store) async fn commit(
        &self,
        publishes: &[&[NewEvent]],
        settles: &[Settled],
        flow_ops: &[FlowOp],
    ) -> Result<Done> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let mut done = Done {
            outcomes: Vec::with_capacity(publishes.len()),
            due: Vec::new(),
            flow_answers: Vec::with_capacity(flow_ops.len()),
            runs: Vec::new(),
        };
        insert_events(&mut tx, publishes, now, &mut done).await?;
        record_settled(&mut tx, settles, now).await?;
        for op in flow_ops {
            let answer = apply_flow_op(&mut tx, op, now, &mut done.runs).await;
            done.flow_answers.push(match answer {
                Err(e @ (Error::Unavailable(_) | Error::Fatal(_))) => return Err(e),
                Err(refused) => FlowAnswer::Refused(refused),
                Ok(answer) => answer,
            });
        }
        if !done.runs.is_empty() {
            // Every node's flow engine looks at the due runs again.
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(super::cluster::RUNS_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await.map_err(commit_outcome_unknown)?;
        Ok(done)
    }
}

/// `COMMIT` failed: the connection may have dropped after the server
/// committed. Answering 503 is safe (a retry with the same id is a
/// duplicate), but deliveries that may exist unannounced would wait until
/// the dispatcher next reads storage: fail-stop, so the restart reads back
/// exactly what was stored, as on SQLite after a failed sync.
fn commit_outcome_unknown(e: sqlx::Error) -> Error {
    Error::Fatal(format!(
        "the outcome of a commit is unknown ({e}); restarting to read back what was stored"
    ))
}

/// `n` fresh values of the sequence behind `table.column`, in order.
async fn take_ids(tx: &mut PgConnection, table: &str, column: &str, n: usize) -> Result<Vec<i64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(
        "SELECT nextval(pg_get_serial_sequence($1, $2)) FROM generate_series(1, $3)",
    )
    .bind(table)
    .bind(column)
    .bind(n as i64)
    .fetch_all(&mut *tx)
    .await?;
    ids.sort_unstable();
    Ok(ids)
}

const INSERT_EVENTS: &str = "INSERT INTO events (seq, id, name, source, tenant_id, time_ms, \
    payload, attributes, body_hash, matched, received_ms) \
    SELECT seq, id, name, source, tenant_id, time_ms, payload, attributes, body_hash, matched, $11 \
    FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[], \
    $7::text[], $8::text[], $9::bytea[], $10::int8[]) \
    AS u(seq, id, name, source, tenant_id, time_ms, payload, attributes, body_hash, matched) \
    ON CONFLICT (id) DO NOTHING RETURNING seq";

const INSERT_DELIVERIES: &str = "INSERT INTO deliveries (id, event_seq, subscription_id, \
    endpoint_id, status, attempts, next_attempt_ms, created_ms, updated_ms, also_subscriptions, \
    ordering_key) \
    SELECT id, event_seq, subscription_id, endpoint_id, 'pending', 0, $5, $5, $5, also, okey \
    FROM UNNEST($1::int8[], $2::int8[], $3::text[], $4::text[], $6::text[], $7::text[]) \
    AS u(id, event_seq, subscription_id, endpoint_id, also, okey)";

/// Inserts every publish's events, each with its deliveries (due now, added
/// to `done.due`) and its flow-run starts and cancels. An id already taken,
/// earlier or by an event before it in this batch, is answered as a
/// duplicate or a conflict and routes nothing.
async fn insert_events(
    tx: &mut PgConnection,
    publishes: &[&[NewEvent]],
    now: i64,
    done: &mut Done,
) -> Result<()> {
    let events: Vec<&NewEvent> = publishes.iter().flat_map(|p| p.iter()).collect();
    if events.is_empty() {
        done.outcomes.extend(publishes.iter().map(|_| Vec::new()));
        return Ok(());
    }
    let seqs = take_ids(tx, "events", "seq", events.len()).await?;
    let inserted: Vec<i64> = sqlx::query_scalar(INSERT_EVENTS)
        .bind(&seqs)
        .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.name.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.source.as_str()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.tenant_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.time_ms).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.payload.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| attributes_json(e).into_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            events
                .iter()
                .map(|e| e.body_hash.to_vec())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| matched(e) as i64).collect::<Vec<_>>())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    let inserted: std::collections::HashSet<i64> = inserted.into_iter().collect();
    let existing = existing_events(tx, &events, &seqs, &inserted).await?;
    insert_deliveries(tx, &events, &seqs, &inserted, now, done).await?;

    let mut index = 0;
    for publish in publishes {
        let mut outcome = Vec::with_capacity(publish.len());
        for event in publish.iter() {
            let seq = seqs[index];
            index += 1;
            if !inserted.contains(&seq) {
                outcome.push(existing_outcome(&existing, event)?);
                continue;
            }
            for start in &event.flow_starts {
                runs::start_run(tx, start, now, &mut done.runs).await?;
            }
            for cancel in &event.cancels {
                runs::cancel_by_key(tx, cancel, now, &mut done.runs).await?;
            }
            outcome.push(Ok(Published {
                seq: seq as u64,
                duplicate: false,
                matched: matched(event),
            }));
        }
        done.outcomes.push(outcome);
    }
    Ok(())
}

/// The stored seq and body hash of every event whose id was already taken.
async fn existing_events(
    tx: &mut PgConnection,
    events: &[&NewEvent],
    seqs: &[i64],
    inserted: &std::collections::HashSet<i64>,
) -> Result<HashMap<String, (i64, Vec<u8>)>> {
    let taken: Vec<&str> = events
        .iter()
        .zip(seqs)
        .filter(|(_, seq)| !inserted.contains(seq))
        .map(|(e, _)| e.id.as_str())
        .collect();
    if taken.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, i64, Vec<u8>)> =
        sqlx::query_as("SELECT id, seq, body_hash FROM events WHERE id = ANY($1)")
            .bind(&taken)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, seq, hash)| (id, (seq, hash)))
        .collect())
}

/// The id is taken: the same body is a duplicate (answered, not routed
/// again), a different body is a conflict.
fn existing_outcome(
    existing: &HashMap<String, (i64, Vec<u8>)>,
    e: &NewEvent,
) -> Result<Result<Published, Rejection>> {
    let (seq, hash) = existing
        .get(&e.id)
        .ok_or_else(|| Error::Unavailable(format!("event `{}` vanished during a commit", e.id)))?;
    Ok(if hash[..] == e.body_hash[..] {
        Ok(Published {
            seq: *seq as u64,
            duplicate: true,
            matched: 0,
        })
    } else {
        Err(Rejection::Conflict { seq: *seq as u64 })
    })
}

/// Inserts the deliveries of the events that were inserted, due now.
async fn insert_deliveries(
    tx: &mut PgConnection,
    events: &[&NewEvent],
    seqs: &[i64],
    inserted: &std::collections::HashSet<i64>,
    now: i64,
    done: &mut Done,
) -> Result<()> {
    let routed: Vec<(&NewEvent, i64)> = events
        .iter()
        .zip(seqs)
        .filter(|(e, seq)| inserted.contains(seq) && !e.routes.is_empty())
        .map(|(e, seq)| (*e, *seq))
        .collect();
    let count: usize = routed.iter().map(|(e, _)| e.routes.len()).sum();
    if count == 0 {
        return Ok(());
    }
    let ids = take_ids(tx, "deliveries", "id", count).await?;
    let mut event_seqs = Vec::with_capacity(count);
    let mut subscriptions = Vec::with_capacity(count);
    let mut endpoints = Vec::with_capacity(count);
    let mut also = Vec::with_capacity(count);
    let mut keys = Vec::with_capacity(count);
    let mut ordered = Vec::new();
    let mut ids_left = ids.iter();
    for (event, seq) in &routed {
        let envelope = Arc::new(EventEnvelope {
            seq: *seq as u64,
            id: event.id.clone(),
            name: event.name.clone(),
            source: event.source.clone(),
            tenant_id: event.tenant_id.clone(),
            time_ms: event.time_ms,
            payload: event.payload.clone(),
        });
        for route in &event.routes {
            let id = ids_left
                .next()
                .ok_or_else(|| Error::Unavailable("too few delivery ids were taken".into()))?;
            event_seqs.push(*seq);
            subscriptions.push(&*route.subscription_id);
            endpoints.push(&*route.endpoint_id);
            also.push(super::super::rows::also_json(route));
            keys.push(route.ordering_key.as_deref());
            if let Some(key) = route.ordering_key.as_deref() {
                ordered.push((*id, &*route.endpoint_id, key));
            }
            done.due.push(DueDelivery {
                id: *id as u64,
                subscription_id: route.subscription_id.clone(),
                endpoint_id: route.endpoint_id.clone(),
                attempts: 0,
                due_ms: now,
                event: envelope.clone(),
                ordered: route.ordering_key.is_some(),
            });
        }
    }
    sqlx::query(INSERT_DELIVERIES)
        .bind(&ids)
        .bind(&event_seqs)
        .bind(&subscriptions)
        .bind(&endpoints)
        .bind(now)
        .bind(&also)
        .bind(&keys)
        .execute(&mut *tx)
        .await?;
    let parked = park_behind_keys(tx, &ordered).await?;
    for due in &mut done.due {
        // Handed over as taken, not to be sent: storage makes it due when
        // the one before it with its key finishes.
        if parked.contains(&(due.id as i64)) {
            due.due_ms = PARKED_MS;
        }
    }
    notify_deliveries(tx, endpoints).await
}

/// Tells every node which endpoints got deliveries; PostgreSQL sends the
/// notifications when the transaction commits, and only if it does.
pub(super) async fn notify_deliveries(
    tx: &mut PgConnection,
    mut endpoints: Vec<&str>,
) -> Result<()> {
    endpoints.sort_unstable();
    endpoints.dedup();
    let payloads = super::cluster::hint_payloads(endpoints.into_iter());
    sqlx::query("SELECT pg_notify($1, p) FROM UNNEST($2::text[]) AS u(p)")
        .bind(super::cluster::DELIVERIES_CHANNEL)
        .bind(&payloads)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Most events carry no attributes.
fn attributes_json(e: &NewEvent) -> Cow<'static, str> {
    if e.attributes.is_empty() {
        Cow::Borrowed("{}")
    } else {
        Cow::Owned(to_json(&e.attributes))
    }
}

/// Subscriptions and flows the event was routed to.
fn matched(e: &NewEvent) -> u32 {
    e.matched()
}

/// Replaces an attempt recorded before (an attempt repeated after a crash).
const UPSERT_ATTEMPTS: &str = "INSERT INTO attempts (delivery_id, number, started_ms, \
    duration_ms, status_code, error, response_body, request_headers) \
    SELECT * FROM UNNEST($1::int8[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], \
    $6::text[], $7::text[], $8::text[]) \
    ON CONFLICT (delivery_id, number) DO UPDATE SET started_ms = EXCLUDED.started_ms, \
    duration_ms = EXCLUDED.duration_ms, status_code = EXCLUDED.status_code, \
    error = EXCLUDED.error, response_body = EXCLUDED.response_body, \
    request_headers = EXCLUDED.request_headers";

/// A status code or duration left out (no attempt was made) keeps the last.
const UPDATE_SETTLED_DELIVERIES: &str = "UPDATE deliveries d SET status = u.status, \
    attempts = u.attempts, next_attempt_ms = u.next_attempt_ms, \
    last_status_code = COALESCE(u.status_code, d.last_status_code), last_error = u.last_error, \
    last_duration_ms = COALESCE(u.duration_ms, d.last_duration_ms), updated_ms = $8 \
    FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::text[], \
    $7::int8[], $9::int8[]) \
    AS u(id, status, attempts, next_attempt_ms, status_code, last_error, duration_ms, lease) \
    WHERE d.id = u.id AND (u.lease IS NULL OR EXISTS (SELECT 1 FROM endpoint_leases l \
    WHERE l.endpoint_id = d.endpoint_id AND l.token = u.lease)) \
    RETURNING d.id";

const DISABLE_GONE_ENDPOINT: &str =
    "UPDATE endpoints SET state = 'gone', disabled_reason = 'it answered 410 Gone', \
    version = version + 1, updated_ms = $1 WHERE id = $2 AND state = 'enabled'";

/// Records attempt results: the deliveries' new states, and the attempts
/// of those whose lease still held. When one delivery is settled twice in a
/// batch, the later result stands, as it would row by row.
async fn record_settled(tx: &mut PgConnection, settles: &[Settled], now: i64) -> Result<()> {
    if settles.is_empty() {
        return Ok(());
    }
    let mut last_of: HashMap<u64, usize> = HashMap::with_capacity(settles.len());
    for (i, s) in settles.iter().enumerate() {
        last_of.insert(s.delivery.id, i);
    }
    let latest: Vec<&Settled> = settles
        .iter()
        .enumerate()
        .filter(|(i, s)| last_of.get(&s.delivery.id) == Some(i))
        .map(|(_, s)| s)
        .collect();
    let ids: Vec<i64> = latest.iter().map(|s| s.delivery.id as i64).collect();
    let updated: Vec<i64> = sqlx::query_scalar(UPDATE_SETTLED_DELIVERIES)
        .bind(&ids)
        .bind(latest.iter().map(|s| s.status.as_str()).collect::<Vec<_>>())
        .bind(
            latest
                .iter()
                .map(|s| i64::from(s.delivery.attempts))
                .collect::<Vec<_>>(),
        )
        .bind(latest.iter().map(|s| s.next_attempt_ms).collect::<Vec<_>>())
        .bind(
            latest
                .iter()
                .map(|s| {
                    s.attempt
                        .as_ref()
                        .and_then(|a| a.status_code)
                        .map(i64::from)
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            latest
                .iter()
                .map(|s| s.last_error.as_deref().map(|e| no_nul(e).into_owned()))
                .collect::<Vec<_>>(),
        )
        .bind(
            latest
                .iter()
                .map(|s| s.attempt.as_ref().map(|a| i64::from(a.duration_ms)))
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .bind(latest.iter().map(|s| s.lease).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    let fenced = updated.len() < latest.len();
    let stored: Vec<&Settled> = if fenced {
        let updated: std::collections::HashSet<i64> = updated.into_iter().collect();
        let (kept, late): (Vec<&Settled>, Vec<&Settled>) = latest
            .into_iter()
            .partition(|s| updated.contains(&(s.delivery.id as i64)));
        for s in late {
            tracing::warn!(
                delivery = s.delivery.id,
                endpoint = %s.delivery.endpoint_id,
                "An attempt result came after its endpoint's lease passed to another daemon; it is not stored."
            );
        }
        kept
    } else {
        latest
    };
    record_attempts(tx, &stored).await?;
    promote_next_of_keys(tx, &stored, now).await?;
    for s in stored.iter().filter(|s| s.endpoint_gone) {
        sqlx::query(DISABLE_GONE_ENDPOINT)
            .bind(now)
            .bind(&*s.delivery.endpoint_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Takes the transaction-scoped advisory locks of these ordering keys (in
/// one order, so two transactions never wait on each other in a cycle).
/// Parking a new delivery and promoting the next after one finished both
/// hold their key's lock: on several daemons, a delivery parked behind one
/// finishing at the same moment is seen by that one's promotion.
const LOCK_KEYS: &str = "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT \
    hashtextextended(e || chr(10) || o, 7) AS k FROM UNNEST($1::text[], $2::text[]) AS u(e, o) \
    ORDER BY k) AS keys";

/// Deliveries with an ordering key behind an unfinished one with the same
/// endpoint and key, stored before them or by another transaction, are
/// parked.
const PARK_BEHIND_KEYS: &str = "UPDATE deliveries d SET next_attempt_ms = 9223372036854775807 \
    WHERE d.id = ANY($1) AND EXISTS (SELECT 1 FROM deliveries e \
    WHERE e.endpoint_id = d.endpoint_id AND e.ordering_key = d.ordering_key \
    AND e.status IN ('pending', 'failed') AND (e.id < d.id OR NOT e.id = ANY($1))) \
    RETURNING d.id";

/// After deliveries with ordering keys finished: the earliest unfinished
/// delivery of each of their endpoint and key, if parked, is due now.
const PROMOTE_NEXT: &str = "UPDATE deliveries d SET next_attempt_ms = $2 FROM (SELECT \
    (SELECT p.id FROM deliveries p WHERE p.endpoint_id = x.endpoint_id \
    AND p.ordering_key = x.ordering_key AND p.status IN ('pending', 'failed') \
    ORDER BY p.id LIMIT 1) AS head FROM deliveries x WHERE x.id = ANY($1)) AS h \
    WHERE d.id = h.head AND d.next_attempt_ms = 9223372036854775807";

async fn lock_keys(tx: &mut PgConnection, endpoints: &[&str], keys: &[&str]) -> Result<()> {
    sqlx::query(LOCK_KEYS)
        .bind(endpoints)
        .bind(keys)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Parks the new ordered deliveries that wait behind another with their key;
/// returns their ids.
async fn park_behind_keys(
    tx: &mut PgConnection,
    ordered: &[(i64, &str, &str)],
) -> Result<std::collections::HashSet<i64>> {
    if ordered.is_empty() {
        return Ok(Default::default());
    }
    let endpoints: Vec<&str> = ordered.iter().map(|(_, e, _)| *e).collect();
    let keys: Vec<&str> = ordered.iter().map(|(_, _, k)| *k).collect();
    lock_keys(tx, &endpoints, &keys).await?;
    let ids: Vec<i64> = ordered.iter().map(|(id, _, _)| *id).collect();
    let parked: Vec<i64> = sqlx::query_scalar(PARK_BEHIND_KEYS)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    Ok(parked.into_iter().collect())
}

async fn promote_next_of_keys(tx: &mut PgConnection, stored: &[&Settled], now: i64) -> Result<()> {
    let finished: Vec<i64> = stored
        .iter()
        .filter(|s| s.delivery.ordered && s.status.is_final())
        .map(|s| s.delivery.id as i64)
        .collect();
    if finished.is_empty() {
        return Ok(());
    }
    let keys: Vec<(String, String)> = sqlx::query_as(
        "SELECT endpoint_id, ordering_key FROM deliveries WHERE id = ANY($1) \
         AND ordering_key IS NOT NULL",
    )
    .bind(&finished)
    .fetch_all(&mut *tx)
    .await?;
    let endpoints: Vec<&str> = keys.iter().map(|(e, _)| e.as_str()).collect();
    let names: Vec<&str> = keys.iter().map(|(_, k)| k.as_str()).collect();
    lock_keys(tx, &endpoints, &names).await?;
    sqlx::query(PROMOTE_NEXT)
        .bind(&finished)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn record_attempts(tx: &mut PgConnection, settles: &[&Settled]) -> Result<()> {
    let attempts: Vec<(i64, &crate::model::Attempt)> = settles
        .iter()
        .filter_map(|s| s.attempt.as_ref().map(|a| (s.delivery.id as i64, a)))
        .collect();
    if attempts.is_empty() {
        return Ok(());
    }
    sqlx::query(UPSERT_ATTEMPTS)
        .bind(attempts.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|(_, a)| i64::from(a.number))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| a.started_ms)
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| i64::from(a.duration_ms))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| a.status_code.map(i64::from))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| a.error.as_deref().map(|e| no_nul(e).into_owned()))
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| no_nul(&a.response_body).into_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|(_, a)| to_json(&a.request_headers))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn apply_flow_op(
    tx: &mut PgConnection,
    op: &FlowOp,
    now: i64,
    changed: &mut Vec<crate::model::run::Run>,
) -> Result<FlowAnswer> {
    Ok(match op {
        FlowOp::Start(new, _) => FlowAnswer::Started(runs::start_run(tx, new, now, changed).await?),
        FlowOp::Advance(advance, _) => {
            FlowAnswer::Advanced(runs::advance(tx, advance, now, changed).await?)
        }
        FlowOp::Cancel { run_id, reason, .. } => {
            FlowAnswer::Cancelled(runs::cancel_run(tx, run_id, reason, now, changed).await?)
        }
    })
}
