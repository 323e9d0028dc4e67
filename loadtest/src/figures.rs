//! `bench --figure NAME`: the bench runs behind one figure of
//! BENCHMARKS.md, from one command, each run verified.
//!
//! A figure is a list of scenarios (traffic settings) against one kind of
//! cluster, and the ratio that compares them within the run. Given several
//! `tailgate` binaries (`--against`), every scenario runs on each in turn,
//! so an old build and a new one are compared under the same machine load.
//! Each run starts its own cluster ([`bench::run`] with no endpoints) and
//! verifies what reached the sink.
//!
//! The LB figures start `tailgate lb` with the sink as its one member
//! ([`LocalRole::Lb`]): what is measured is the LB alone, and everything
//! it takes must arrive ([`Expectations::keep_all`]). The sampler figure
//! starts one `tailgate sampler` with the default policy exporting to the
//! sink ([`LocalRole::Sampler`]), and verifies the default policy's
//! promises ([`Expectations::default_policy`]).
//!
//! `lb-cpu` also runs each scenario on a bare TCP forwarder
//! ([`crate::forward`], labelled [`FORWARDER`]) in the same turn as the
//! binaries: the forwarder's CPU per span at low load and at peak is what
//! the host charges for forwarding alone, so the LB's ratio is printed
//! beside the least any LB could show on the same machine at the same time.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bench::{self, BenchConfig, BenchError, BenchReport, LocalRole};
use crate::stats::{median, ms, thousands};
use crate::verify::Expectations;

/// A figure of BENCHMARKS.md that `bench --figure` reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Figure {
    /// LB CPU per span at 50k spans/s and at peak (one member, 4
    /// connections); the ratio of the two. Beside it, the same for a bare
    /// TCP forwarder: the host's floor.
    LbCpu,
    /// LB added latency (p50, p99) at 150k spans/s.
    LbLatency,
    /// Delivered throughput at peak with 4, 16 and 64 client connections
    /// into one LB with one member; each against the 4-connection run.
    LbConnections,
    /// Sampler CPU per span with the default policy at a steady 100k
    /// spans/s (4 connections), as spans per sampler CPU-second.
    SamplerCpu,
}

/// The rate gen is asked for when a scenario means "as fast as it goes".
pub const PEAK: f64 = 5_000_000.0;

/// The label of the bare TCP forwarder's runs in a figure's report.
pub const FORWARDER: &str = "forwarder";

/// One bench run of a figure: its traffic, on top of the command line's.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    pub name: String,
    pub rate: f64,
    pub connections: usize,
    /// Runs gen straight into a sink first, for the added latency.
    pub baseline: bool,
}

impl Figure {
    /// The cluster every run of this figure starts.
    pub fn role(self) -> LocalRole {
        match self {
            Figure::LbCpu | Figure::LbLatency | Figure::LbConnections => LocalRole::Lb,
            Figure::SamplerCpu => LocalRole::Sampler,
        }
    }

    /// Whether every scenario also runs on the bare forwarder, for the
    /// host's floor.
    pub fn floor(self) -> bool {
        self == Figure::LbCpu
    }

    /// The least settle time after gen: the sampler decides 10 s after a
    /// trace's first span (the default policy's `decision_wait`).
    pub fn min_settle(self) -> Duration {
        match self {
            Figure::LbCpu | Figure::LbLatency | Figure::LbConnections => Duration::ZERO,
            Figure::SamplerCpu => Duration::from_secs(12),
        }
    }

    /// What the sink must have received.
    pub fn expect(self) -> Expectations {
        match self {
            Figure::LbCpu | Figure::LbLatency | Figure::LbConnections => Expectations::keep_all(),
            Figure::SamplerCpu => Expectations::default_policy(),
        }
    }

