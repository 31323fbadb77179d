//! A metrics recorder for runtimes without a scrape endpoint (the Lambda): it keeps every
//! counter in memory, so the runtime can report what one invocation cost (requests to
//! SQS and Bootpay) in its own log line. Gauges and histograms are not kept.
//!
//! The storage is `metrics-util`'s registry, the one the Prometheus exporter uses; only the
//! small `Recorder` glue is written here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_util::registry::{AtomicStorage, Registry};

/// Counts, per metric name, over every label set.
#[derive(Clone)]
pub struct Counters {
    registry: Arc<Registry<Key, AtomicStorage>>,
}

impl Counters {
    /// Installs the recorder for this process and returns a handle to read it.
    ///
    /// # Errors
    /// When a recorder is already installed.
    pub fn install() -> Result<Self, String> {
        let counters = Self {
            registry: Arc::new(Registry::atomic()),
        };
        metrics::set_global_recorder(CountingRecorder(counters.clone()))
            .map_err(|e| e.to_string())?;
        Ok(counters)
    }

    /// The sum of every counter called `name`, whatever its labels.
    pub fn total(&self, name: &str) -> u64 {
        let mut total = 0;
        self.registry.visit_counters(|key, counter| {
            if key.name() == name {
                total += counter.load(Ordering::Relaxed);
            }
        });
        total
    }
}

struct CountingRecorder(Counters);

impl Recorder for CountingRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.0
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_over_their_labels() {
        let counters = Counters {
            registry: Arc::new(Registry::atomic()),
        };
        let recorder = CountingRecorder(counters.clone());
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("requests", "op" => "a").increment(2);
            metrics::counter!("requests", "op" => "b").increment(3);
            metrics::counter!("other").increment(7);
            metrics::gauge!("in_flight").set(1.0);
        });
        assert_eq!(counters.total("requests"), 5);
        assert_eq!(counters.total("other"), 7);
        assert_eq!(counters.total("missing"), 0);
    }
}
