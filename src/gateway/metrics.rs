//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Two sources: this gateway's own request latencies (a histogram per method, route template and
//! status code, recorded by the [`track`] middleware) and long-poll waiters; and the cluster-wide
//! view in Redis, the same from every gateway: task counters and the task latency histogram
//! (written by the scripts that settle tasks, `store::stats`), queue depth, and the workers and
//! free slots the dispatchers publish (`store::presence`). If Redis does not answer, the local
//! part is still served, with `faas_redis_up 0`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::store::presence::DispatcherPresence;
use crate::store::stats::{Stats, LATENCY_BUCKETS_MS};

/// Upper bounds (seconds) of the request latency histogram.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 120.0,
];

#[derive(Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket of [`HTTP_BUCKETS`], then +Inf.
    counts: [u64; HTTP_BUCKETS.len() + 1],
    sum: f64,
}

/// The gateway's own request metrics.
#[derive(Default)]
pub struct HttpMetrics {
    by_route: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, code: u16, secs: f64) {
        let mut m = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let h = m
            .entry((method.to_string(), route.to_string(), code))
            .or_default();
        let i = HTTP_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(HTTP_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
    }

    fn snapshot(&self) -> BTreeMap<(String, String, u16), Histogram> {
        self.by_route
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Middleware: times every request, labelled by its route template (unknown routes: "other").
pub async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    st.http.record(
        &method,
        &route,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// Prometheus metrics
///
/// This gateway's request latencies and waiters; tasks, queue, workers and slots of the cluster.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain")))]
pub async fn metrics(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let cluster = match (st.store.stats().await, st.store.presence().await) {
        (Ok(stats), Ok(presence)) => Some((stats, presence)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "metrics: Redis did not answer");
            None
        }
    };
    let body = render(
        &st.http.snapshot(),
        st.waiters.count(),
        st.waiters.max(),
        cluster.as_ref().map(|(s, p)| (s, p.as_slice())),
    );
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

fn render(
    http: &BTreeMap<(String, String, u16), Histogram>,
    waiters: usize,
    max_waiters: usize,
    cluster: Option<(&Stats, &[DispatcherPresence])>,
) -> String {
    let mut o = String::new();
    header(
        &mut o,
        "faas_http_request_duration_seconds",
        "histogram",
        "Time this gateway took to answer HTTP requests (long-polls include their wait).",
    );
    for ((method, route, code), h) in http {
        let labels = format!(
            "method=\"{}\",route=\"{}\",code=\"{code}\"",
            esc(method),
            esc(route)
        );
        let mut cum = 0;
        for (i, b) in HTTP_BUCKETS.iter().enumerate() {
            cum += h.counts[i];
            let _ = writeln!(
                o,
                "faas_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {cum}"
            );
        }
        cum += h.counts[HTTP_BUCKETS.len()];
        let _ = writeln!(
            o,
            "faas_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            o,
            "faas_http_request_duration_seconds_sum{{{labels}}} {}",
            h.sum
        );
        let _ = writeln!(
            o,
            "faas_http_request_duration_seconds_count{{{labels}}} {cum}"
        );
    }
    header(
        &mut o,
        "faas_waiters",
        "gauge",
        "Task ids this gateway's long-polls wait for.",
    );
    let _ = writeln!(o, "faas_waiters {waiters}");
    header(
        &mut o,
        "faas_waiters_max",
        "gauge",
        "Configured bound on faas_waiters (max_waiters).",
    );
    let _ = writeln!(o, "faas_waiters_max {max_waiters}");
    header(
        &mut o,
        "faas_redis_up",
        "gauge",
        "1 when Redis answered this scrape.",
    );
    let _ = writeln!(o, "faas_redis_up {}", u8::from(cluster.is_some()));
    if let Some((stats, presence)) = cluster {
        render_cluster(&mut o, stats, presence);
    }
    o
}

fn render_cluster(o: &mut String, s: &Stats, presence: &[DispatcherPresence]) {
    header(
        o,
        "faas_tasks_created_total",
        "counter",
        "Tasks accepted (all gateways).",
    );
    let _ = writeln!(o, "faas_tasks_created_total {}", s.created);
    header(
        o,
        "faas_tasks_settled_total",
        "counter",
        "Tasks that ended, by status and (FAILED) the exception class of the cause.",
    );
    for ((status, cause), n) in &s.settled {
        if cause.is_empty() {
            let _ = writeln!(
                o,
                "faas_tasks_settled_total{{status=\"{}\"}} {n}",
                esc(status)
            );
        } else {
            let _ = writeln!(
                o,
                "faas_tasks_settled_total{{status=\"{}\",cause=\"{}\"}} {n}",
                esc(status),
                esc(cause)
            );
        }
    }
    let queued = s.queue_len.saturating_sub(s.delivered);
    header(
        o,
        "faas_tasks",
        "gauge",
        "Tasks by state: QUEUED (in the queue, not yet taken by a dispatcher) and RUNNING (taken).",
    );
    let _ = writeln!(o, "faas_tasks{{state=\"QUEUED\"}} {queued}");
    let _ = writeln!(o, "faas_tasks{{state=\"RUNNING\"}} {}", s.delivered);
    header(
        o,
        "faas_queue_depth",
        "gauge",
        "Entries in the queue stream (queued plus running tasks).",
    );
    let _ = writeln!(o, "faas_queue_depth {}", s.queue_len);
    header(
        o,
        "faas_task_duration_seconds",
        "histogram",
        "Time from a task's creation to its end (queue wait plus run), all tasks.",
    );
    let mut cum = 0;
    for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
        cum += s.latency_buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "faas_task_duration_seconds_bucket{{le=\"{}\"}} {cum}",
            *b as f64 / 1000.0
        );
    }
    cum += s
        .latency_buckets
        .get(LATENCY_BUCKETS_MS.len())
        .copied()
        .unwrap_or(0);
    let _ = writeln!(o, "faas_task_duration_seconds_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(
        o,
        "faas_task_duration_seconds_sum {}",
        s.latency_sum_ms as f64 / 1000.0
    );
    let _ = writeln!(o, "faas_task_duration_seconds_count {cum}");
    header(o, "faas_dispatchers", "gauge", "Live dispatchers.");
    let _ = writeln!(o, "faas_dispatchers {}", presence.len());
    header(
        o,
        "faas_workers",
        "gauge",
        "Workers of each dispatcher (local mode: 1, its own pool).",
    );
    for d in presence {
        let _ = writeln!(
            o,
            "faas_workers{{dispatcher=\"{}\",mode=\"{}\"}} {}",
            esc(&d.name),
            esc(&d.mode),
            d.workers.len()
        );
    }
    header(
        o,
        "faas_slots",
        "gauge",
        "Executor slots (tasks run at once) of each dispatcher's workers.",
    );
    for d in presence {
        let n: u64 = d.workers.iter().map(|w| u64::from(w.slots)).sum();
        let _ = writeln!(o, "faas_slots{{dispatcher=\"{}\"}} {n}", esc(&d.name));
    }
    header(
        o,
        "faas_slots_free",
        "gauge",
        "Free executor slots of each dispatcher's workers.",
    );
    for d in presence {
        let n: u64 = d.workers.iter().map(|w| u64::from(w.free)).sum();
        let _ = writeln!(o, "faas_slots_free{{dispatcher=\"{}\"}} {n}", esc(&d.name));
    }
    header(
        o,
        "faas_executor_runtime_info",
        "gauge",
        "Python and dill versions of each worker's executors.",
    );
    for d in presence {
        for w in &d.workers {
            let _ = writeln!(
                o,
                "faas_executor_runtime_info{{dispatcher=\"{}\",worker=\"{}\",python=\"{}\",dill=\"{}\"}} 1",
                esc(&d.name), esc(&w.id), esc(&w.runtime.python), esc(&w.runtime.dill)
            );
        }
    }
}

fn header(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_labels_escaped() {
        let m = HttpMetrics::default();
        m.record("GET", "/result/{task_id}", 200, 0.0001);
        m.record("GET", "/result/{task_id}", 200, 0.003);
        m.record("GET", "/result/{task_id}", 200, 1000.0);
        let text = render(&m.snapshot(), 2, 10, None);
        let l = "method=\"GET\",route=\"/result/{task_id}\",code=\"200\"";
        assert!(text.contains(&format!(
            "faas_http_request_duration_seconds_bucket{{{l},le=\"0.0005\"}} 1\n"
        )));
        assert!(text.contains(&format!(
            "faas_http_request_duration_seconds_bucket{{{l},le=\"0.005\"}} 2\n"
        )));
        assert!(text.contains(&format!(
            "faas_http_request_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3\n"
        )));
        assert!(text.contains(&format!(
            "faas_http_request_duration_seconds_count{{{l}}} 3\n"
        )));
        assert!(text.contains("faas_waiters 2\n") && text.contains("faas_redis_up 0\n"));
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