    pub fn scenarios(self) -> Vec<Scenario> {
        let scenario = |name: &str, rate: f64, connections: usize, baseline: bool| Scenario {
            name: name.to_owned(),
            rate,
            connections,
            baseline,
        };
        match self {
            Figure::LbCpu => vec![
                scenario("50k spans/s", 50_000.0, 4, false),
                scenario("peak", PEAK, 4, false),
            ],
            Figure::LbLatency => vec![scenario("150k spans/s", 150_000.0, 4, true)],
            Figure::LbConnections => vec![
                scenario("peak, 4 connections", PEAK, 4, false),
                scenario("peak, 16 connections", PEAK, 16, false),
                scenario("peak, 64 connections", PEAK, 64, false),
            ],
            Figure::SamplerCpu => vec![scenario("100k spans/s", 100_000.0, 4, false)],
        }
    }

    /// The figure's comparison within one binary's runs (in the order of
    /// [`Figure::scenarios`]): a name and a value.
    pub fn ratios(self, runs: &[&BenchReport]) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        match self {
            Figure::LbCpu => {
                if let [low, peak] = runs
                    && let (Some(low), Some(peak)) = (cpu_per_million(low), cpu_per_million(peak))
                {
                    out.push(("CPU per span, 50k / peak".into(), low / peak));
                }
            }
            Figure::LbLatency => {}
            Figure::SamplerCpu => {
                if let [run] = runs
                    && let Some(cpu) = cpu_per_million(run)
                {
                    out.push(("spans per sampler CPU-second".into(), 1e6 / cpu));
                }
            }
            Figure::LbConnections => {
                if let Some((four, more)) = runs.split_first() {
                    let base = four.traffic.achieved_rate();
                    for (run, n) in more.iter().zip([16, 64]) {
                        if base > 0.0 {
                            out.push((
                                format!("delivered, {n} / 4 connections"),
                                run.traffic.achieved_rate() / base,
                            ));
                        }
                    }
                }
            }
        }
        out
    }
}

/// CPU seconds of the measured processes per million spans taken.
pub fn cpu_per_million(report: &BenchReport) -> Option<f64> {
    let spans = report.traffic.spans_sent;
    (spans > 0).then(|| report.cluster_cpu_secs() * 1e6 / spans as f64)
}

/// A figure to run: the traffic and sink of `base` (its rate, connections
/// and baseline are set per scenario), on each binary of `tailgates`.
#[derive(Debug, Clone)]
pub struct FigureConfig {
    pub figure: Figure,
    pub base: BenchConfig,
    /// (label, binary); `None`: the `tailgate` beside this executable.
    pub tailgates: Vec<(String, Option<PathBuf>)>,
    /// How long each run's gen runs.
    pub duration: Duration,
    /// How many times the whole figure runs (at least once). The binaries
    /// take turns going first: on a shared machine the run that goes first
    /// in a pair is not the same as the one that goes second.
    pub repeat: usize,
}

/// One run of a figure.
#[derive(Debug, Clone, Serialize)]
pub struct FigureRun {
    /// Which repetition, from 0.
    pub repetition: usize,
    pub scenario: Scenario,
    pub tailgate: String,
    pub report: BenchReport,
}

/// A figure's ratio for one binary: (repetition, value) for each
/// repetition that gave one.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub tailgate: String,
    pub name: String,
    pub values: Vec<(usize, f64)>,
}

impl Ratio {
    fn numbers(&self) -> Vec<f64> {
        self.values.iter().map(|(_, v)| *v).collect()
    }
}

/// The first binary's ratio over another's, repetition by repetition
/// (both measured in the same repetition, one right after the other; a
/// repetition where either gave none is left out).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub name: String,
    pub this: String,
    pub other: String,
    pub quotients: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FigureReport {
    pub figure: Figure,
    pub runs: Vec<FigureRun>,
    pub ratios: Vec<Ratio>,
    pub comparisons: Vec<Comparison>,
}

