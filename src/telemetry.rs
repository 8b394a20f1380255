//! Logs (tracing: pretty for people, JSON for pipelines) and Prometheus metrics.

use std::sync::OnceLock;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, LogSettings};

/// Installs the global log subscriber. `RUST_LOG` overrides `log.level`.
pub fn init_logging(settings: &LogSettings) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match settings.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
}

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How a family is exposed.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric family this node exposes: name, kind, unit, help, and the label sets that
/// exist from the start (each exposed at zero before anything happened, so dashboards and
/// alerts see the family on a fresh node; none for a family only one store has).
/// Labels of one series: (name, value) pairs.
type Labels = &'static [(&'static str, &'static str)];

const FAMILIES: &[(&str, Kind, Unit, &str, &[Labels])] = &[
    (
        "chatd_connections",
        Kind::Gauge,
        Unit::Count,
        "Live WebSocket connections on this node.",
        &[&[]],
    ),
    (
        "chatd_connects_total",
        Kind::Counter,
        Unit::Count,
        "WebSocket connections that went live.",
        &[&[]],
    ),
    (
        "chatd_disconnects_total",
        Kind::Counter,
        Unit::Count,
        "WebSocket connections that ended, by close code (1006: dropped).",
        &[&[("code", "1000")]],
    ),
    (
        "chatd_refused_connections_total",
        Kind::Counter,
        Unit::Count,
        "WebSocket connections refused over the connection caps.",
        &[&[]],
    ),
    (
        "chatd_frames_in_total",
        Kind::Counter,
        Unit::Count,
        "Client frames handled, by type.",
        &[&[("type", "send")], &[("type", "read")]],
    ),
    (
        "chatd_frames_out_total",
        Kind::Counter,
        Unit::Count,
        "Frames written to WebSockets, by type.",
        &[&[("type", "message")], &[("type", "ack")]],
    ),
    (
        "chatd_rate_limited_total",
        Kind::Counter,
        Unit::Count,
        "Frames and requests refused by a rate limit, by which one.",
        &[
            &[("kind", "frames")],
            &[("kind", "sends")],
            &[("kind", "reads")],
            &[("kind", "resumes")],
        ],
    ),
    (
        "chatd_messages_stored_total",
        Kind::Counter,
        Unit::Count,
        "Messages stored (duplicate: a retry of a stored one).",
        &[&[("duplicate", "false")], &[("duplicate", "true")]],
    ),
    (
        "chatd_deliveries_total",
        Kind::Counter,
        Unit::Count,
        "Live messages handed to local connections.",
        &[&[]],
    ),
    (
        "chatd_slow_consumer_closes_total",
        Kind::Counter,
        Unit::Count,
        "Connections closed because their outbound queue filled up.",
        &[&[]],
    ),
    (
        "chatd_gap_fills_total",
        Kind::Counter,
        Unit::Count,
        "Store reads to fill a gap in a room's live messages.",
        &[&[]],
    ),
    (
        "chatd_bus_resyncs_total",
        Kind::Counter,
        Unit::Count,
        "Bus reconnections after which rooms were caught up from the store.",
        &[&[]],
    ),
    (
        "chatd_recent_cache_reads_total",
        Kind::Counter,
        Unit::Count,
        "Resumes and newest pages asked of the recent-message cache, by whether it could answer.",
        &[&[("hit", "true")], &[("hit", "false")]],
    ),
    (
        "chatd_store_timeouts_total",
        Kind::Counter,
        Unit::Count,
        "Store calls abandoned at store.timeout_ms.",
        &[&[]],
    ),
    (
        "chatd_store_calls_total",
        Kind::Counter,
        Unit::Count,
        "Store calls by method (any backend): what a send, a resume or a room list costs.",
        &[&[("call", "append")], &[("call", "history")]],
    ),
    (
        "chatd_http_overloaded_total",
        Kind::Counter,
        Unit::Count,
        "HTTP connections refused over server.max_http_connections.",
        &[&[]],
    ),
    (
        "chatd_presence_announcements_total",
        Kind::Counter,
        Unit::Count,
        "Presence changes this node announced.",
        &[&[]],
    ),
    (
        "chatd_receipts_published_total",
        Kind::Counter,
        Unit::Count,
        "Coalesced receipts this node published.",
        &[&[]],
    ),
    (
        "chatd_typing_events_total",
        Kind::Counter,
        Unit::Count,
        "Typing starts and stops this node passed on to the bus.",
        &[&[]],
    ),
    (
        "chatd_errors_total",
        Kind::Counter,
        Unit::Count,
        "Errors answered to clients (REST and WebSocket), by code.",
        &[
            &[("code", "internal")],
            &[("code", "store_unavailable")],
            &[("code", "bus_unavailable")],
        ],
    ),
    (
        "chatd_mongodb_commands_total",
        Kind::Counter,
        Unit::Count,
        "Commands this node sent to MongoDB, by name (command monitoring): round trips to the store.",
        &[&[("command", "insert")], &[("command", "find")]],
    ),
    (
        "chatd_push_decisions_total",
        Kind::Counter,
        Unit::Count,
        "Push decisions per member of a new message: queued, or why not (online, no_device).",
        &[
            &[("decision", "queued")],
            &[("decision", "online")],
            &[("decision", "no_device")],
        ],
    ),
    (
        "chatd_push_settled_total",
        Kind::Counter,
        Unit::Count,
        "Ledger entries settled by the push sender: sent, collapsed, or why not (read, online, deleted, left, no_device, rejected, refused, gave_up).",
        &[&[("outcome", "sent")], &[("outcome", "gave_up")]],
    ),
    (
        "chatd_push_requests_total",
        Kind::Counter,
        Unit::Count,
        "Notifications handed to a push service or the gateway, per device, by kind and result (sent, rejected, retry, refused).",
        &[
            &[("kind", "gateway"), ("result", "sent")],
            &[("kind", "gateway"), ("result", "retry")],
            &[("kind", "webpush"), ("result", "sent")],
            &[("kind", "webpush"), ("result", "retry")],
        ],
    ),
    (
        "chatd_push_retries_total",
        Kind::Counter,
        Unit::Count,
        "Push jobs rescheduled after a failed attempt.",
        &[&[]],
    ),
    (
        "chatd_push_swept_total",
        Kind::Counter,
        Unit::Count,
        "Messages whose push decision another node left undone, decided by this one.",
        &[&[]],
    ),
    (
        "chatd_push_queue_full_total",
        Kind::Counter,
        Unit::Count,
        "Push work dropped because this node's queue (push.queue) was full (messages are decided by a later sweep).",
        &[&[]],
    ),
    (
        "chatd_store_append_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to store a message (sends pipelined on one connection: their batch, timed once).",
        &[&[]],
    ),
    (
        "chatd_sqlite_wal_frames",
        Kind::Gauge,
        Unit::Count,
        "Frames (a 4 KiB page each) in the SQLite write-ahead log at the last checkpoint; past 4,096 the writer makes it start over (SQLite store only).",
        &[],
    ),
    (
        "chatd_bus_publish_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "Time to publish a stored message on the bus.",
        &[&[]],
    ),
    (
        "chatd_delivery_seconds",
        Kind::Histogram,
        Unit::Seconds,
        "From a message's publish (on its storing node's clock) to its hand-off to this node's connections.",
        &[&[]],
    ),
    (
        "chatd_resume_replayed_messages",
        Kind::Histogram,
        Unit::Count,
        "Messages replayed per room by a resume.",
        &[&[]],
    ),
    (
        "chatd_process_resident_memory_bytes",
        Kind::Gauge,
        Unit::Bytes,
        "Resident memory of the process.",
        &[&[]],
    ),
    (
        "chatd_process_open_fds",
        Kind::Gauge,
        Unit::Count,
        "Open file descriptors of the process.",
        &[&[]],
    ),
];

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const COUNT_BUCKETS: &[f64] = &[0.0, 1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0];

