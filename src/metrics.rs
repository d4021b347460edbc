//! Counters for `GET /metrics`, in Prometheus's text format: deployments by result and their
//! durations, each stack's last success and state, image updates found, webhook requests by
//! outcome, and git syncs.
//!
//! Plain atomics and one small map, shared by the deployer and the HTTP layer; no metrics crate.
//! Counting never fails and never waits on IO. Rendering reads the state file only to give
//! stacks deployed before this process started their last success.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::store;

/// Upper bounds of the deployment duration histogram, in seconds.
const DEPLOY_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
];

/// Upper bounds of the git sync duration histogram, in seconds.
const SYNC_BUCKETS: [f64; 8] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];

/// What became of a webhook request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// A deployment was queued for it.
    Accepted,
    /// Valid, but nothing to do: a ping, another branch, a duplicate delivery.
    Ignored,
    /// Missing, malformed or wrong signature.
    BadSignature,
    /// Anything else refused: a bad body, no secret configured, too large, too slow.
    Refused,
}

const WEBHOOK_OUTCOMES: [(WebhookOutcome, &str); 4] = [
    (WebhookOutcome::Accepted, "accepted"),
    (WebhookOutcome::Ignored, "ignored"),
    (WebhookOutcome::BadSignature, "bad_signature"),
    (WebhookOutcome::Refused, "refused"),
];