impl FigureReport {
    /// Every run's verify passed and nothing was left unsent.
    pub fn passed(&self) -> bool {
        self.runs
            .iter()
            .all(|r| r.report.verify.passed() && r.report.traffic.spans_unsent == 0)
    }
}

/// The order the binaries run in, in repetition `repetition`: as given,
/// then reversed, in turn.
fn turn_order(binaries: usize, repetition: usize) -> Vec<usize> {
    if repetition.is_multiple_of(2) {
        (0..binaries).collect()
    } else {
        (0..binaries).rev().collect()
    }
}

/// Runs every scenario of the figure on every binary, scenario by scenario
/// (binaries alternate, so they see the same load), `repeat` times.
pub async fn run(config: FigureConfig) -> Result<FigureReport, BenchError> {
    let figure = config.figure;
    let repeat = config.repeat.max(1);
    let subjects = subjects(figure, &config.tailgates)?;
    let mut runs = Vec::new();
    for repetition in 0..repeat {
        for (i, scenario) in figure.scenarios().into_iter().enumerate() {
            for j in turn_order(subjects.len(), repetition) {
                let (label, tailgate, role) = &subjects[j];
                let mut bench = config.base.clone();
                bench.traffic.rate = scenario.rate;
                bench.traffic.connections = scenario.connections;
                bench.traffic.duration = Some(config.duration);
                bench.traffic.count = None;
                bench.traffic.endpoints.clear();
                bench.baseline = if scenario.baseline {
                    Duration::from_secs(2)
                } else {
                    Duration::ZERO
                };
                bench.expect = figure.expect();
                bench.settle = bench.settle.max(figure.min_settle());
                bench.local.role = *role;
                bench.local.tailgate = tailgate.clone();
                bench.dir = config.base.dir.join(if repeat > 1 {
                    format!("{repetition}-{i}-{j}")
                } else {
                    format!("{i}-{j}")
                });
                let report = bench::run(bench).await?;
                runs.push(FigureRun {
                    repetition,
                    scenario: scenario.clone(),
                    tailgate: label.clone(),
                    report,
                });
            }
        }
    }
    let labels: Vec<&String> = subjects.iter().map(|(l, ..)| l).collect();
    let (ratios, comparisons) = ratios(figure, &runs, &labels, repeat);
    Ok(FigureReport {
        figure,
        runs,
        ratios,
        comparisons,
    })
}

/// What each scenario of `figure` runs on, in turn: (label, binary, what
/// the bench starts). The binaries, then the bare forwarder if the figure
/// has a floor.
fn subjects(
    figure: Figure,
    tailgates: &[(String, Option<PathBuf>)],
) -> Result<Vec<(String, Option<PathBuf>, LocalRole)>, BenchError> {
    let mut subjects: Vec<_> = tailgates
        .iter()
        .map(|(label, path)| (label.clone(), path.clone(), figure.role()))
        .collect();
    if figure.floor() {
        if subjects.iter().any(|(label, ..)| label == FORWARDER) {
            return Err(BenchError::Config(format!(
                "the label {FORWARDER:?} is the figure's own: choose another"
            )));
        }
        subjects.push((FORWARDER.to_owned(), None, LocalRole::Forwarder));
    }
    Ok(subjects)
}

/// Each binary's ratios per repetition, and the first binary's over each
/// other's.
fn ratios(
    figure: Figure,
    runs: &[FigureRun],
    labels: &[&String],
    repeat: usize,
) -> (Vec<Ratio>, Vec<Comparison>) {
    let mut measured = Vec::new();
    for label in labels {
        for repetition in 0..repeat {
            // In the order of the scenarios, as `Figure::ratios` expects.
            let mine: Vec<&BenchReport> = runs
                .iter()
                .filter(|r| &r.tailgate == *label && r.repetition == repetition)
                .map(|r| &r.report)
                .collect();
            for (name, value) in figure.ratios(&mine) {
                measured.push(((*label).clone(), name, repetition, value));
            }
        }
    }
    gather(labels, measured)
}