/// Installs the process-wide metrics recorder (once; several nodes in one test process share
/// it) and registers every family at zero.
pub fn init_metrics() {
    METRICS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("chatd_resume_replayed_messages".into()),
                    COUNT_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let installed = metrics::set_global_recorder(recorder).ok().map(|()| handle);
        for (name, kind, unit, help, label_sets) in FAMILIES {
            let name = *name;
            match kind {
                Kind::Counter => metrics::describe_counter!(name, *unit, *help),
                Kind::Gauge => metrics::describe_gauge!(name, *unit, *help),
                Kind::Histogram => metrics::describe_histogram!(name, *unit, *help),
            }
            for labels in label_sets.iter() {
                let labels: Vec<metrics::Label> = labels
                    .iter()
                    .map(|(k, v)| metrics::Label::new(*k, *v))
                    .collect();
                match kind {
                    Kind::Counter => metrics::counter!(name, labels).increment(0),
                    Kind::Gauge => metrics::gauge!(name, labels).increment(0.0),
                    // Registering it is enough: its buckets show at zero.
                    Kind::Histogram => {
                        let _ = metrics::histogram!(name, labels);
                    }
                }
            }
        }
        installed
    });
}

/// Counts one frame written of type `FRAME_TYPES[index]`. The writer counts every frame of
/// every connection (the fan-out path), so the counters are looked up once, not per frame.
pub fn count_frame_out(index: usize) {
    static COUNTERS: OnceLock<Vec<metrics::Counter>> = OnceLock::new();
    // Made at the first frame, after `init_metrics` installed the recorder.
    let counters = COUNTERS.get_or_init(|| {
        crate::protocol::FRAME_TYPES
            .iter()
            .map(|kind| metrics::counter!("chatd_frames_out_total", "type" => *kind))
            .collect()
    });
    if let Some(counter) = counters.get(index) {
        counter.increment(1);
    }
}