#[derive(Debug, Default)]
pub struct Metrics {
    deployments_succeeded: AtomicU64,
    deployments_failed: AtomicU64,
    deploy_durations: Histogram<{ DEPLOY_BUCKETS.len() }>,
    webhooks: [AtomicU64; 4],
    syncs: Histogram<{ SYNC_BUCKETS.len() }>,
    sync_failures: AtomicU64,
    stacks: Mutex<BTreeMap<String, StackMetric>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct StackMetric {
    /// Seconds since the epoch.
    last_success: Option<f64>,
    failed: bool,
    drifted: bool,
}

#[derive(Debug)]
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    /// Microseconds, so that the sum stays an integer.
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], value: Duration) {
        let seconds = value.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str, bounds: &[f64; N]) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(bounds) {
            let count = bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

impl Metrics {
    /// A deployment ended: `succeeded`, after `took`, with each stack's result.
    pub fn deployment(&self, succeeded: bool, took: Duration, stacks: &[(String, bool)]) {
        let counter = match succeeded {
            true => &self.deployments_succeeded,
            false => &self.deployments_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.deploy_durations.observe(&DEPLOY_BUCKETS, took);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut map = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        for (stack, ok) in stacks {
            let metric = map.entry(stack.clone()).or_default();
            metric.failed = !ok;
            if *ok {
                metric.last_success = Some(now);
            }
        }
    }

    /// Whether `stack` drifted from what was deployed.
    pub fn drifted(&self, stack: &str, drifted: bool) {
        let mut map = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(stack.to_owned()).or_default().drifted = drifted;
    }

    /// A stack was taken down: it has no metrics any more.
    pub fn forget(&self, stack: &str) {
        let mut map = self.stacks.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(stack);
    }

    pub fn webhook(&self, outcome: WebhookOutcome) {
        let index = WEBHOOK_OUTCOMES
            .iter()
            .position(|(o, _)| *o == outcome)
            .unwrap_or(0);
        self.webhooks[index].fetch_add(1, Ordering::Relaxed);
    }

    /// A git sync ended, after `took`.
    pub fn sync(&self, ok: bool, took: Duration) {
        self.syncs.observe(&SYNC_BUCKETS, took);
        if !ok {
            self.sync_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything in Prometheus's text format (version 0.0.4). Stacks recorded in `state` but
    /// not deployed by this process get their last success from the record.
    pub fn render(&self, state: &store::State) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP stackhook_deployments_total Deployments that ended, by result.\n\
             # TYPE stackhook_deployments_total counter"
        );
        for (result, counter) in [
            ("succeeded", &self.deployments_succeeded),
            ("failed", &self.deployments_failed),
        ] {
            let count = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "stackhook_deployments_total{{result=\"{result}\"}} {count}"
            );
        }
        self.deploy_durations.render(
            &mut out,
            "stackhook_deployment_duration_seconds",
            "How long deployments took, from trigger to report.",
            &DEPLOY_BUCKETS,
        );

        let mut stacks: BTreeMap<String, StackMetric> = state
            .stacks
            .iter()
            .map(|(name, record)| {
                let at = humantime::parse_rfc3339(&record.deployed_at)
                    .ok()
                    .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64());
                let metric = StackMetric {
                    last_success: at,
                    ..StackMetric::default()
                };
                (name.clone(), metric)
            })
            .collect();
        for (name, metric) in self.stacks.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let entry = stacks.entry(name.clone()).or_default();
            entry.failed = metric.failed;
            entry.drifted = metric.drifted;
            entry.last_success = metric.last_success.or(entry.last_success);
        }
        let _ = writeln!(
            out,
            "# HELP stackhook_stack_last_success_timestamp_seconds When each stack last deployed successfully.\n\
             # TYPE stackhook_stack_last_success_timestamp_seconds gauge"
        );
        for (name, metric) in &stacks {
            if let Some(at) = metric.last_success {
                let _ = writeln!(
                    out,
                    "stackhook_stack_last_success_timestamp_seconds{{stack=\"{}\"}} {at}",
                    label(name)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP stackhook_stack_failed Whether each stack's last deployment failed (1) or not (0).\n\
             # TYPE stackhook_stack_failed gauge"
        );
        for (name, metric) in &stacks {
            let failed = u8::from(metric.failed);
            let _ = writeln!(
                out,
                "stackhook_stack_failed{{stack=\"{}\"}} {failed}",
                label(name)
            );
        }

        let _ = writeln!(
            out,
            "# HELP stackhook_stack_drifted Whether each stack's containers differ from what was deployed (1) or not (0).\n\
             # TYPE stackhook_stack_drifted gauge"
        );
        for (name, metric) in &stacks {
            let drifted = u8::from(metric.drifted);
            let _ = writeln!(
                out,
                "stackhook_stack_drifted{{stack=\"{}\"}} {drifted}",
                label(name)
            );
        }
        // From the state, where the image check records what it found (`STACKHOOK_IMAGE_CHECK`):
        // each followed service whose tag names a newer image (1) or the one it runs (0).
        let _ = writeln!(
            out,
            "# HELP stackhook_image_update_available Whether each checked service's image tag names a newer image than the one it runs (1) or not (0).\n\
             # TYPE stackhook_image_update_available gauge"
        );
        for (name, check) in &state.image_checks {
            for (service, image) in &check.services {
                let available = match image.finding {
                    store::Finding::UpdateAvailable { .. } => 1,
                    store::Finding::UpToDate { .. } => 0,
                    store::Finding::Unknown { .. } => continue,
                };
                let _ = writeln!(
                    out,
                    "stackhook_image_update_available{{stack=\"{}\",service=\"{}\"}} {available}",
                    label(name),
                    label(service)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP stackhook_webhook_requests_total Webhook requests, by outcome.\n\
             # TYPE stackhook_webhook_requests_total counter"
        );
        for ((_, name), counter) in WEBHOOK_OUTCOMES.iter().zip(&self.webhooks) {
            let count = counter.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "stackhook_webhook_requests_total{{outcome=\"{name}\"}} {count}"
            );
        }
        self.syncs.render(
            &mut out,
            "stackhook_git_sync_duration_seconds",
            "How long fetching and checking out the environment repository took.",
            &SYNC_BUCKETS,
        );
        let failures = self.sync_failures.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP stackhook_git_sync_failures_total Git syncs that failed.\n\
             # TYPE stackhook_git_sync_failures_total counter\n\
             stackhook_git_sync_failures_total {failures}"
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let metrics = Metrics::default();
        metrics.deployment(true, Duration::from_millis(700), &[("web".into(), true)]);
        metrics.deployment(false, Duration::from_secs(3), &[("db".into(), false)]);
        metrics.webhook(WebhookOutcome::Accepted);
        metrics.webhook(WebhookOutcome::BadSignature);
        metrics.webhook(WebhookOutcome::BadSignature);
        metrics.sync(false, Duration::from_millis(30));
        let text = metrics.render(&store::State::default());

        for line in [
            "stackhook_deployments_total{result=\"succeeded\"} 1",
            "stackhook_deployments_total{result=\"failed\"} 1",
            "stackhook_deployment_duration_seconds_bucket{le=\"0.5\"} 0",
            "stackhook_deployment_duration_seconds_bucket{le=\"1\"} 1",
            "stackhook_deployment_duration_seconds_bucket{le=\"5\"} 2",
            "stackhook_deployment_duration_seconds_bucket{le=\"+Inf\"} 2",
            "stackhook_deployment_duration_seconds_sum 3.7",
            "stackhook_deployment_duration_seconds_count 2",
            "stackhook_stack_failed{stack=\"db\"} 1",
            "stackhook_stack_failed{stack=\"web\"} 0",
            "stackhook_webhook_requests_total{outcome=\"accepted\"} 1",
            "stackhook_webhook_requests_total{outcome=\"bad_signature\"} 2",
            "stackhook_webhook_requests_total{outcome=\"refused\"} 0",
            "stackhook_git_sync_duration_seconds_count 1",
            "stackhook_git_sync_failures_total 1",
            "# TYPE stackhook_deployment_duration_seconds histogram",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.contains("stackhook_stack_last_success_timestamp_seconds{stack=\"web\"} "));
        assert!(!text.contains("stackhook_stack_last_success_timestamp_seconds{stack=\"db\"}"));
    }

    #[test]
    fn image_updates_are_told_per_service() {
        let image = |finding| store::ServiceImage {
            image: "app:1".into(),
            image_id: "sha256:i1".into(),
            finding,
        };
        let check = store::ImageCheck {
            checked_at: "2026-01-01T00:00:00Z".into(),
            services: BTreeMap::from([
                (
                    "app".to_owned(),
                    image(store::Finding::UpdateAvailable {
                        running: None,
                        available: "sha256:new".into(),
                    }),
                ),
                (
                    "db".to_owned(),
                    image(store::Finding::UpToDate {
                        digest: "sha256:d".into(),
                    }),
                ),
                (
                    "cache".to_owned(),
                    image(store::Finding::Unknown {
                        reason: "offline".into(),
                    }),
                ),
            ]),
        };
        let state = store::State {
            image_checks: BTreeMap::from([("web".to_owned(), check)]),
            ..store::State::default()
        };
        let text = Metrics::default().render(&state);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("stackhook_image_update_available"))
            .collect();
        assert_eq!(
            lines,
            [
                "stackhook_image_update_available{stack=\"web\",service=\"app\"} 1",
                "stackhook_image_update_available{stack=\"web\",service=\"db\"} 0",
            ]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
