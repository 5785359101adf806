//! The comparison: rounds, medians, ratios, the table printed and the JSON written.

use super::*;

/// Which way a figure is better, for the reader of the ratio.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Better {
    Higher,
    Lower,
    /// A count or a setting, not a score.
    Neither,
}

/// One figure of one target.
#[derive(Clone, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub unit: &'static str,
    pub better: Better,
    pub value: Option<f64>,
}

/// Shorthand for a [`Metric`].
pub fn metric(
    name: &'static str,
    unit: &'static str,
    better: Better,
    value: impl Into<Option<f64>>,
) -> Metric {
    Metric {
        name,
        unit,
        better,
        value: value.into(),
    }
}

/// What one target produced.
pub struct Outcome {
    pub kind: Kind,
    pub url: String,
    pub describe: String,
    /// `Err`: why this target has no figures.
    pub result: Result<Vec<Metric>, String>,
}

pub fn fmt_value(v: Option<f64>) -> String {
    match v {
        None => "n/a".into(),
        Some(v) if v == v.trunc() && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

/// Prints the comparison table and writes `target/bench-results/<bench>.json`.
pub fn report(bench: &str, title: &str, config: Value, setup: &Setup, outcomes: &[Outcome]) {
    println!();
    println!("{title}");
    println!(
        "pinning: servers on CPUs {}, load generator on CPUs {} ({} runtime threads)",
        setup.server_cpus.as_deref().unwrap_or("any"),
        setup.client_cpus.as_deref().unwrap_or("any"),
        setup.threads
    );
    for o in outcomes {
        println!(
            "{:<9} {} ({})",
            format!("{}:", o.kind.label()),
            o.url,
            o.describe
        );
        if let Err(e) = &o.result {
            println!("          no figures: {e}");
        }
    }

    // Rows in order of first appearance.
    let mut names: Vec<(&'static str, &'static str, Better)> = Vec::new();
    let mut values: HashMap<(Kind, &'static str), Option<f64>> = HashMap::new();
    for o in outcomes {
        for m in o.result.iter().flatten() {
            if !names.iter().any(|(n, _, _)| *n == m.name) {
                names.push((m.name, m.unit, m.better));
            }
            values.insert((o.kind, m.name), m.value);
        }
    }
    let get = |k: Kind, n: &str| values.get(&(k, n)).copied().flatten();
    let has = |k: Kind| outcomes.iter().any(|o| o.kind == k);
    println!();
    println!(
        "{:<46} {:>11} {:>14} {:>14} {:>10}  better",
        "metric", "unit", "holdfast", "baseline", "ratio"
    );
    let mut rows = Vec::new();
    for (name, unit, better) in &names {
        let h = get(Kind::Holdfast, name);
        let b = get(Kind::Baseline, name);
        let ratio = ratio(h, b);
        let better_s = match better {
            Better::Higher => "higher",
            Better::Lower => "lower",
            Better::Neither => "",
        };
        let cell = |k: Kind, v: Option<f64>| if has(k) { fmt_value(v) } else { "-".into() };
        println!(
            "{:<46} {:>11} {:>14} {:>14} {:>10}  {}",
            name,
            unit,
            cell(Kind::Holdfast, h),
            cell(Kind::Baseline, b),
            ratio.map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
            better_s
        );
        rows.push(json!({
            "metric": name, "unit": unit, "better": better_s,
            "holdfast": h, "baseline": b, "ratio_holdfast_to_baseline": ratio,
        }));
    }
    println!("ratio = holdfast / baseline");
    for o in outcomes {
        let worst = o
            .result
            .iter()
            .flatten()
            .filter(|m| m.name.ends_with(OTHER_CPU))
            .filter_map(|m| m.value)
            .fold(0.0_f64, f64::max);
        if worst > DISTURBED_OTHER_CPU {
            println!(
                "warning: during the {} run {worst:.0}% of a core went to neither the server nor the \
                 load generator: other work on the machine disturbed these figures; run again on an \
                 idle machine",
                o.kind.label()
            );
        }
    }

    let targets: serde_json::Map<String, Value> = outcomes
        .iter()
        .map(|o| {
            let v = match &o.result {
                Ok(metrics) => json!({
                    "url": o.url, "server": o.describe, "error": null,
                    "metrics": metrics.iter().map(|m| (m.name.to_owned(), json!({"value": m.value, "unit": m.unit})))
                        .collect::<serde_json::Map<_, _>>(),
                }),
                Err(e) => json!({"url": o.url, "server": o.describe, "error": e, "metrics": {}}),
            };
            (o.kind.label().to_owned(), v)
        })
        .collect();
    let doc = json!({
        "bench": bench,
        "title": title,
        "unix_time": unix_time(),
        "config": config,
        "setup": setup.describe(),
        "targets": targets,
        "rows": rows,
    });
    let dir = results_dir();
    let path = dir.join(format!("{bench}.json"));
    match std::fs::create_dir_all(&dir).and_then(|_| {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&doc).unwrap_or_default(),
        )
    }) {
        Ok(()) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}

/// Runs the scenario against each planned target in turn and reports.
/// `scenario` gets the running server and returns its figures.
///
/// `BENCH_ROUNDS=N` (default 1) repeats the whole plan N times, targets
/// alternating (holdfast, baseline, holdfast, …), each round with freshly
/// started servers. On a shared machine one target's figure moves between
/// runs more than the difference being measured; with rounds, each round's
/// headline figures and ratio are printed as it ends, and the table gives
/// every metric's median over the rounds (and the JSON each round's value).
/// `headlines` names the metrics printed per round, with their ratios.
pub fn run_all<F>(
    bench: &str,
    title: &str,
    mut config: Value,
    setup: &Setup,
    headlines: &[&'static str],
    mut scenario: F,
) where
    F: FnMut(&tokio::runtime::Runtime, &Setup, &mut Server) -> Result<Vec<Metric>, String>,
{
    let rounds: usize = env_or("BENCH_ROUNDS", 1usize).max(1);
    let rt = setup.runtime();
    let mut all: Vec<Vec<Outcome>> = Vec::new();
    for round in 1..=rounds {
        let mut outcomes = Vec::new();
        for plan in plan(bench) {
            outcomes.push(run_target(bench, &plan, setup, &rt, &mut scenario));
        }
        if rounds > 1 {
            print_round(round, rounds, headlines, &outcomes);
        }
        all.push(outcomes);
    }
    drop(rt);
    if rounds == 1 {
        let outcomes = all.pop().unwrap_or_default();
        report(bench, title, config, setup, &outcomes);
        return;
    }
    config["rounds"] = json!(rounds);
    config["per_round"] = per_round_json(&all);
    config["round_ratios"] = print_round_ratios(headlines, &all);
    let title = format!("{title}; median of {rounds} rounds");
    report(bench, &title, config, setup, &median_outcomes(&all));
}

/// Starts one target, runs the scenario on it, stops it.
pub(crate) fn run_target<F>(
    bench: &str,
    plan: &Plan,
    setup: &Setup,
    rt: &tokio::runtime::Runtime,
    scenario: &mut F,
) -> Outcome
where
    F: FnMut(&tokio::runtime::Runtime, &Setup, &mut Server) -> Result<Vec<Metric>, String>,
{
    eprintln!("{bench}: starting {}", plan.kind.label());
    match Server::start(plan, setup, rt) {
        Ok(mut server) => {
            eprintln!(
                "{bench}: {} at {} ({})",
                plan.kind.label(),
                server.url,
                server.describe
            );
            let result = scenario(rt, setup, &mut server);
            if let Err(e) = &result {
                eprintln!("{bench}: {} failed: {e}", plan.kind.label());
                server.print_log_tail();
            }
            let o = Outcome {
                kind: plan.kind,
                url: server.url.clone(),
                describe: server.describe.clone(),
                result,
            };
            server.stop();
            o
        }
        Err(e) => {
            eprintln!("{bench}: {} unavailable: {e}", plan.kind.label());
            Outcome {
                kind: plan.kind,
                url: plan.url.clone().unwrap_or_default(),
                describe: "not started".into(),
                result: Err(e),
            }
        }
    }
}

/// One line per headline metric of a round: each target's value and the ratio.
pub(crate) fn print_round(round: usize, rounds: usize, headlines: &[&str], outcomes: &[Outcome]) {
    for &name in headlines {
        let (h, b) = (
            value(outcomes, Kind::Holdfast, name),
            value(outcomes, Kind::Baseline, name),
        );
        let unit = [Kind::Holdfast, Kind::Baseline]
            .into_iter()
            .find_map(|k| metric_of(outcomes, k, name))
            .map_or("", |m| m.unit);
        println!(
            "round {round}/{rounds}: {:<40} {:>12} {:>12} {:>7}",
            format!("{name} ({unit})"),
            fmt_value(h),
            fmt_value(b),
            ratio(h, b).map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
        );
    }
}

/// Metric `name` of target `kind` in one round's outcomes.
pub(crate) fn metric_of<'a>(outcomes: &'a [Outcome], kind: Kind, name: &str) -> Option<&'a Metric> {
    outcomes
        .iter()
        .filter(|o| o.kind == kind)
        .flat_map(|o| o.result.iter().flatten())
        .find(|m| m.name == name)
}

/// The value of metric `name` of target `kind`, if measured.
pub(crate) fn value(outcomes: &[Outcome], kind: Kind, name: &str) -> Option<f64> {
    metric_of(outcomes, kind, name).and_then(|m| m.value)
}

/// holdfast / baseline, when both exist and the baseline is not 0.
pub(crate) fn ratio(holdfast: Option<f64>, baseline: Option<f64>) -> Option<f64> {
    match (holdfast, baseline) {
        (Some(h), Some(b)) if b != 0.0 => Some(h / b),
        _ => None,
    }
}

/// Each headline metric's ratio in every round and their median: what to
/// read when the machine's speed drifts between rounds (the table's ratio
/// is of the medians, which drift moves apart).
pub(crate) fn print_round_ratios(headlines: &[&str], all: &[Vec<Outcome>]) -> Value {
    let mut out = serde_json::Map::new();
    for &name in headlines {
        let ratios: Vec<f64> = all
            .iter()
            .filter_map(|outcomes| {
                ratio(
                    value(outcomes, Kind::Holdfast, name),
                    value(outcomes, Kind::Baseline, name),
                )
            })
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
        let mid = median(ratios);
        println!(
            "{name}: ratio per round {}; median {}",
            listed.join(", "),
            mid.map_or_else(|| "-".into(), |m| format!("{m:.2}x"))
        );
        out.insert(name.to_owned(), json!({"per_round": listed, "median": mid}));
    }
    Value::Object(out)
}

/// Every round's value of every metric, by target.
pub(crate) fn per_round_json(all: &[Vec<Outcome>]) -> Value {
    let rounds: Vec<Value> = all
        .iter()
        .map(|outcomes| {
            let targets: serde_json::Map<String, Value> = outcomes
                .iter()
                .map(|o| {
                    let metrics: serde_json::Map<String, Value> = o
                        .result
                        .iter()
                        .flatten()
                        .map(|m| (m.name.to_owned(), json!(m.value)))
                        .collect();
                    (o.kind.label().to_owned(), Value::Object(metrics))
                })
                .collect();
            Value::Object(targets)
        })
        .collect();
    Value::Array(rounds)
}

/// One outcome per target: each metric's median over the rounds that
/// produced it, but for counts of failures (lost, duplicated, errors…) and
/// the CPU that went to neither process, which take the worst round, so
/// that one bad or disturbed round is never hidden; an error only if no
/// round of that target did.
pub(crate) fn median_outcomes(all: &[Vec<Outcome>]) -> Vec<Outcome> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|o| {
            let runs: Vec<&Outcome> = all
                .iter()
                .flat_map(|round| round.iter().filter(|x| x.kind == o.kind))
                .collect();
            let ok: Vec<&Vec<Metric>> =
                runs.iter().filter_map(|r| r.result.as_ref().ok()).collect();
            let result = match ok.first() {
                None => o.result.clone(),
                Some(template) => Ok(template
                    .iter()
                    .map(|m| {
                        let values: Vec<f64> = ok
                            .iter()
                            .filter_map(|ms| ms.iter().find(|x| x.name == m.name))
                            .filter_map(|x| x.value)
                            .collect();
                        // Failures, and the disturbance `report` warns of: the worst round.
                        let worst = (m.better == Better::Lower && m.unit == "count")
                            || m.name.ends_with(OTHER_CPU);
                        let v = if worst {
                            values.into_iter().reduce(f64::max)
                        } else {
                            median(values)
                        };
                        metric(m.name, m.unit, m.better, v)
                    })
                    .collect()),
            };
            Outcome {
                kind: o.kind,
                url: o.url.clone(),
                describe: format!(
                    "{}; {} of {} rounds with figures",
                    o.describe,
                    ok.len(),
                    runs.len()
                ),
                result,
            }
        })
        .collect()
}

/// The median (the mean of the middle two for an even count).
pub(crate) fn median(mut sorted: Vec<f64>) -> Option<f64> {
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}