/// The Prometheus text exposition of every metric, with the process gauges read now.
pub fn render_metrics() -> String {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok());
        if let Some(kib) = rss_kib {
            metrics::gauge!("chatd_process_resident_memory_bytes").set(kib * 1024.0);
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metrics::gauge!("chatd_process_open_fds").set(fds.count() as f64);
    }
    METRICS
        .get()
        .and_then(Option::as_ref)
        .map(PrometheusHandle::render)
        .unwrap_or_default()
}

/// One hop of a message, as a JSON log line of `target: chatd::trace` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub at: String,
    pub node: String,
    pub hop: String,
    pub trace: String,
    /// What else the line says (recipients, where a delivered message came from...).
    pub detail: String,
}

/// The hops of message `seq` of `room` in JSON log lines (any order, any nodes mixed, other
/// lines skipped), by time: what `chatd trace` prints.
pub fn message_path<'a>(
    lines: impl IntoIterator<Item = &'a str>,
    room: &str,
    seq: u64,
) -> Vec<Hop> {
    let text = |v: &serde_json::Value, key: &str| match &v[key] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut hops: Vec<Hop> = lines
        .into_iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line.trim()).ok())
        .filter(|v| v["target"] == "chatd::trace" && v["room"] == room && v["seq"] == seq)
        .map(|v| {
            let mut detail = Vec::new();
            for key in ["recipients", "from", "duplicate"] {
                if !v[key].is_null() {
                    detail.push(format!("{key}={}", text(&v, key)));
                }
            }
            Hop {
                at: text(&v, "timestamp"),
                node: text(&v, "node"),
                hop: text(&v, "hop"),
                trace: text(&v, "trace"),
                detail: detail.join(" "),
            }
        })
        .collect();
    hops.sort_by(|a, b| a.at.cmp(&b.at));
    hops
}
