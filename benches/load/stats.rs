//! Figures: percentiles, CPU time of a process and of a CPU set, RSS.

use super::*;

/// Nearest-rank percentile (`p` from 0 to 100) of sorted samples.
pub fn pct(sorted: &[u64], p: f64) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Nanoseconds to milliseconds.
pub fn ms(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e6)
}

/// Nanoseconds to microseconds.
pub fn us(ns: Option<u64>) -> Option<f64> {
    ns.map(|v| v as f64 / 1e3)
}

pub(crate) fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process (`None`: this one), in clock ticks.
pub(crate) fn cpu_ticks(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which may hold spaces: state is 3rd.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// CPU time a process spends over an interval, as % of one core.
pub struct CpuMeter {
    pid: Option<u32>,
    t0: Instant,
    ticks0: Option<u64>,
}

impl CpuMeter {
    /// Starts measuring `pid` (`None`: the load generator itself).
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            t0: Instant::now(),
            ticks0: cpu_ticks(pid),
        }
    }

    /// % of one core since [`CpuMeter::start`] (200 = two cores busy).
    pub fn percent(&self) -> Option<f64> {
        let used = self.seconds()?;
        let wall = self.t0.elapsed().as_secs_f64();
        (wall > 0.0).then(|| 100.0 * used / wall)
    }

    /// CPU-seconds used since [`CpuMeter::start`], to the clock tick.
    pub fn seconds(&self) -> Option<f64> {
        Some(cpu_ticks(self.pid)?.checked_sub(self.ticks0?)? as f64 / clock_ticks())
    }
}

/// Busy and total jiffies of some CPUs (`None`: all) from `/proc/stat`,
/// whoever used them: softirq work on loopback traffic is charged to no
/// process, so this is what tells whether a pinned side was saturated.
pub(crate) fn cpu_jiffies(cpus: Option<&[usize]>) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let (mut busy, mut total) = (0, 0);
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        let (id, fields) = rest.split_once(' ')?;
        let wanted = match cpus {
            None => id.is_empty(),
            Some(set) => id.parse::<usize>().is_ok_and(|c| set.contains(&c)),
        };
        if !wanted {
            continue;
        }
        // user nice system idle iowait irq softirq steal
        let f: Vec<u64> = fields
            .split_whitespace()
            .take(8)
            .filter_map(|v| v.parse().ok())
            .collect();
        if f.len() < 8 {
            return None;
        }
        busy += f[0] + f[1] + f[2] + f[5] + f[6];
        total += f.iter().sum::<u64>();
    }
    (total > 0).then_some((busy, total))
}

/// How busy a set of CPUs was over an interval, all processes and interrupt
/// work included, as % (100 = every CPU of the set busy all the time).
pub struct CpuSetMeter {
    cpus: Option<Vec<usize>>,
    start: Option<(u64, u64)>,
}

impl CpuSetMeter {
    /// Starts measuring `cpus` (`None`: the whole machine).
    pub fn start(cpus: Option<Vec<usize>>) -> Self {
        let start = cpu_jiffies(cpus.as_deref());
        Self { cpus, start }
    }

    /// % busy since [`CpuSetMeter::start`].
    pub fn percent(&self) -> Option<f64> {
        let (b0, t0) = self.start?;
        let (b1, t1) = cpu_jiffies(self.cpus.as_deref())?;
        let total = t1.checked_sub(t0)?;
        (total > 0).then(|| 100.0 * b1.saturating_sub(b0) as f64 / total as f64)
    }
}

/// Name of the figure for CPU time used by neither process.
pub(crate) const OTHER_CPU: &str = "other CPU (system - both processes)";

/// "Other CPU" above this (% of one core) means something else ran: loopback
/// softirq work alone stays well below it.
pub(crate) const DISTURBED_OTHER_CPU: f64 = 30.0;

/// Meters over one measured phase: both processes and, when pinned, both
/// CPU sets.
pub struct PhaseCpu {
    generator: CpuMeter,
    server: CpuMeter,
    generator_cpus: Option<CpuSetMeter>,
    server_cpus: Option<CpuSetMeter>,
    machine: CpuSetMeter,
}

impl PhaseCpu {
    /// Starts every meter; `server` is the server's pid if known.
    pub fn start(setup: &Setup, server: Option<u32>) -> Self {
        Self {
            generator: CpuMeter::start(None),
            server: CpuMeter::start(server),
            generator_cpus: setup
                .client_cpus
                .as_deref()
                .map(|c| CpuSetMeter::start(Some(parse_cpus(c)))),
            server_cpus: setup
                .server_cpus
                .as_deref()
                .map(|c| CpuSetMeter::start(Some(parse_cpus(c)))),
            machine: CpuSetMeter::start(None),
        }
    }

    /// The server's CPU-seconds since [`PhaseCpu::start`] (`None` without its pid).
    pub fn server_seconds(&self) -> Option<f64> {
        self.server.seconds()
    }

    /// The figures, names prefixed with `prefix` (e.g. `"connect: "`).
    /// "other CPU" is the machine's busy time less both processes', in % of
    /// one core: loopback softirq work (some tens of %) plus anything else
    /// running; far more than that means the run was disturbed.
    pub fn metrics(&self, prefix: &'static str) -> Vec<Metric> {
        let machine = self.machine.percent();
        let (generator, server) = (self.generator.percent(), self.server.percent());
        let other = machine.map(|m| {
            // Clock-tick granularity can make a short phase's figure
            // slightly negative.
            (m * online_cpus() as f64 - generator.unwrap_or(0.0) - server.unwrap_or(0.0)).max(0.0)
        });
        let name = |n: &'static str| -> &'static str {
            if prefix.is_empty() {
                n
            } else {
                Box::leak(format!("{prefix}{n}").into_boxed_str())
            }
        };
        vec![
            metric(
                name("load generator CPU (process)"),
                "% of 1 core",
                Better::Neither,
                generator,
            ),
            metric(
                name("server CPU (process)"),
                "% of 1 core",
                Better::Neither,
                server,
            ),
            metric(
                name("load generator CPUs busy (system)"),
                "%",
                Better::Neither,
                self.generator_cpus.as_ref().and_then(CpuSetMeter::percent),
            ),
            metric(
                name("server CPUs busy (system)"),
                "%",
                Better::Neither,
                self.server_cpus.as_ref().and_then(CpuSetMeter::percent),
            ),
            metric(
                name("all CPUs busy (system)"),
                "%",
                Better::Neither,
                machine,
            ),
            metric(name(OTHER_CPU), "% of 1 core", Better::Neither, other),
        ]
    }
}

/// CPUs online (the `cpuN` lines of `/proc/stat`).
pub(crate) fn online_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| {
            s.lines()
                .filter(|l| {
                    l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)
                })
                .count()
        })
        .unwrap_or(1)
        .max(1)
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