/// `measured`: (binary, ratio name, repetition, value). Collects each
/// binary's values per ratio, and the first binary's over each other's,
/// repetition by repetition.
fn gather(
    labels: &[&String],
    measured: Vec<(String, String, usize, f64)>,
) -> (Vec<Ratio>, Vec<Comparison>) {
    let mut ratios: Vec<Ratio> = Vec::new();
    for (tailgate, name, repetition, value) in measured {
        match ratios
            .iter_mut()
            .find(|r| r.tailgate == tailgate && r.name == name)
        {
            Some(r) => r.values.push((repetition, value)),
            None => ratios.push(Ratio {
                tailgate,
                name,
                values: vec![(repetition, value)],
            }),
        }
    }
    let mut comparisons = Vec::new();
    if let Some((this, others)) = labels.split_first() {
        for other in others {
            for mine in ratios.iter().filter(|r| &r.tailgate == *this) {
                let Some(theirs) = ratios
                    .iter()
                    .find(|r| &r.tailgate == *other && r.name == mine.name)
                else {
                    continue;
                };
                comparisons.push(Comparison {
                    name: mine.name.clone(),
                    this: (*this).clone(),
                    other: (*other).clone(),
                    quotients: mine
                        .values
                        .iter()
                        .filter_map(|(repetition, a)| {
                            let (_, b) = theirs.values.iter().find(|(r, _)| r == repetition)?;
                            Some(a / b)
                        })
                        .collect(),
                });
            }
        }
    }
    (ratios, comparisons)
}

