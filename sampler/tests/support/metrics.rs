//! A parsed Prometheus text scrape and the accounting identity read from it.
//! Shared by the sampler's tests and, through `#[path]`, the root package's
//! cluster tests.

use std::collections::BTreeMap;

/// A parsed Prometheus text scrape: `(name, labels) → value`.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub Vec<(String, BTreeMap<String, String>, f64)>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut out = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let mut labels = BTreeMap::new();
                    for pair in rest.trim_end_matches('}').split("\",") {
                        if let Some((k, v)) = pair.split_once("=\"") {
                            labels.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
                        }
                    }
                    (name.to_owned(), labels)
                }
                None => (series.to_owned(), BTreeMap::new()),
            };
            out.push((name, labels, value));
        }
        Metrics(out)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    /// The accounting identity's two sides over the series with `labels`
    /// (e.g. one node's): (received, forwarded + not sampled + dropped +
    /// handed over + buffered).
    pub fn identity(&self, labels: &[(&str, &str)]) -> (f64, f64) {
        let received = self.sum("tailgate_spans_received_total", labels)
            + self.sum("tailgate_spans_recovered_total", labels);
        let accounted = self.sum("tailgate_spans_forwarded_total", labels)
            + self.sum("tailgate_spans_not_sampled_total", labels)
            + self.sum("tailgate_spans_dropped_total", labels)
            + self.sum("tailgate_spans_handed_over_total", labels)
            + self.sum("tailgate_buffer_spans", labels);
        (received, accounted)
    }
}