impl std::fmt::Display for FigureReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let repeated = self.runs.iter().any(|r| r.repetition > 0);
        writeln!(
            f,
            "| run | tailgate | offered spans/s | delivered spans/s | CPU-s per M spans | added p50 / p99 | retries | unsent | verify |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|---|")?;
        for run in &self.runs {
            let r = &run.report;
            let g = &r.traffic;
            let added = r.added_latency().map_or("-".to_owned(), |(p50, p99)| {
                format!("{} / {}", ms(Some(p50)), ms(Some(p99)))
            });
            let v = &r.verify;
            let name = if repeated {
                format!("{} (#{})", run.scenario.name, run.repetition + 1)
            } else {
                run.scenario.name.clone()
            };
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                name,
                run.tailgate,
                thousands(g.offered_rate() as u64),
                thousands(g.achieved_rate() as u64),
                cpu_per_million(r).map_or("-".to_owned(), |c| format!("{c:.3}")),
                added,
                thousands(g.retries),
                thousands(g.spans_unsent),
                if v.passed() && g.spans_unsent == 0 {
                    "PASS"
                } else {
                    "FAIL"
                },
            )?;
        }
        let list = |values: &[f64]| {
            values
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for r in &self.ratios {
            let values = r.numbers();
            let Some(m) = median(&values) else { continue };
            if repeated {
                writeln!(
                    f,
                    "{}: {} = {m:.2} (median; runs: {})",
                    r.tailgate,
                    r.name,
                    list(&values)
                )?;
            } else {
                writeln!(f, "{}: {} = {m:.2}", r.tailgate, r.name)?;
            }
        }
        for c in &self.comparisons {
            let Some(m) = median(&c.quotients) else {
                continue;
            };
            writeln!(
                f,
                "{} / {}, {} = {m:.3}{}",
                c.this,
                c.other,
                c.name,
                if repeated {
                    format!(" (median; per repetition: {})", list(&c.quotients))
                } else {
                    String::new()
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lb_figure_runs_the_lb_alone_and_expects_everything() {
        for figure in [Figure::LbCpu, Figure::LbLatency, Figure::LbConnections] {
            assert_eq!(figure.role(), LocalRole::Lb);
            assert_eq!(figure.expect(), Expectations::keep_all());
            assert!(!figure.scenarios().is_empty());
        }
        let connections: Vec<usize> = Figure::LbConnections
            .scenarios()
            .iter()
            .map(|s| s.connections)
            .collect();
        assert_eq!(connections, [4, 16, 64]);
        assert!(Figure::LbLatency.scenarios()[0].baseline);
    }

    #[test]
    fn repetitions_alternate_who_goes_first_and_compare_within_each() {
        assert_eq!(turn_order(2, 0), [0, 1]);
        assert_eq!(turn_order(2, 1), [1, 0]);
        assert_eq!(turn_order(3, 2), [0, 1, 2]);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);

        let (this, base) = ("this".to_owned(), "base".to_owned());
        let name = "spans per sampler CPU-second".to_owned();
        let measured = vec![
            (this.clone(), name.clone(), 0, 500.0),
            (this.clone(), name.clone(), 1, 600.0),
            (this.clone(), name.clone(), 2, 450.0),
            (base.clone(), name.clone(), 0, 400.0),
            (base.clone(), name.clone(), 1, 600.0),
            (base.clone(), name.clone(), 2, 500.0),
        ];
        let (ratios, comparisons) = gather(&[&this, &base], measured.clone());
        assert_eq!(ratios.len(), 2);
        assert_eq!(ratios[0].numbers(), [500.0, 600.0, 450.0]);
        assert_eq!(comparisons.len(), 1);
        let c = &comparisons[0];
        assert_eq!((c.this.as_str(), c.other.as_str()), ("this", "base"));
        // Repetition by repetition, not medians over each other.
        assert_eq!(c.quotients, [1.25, 1.0, 0.9]);
        assert_eq!(median(&c.quotients), Some(1.0));

        // A repetition where one binary gave no ratio (no span taken) is
        // left out, not paired with the next one.
        let gaps: Vec<_> = measured
            .into_iter()
            .filter(|m| (&m.0, m.2) != (&base, 1))
            .collect();
        let (_, comparisons) = gather(&[&this, &base], gaps);
        assert_eq!(comparisons[0].quotients, [1.25, 0.9]);
    }

    #[test]
    fn only_the_lb_cpu_figure_runs_the_forwarder_too_after_the_binaries() {
        let tailgates = vec![
            ("this".to_owned(), None),
            ("old".to_owned(), Some(PathBuf::from("/tmp/old"))),
        ];
        let lb_cpu = subjects(Figure::LbCpu, &tailgates).unwrap();
        let roles: Vec<(&str, LocalRole)> =
            lb_cpu.iter().map(|(l, _, r)| (l.as_str(), *r)).collect();
        assert_eq!(
            roles,
            [
                ("this", LocalRole::Lb),
                ("old", LocalRole::Lb),
                (FORWARDER, LocalRole::Forwarder)
            ]
        );
        // Its runs are verified like the LB's: everything arrives.
        assert_eq!(Figure::LbCpu.expect(), Expectations::keep_all());
        for figure in [Figure::LbLatency, Figure::LbConnections, Figure::SamplerCpu] {
            let others = subjects(figure, &tailgates).unwrap();
            assert_eq!(others.len(), 2, "{figure:?}");
            assert!(others.iter().all(|(_, _, r)| *r == figure.role()));
        }
        // A binary labelled like the floor would mix their runs up.
        let clash = vec![(FORWARDER.to_owned(), None)];
        assert!(subjects(Figure::LbCpu, &clash).is_err());
        assert!(subjects(Figure::LbLatency, &clash).is_ok());
    }

    #[test]
    fn the_sampler_figure_runs_a_sampler_past_its_decision_wait() {
        let figure = Figure::SamplerCpu;
        assert_eq!(figure.role(), LocalRole::Sampler);
        assert_eq!(figure.expect(), Expectations::default_policy());
        assert_eq!(figure.scenarios()[0].rate, 100_000.0);
        assert!(figure.min_settle() > Duration::from_secs(10));
    }
}
