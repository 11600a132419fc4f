//! Process metrics read from `/proc` at scrape time: resident and virtual memory, CPU time,
//! open file descriptors and the process start time, under the names every Prometheus client
//! library uses (`process_*`), so stock dashboards and alerts work unchanged.
//!
//! Nothing here polls: the numbers are read when `/metrics` is encoded. On a system without
//! `/proc` (or where a file is unreadable) the affected series are left out of the scrape
//! rather than reported as a wrong number.

use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// `AT_PAGESZ` and `AT_CLKTCK` from `<elf.h>`: the keys of the auxiliary vector entries that
/// hold the page size and the clock tick rate (what `sysconf` would answer, read without libc).
const AT_PAGESZ: u64 = 6;
const AT_CLKTCK: u64 = 17;

/// The collector registered on the root registry; fixed facts are read once, at construction.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    page_size: Option<u64>,
    clock_ticks: Option<u64>,
    start_time_seconds: f64,
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        let aux = std::fs::read("/proc/self/auxv").ok();
        let page_size = aux.as_deref().and_then(|a| auxv_value(a, AT_PAGESZ));
        let clock_ticks = aux.as_deref().and_then(|a| auxv_value(a, AT_CLKTCK));
        let start_time_seconds = read_start_time(clock_ticks).unwrap_or_else(|| {
            // Without /proc the closest known time is now: metrics are set up at start-up.
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0)
        });
        if page_size.is_none() {
            tracing::debug!("no page size in /proc/self/auxv: memory metrics are left out");
        }
        Self {
            page_size,
            clock_ticks,
            start_time_seconds,
        }
    }

    /// The process start time as seconds since the Unix epoch.
    pub(crate) fn start_time_seconds(&self) -> f64 {
        self.start_time_seconds
    }

    /// Resident set size in bytes, from `/proc/self/statm`.
    pub(crate) fn resident_bytes(&self) -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let (_, resident) = parse_statm(&statm)?;
        resident.checked_mul(self.page_size?)
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok();
        if let (Some((virt, res)), Some(page)) =
            (statm.as_deref().and_then(parse_statm), self.page_size)
        {
            let gauge = ConstGauge::new(clamp_i64(res.saturating_mul(page)));
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size in bytes (from /proc/self/statm, read at scrape time).",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?)?;
            let gauge = ConstGauge::new(clamp_i64(virt.saturating_mul(page)));
            gauge.encode(encoder.encode_descriptor(
                "process_virtual_memory",
                "Virtual memory size in bytes (from /proc/self/statm, read at scrape time).",
                Some(&Unit::Bytes),
                gauge.metric_type(),
            )?)?;
        }
        let cpu = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|s| parse_stat(&s));
        if let (Some(stat), Some(hz)) = (cpu, self.clock_ticks.filter(|h| *h > 0)) {
            let seconds = (stat.utime + stat.stime) as f64 / hz as f64;
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent in seconds.",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?)?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let gauge = ConstGauge::new(clamp_i64(dir.count() as u64));
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        let gauge = ConstGauge::new(self.start_time_seconds);
        gauge.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the Unix epoch in seconds.",
            Some(&Unit::Seconds),
            gauge.metric_type(),
        )?)?;
        Ok(())
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `(virtual pages, resident pages)`: the first two fields of `/proc/<pid>/statm`.
fn parse_statm(s: &str) -> Option<(u64, u64)> {
    let mut it = s.split_ascii_whitespace();
    let size = it.next()?.parse().ok()?;
    let resident = it.next()?.parse().ok()?;
    Some((size, resident))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

/// The fields of `/proc/<pid>/stat` we use. The command name (field 2) is in parentheses and
/// may itself hold spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(s: &str) -> Option<Stat> {
    let rest = &s[s.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let get = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: get(14)?,
        stime: get(15)?,
        start_ticks: get(22)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn parse_btime(s: &str) -> Option<u64> {
    s.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn read_start_time(clock_ticks: Option<u64>) -> Option<f64> {
    let hz = clock_ticks.filter(|h| *h > 0)?;
    let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let boot = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
    Some(boot as f64 + stat.start_ticks as f64 / hz as f64)
}

/// Looks `key` up in a native-endian auxiliary vector (pairs of machine words).
fn auxv_value(aux: &[u8], key: u64) -> Option<u64> {
    const W: usize = std::mem::size_of::<usize>();
    let word = |b: &[u8]| -> Option<u64> {
        let mut buf = [0u8; W];
        buf.copy_from_slice(b.get(..W)?);
        Some(usize::from_ne_bytes(buf) as u64)
    };
    aux.chunks_exact(2 * W)
        .map(|pair| (word(&pair[..W]), word(&pair[W..])))
        .take_while(|(k, _)| *k != Some(0))
        .find_map(|(k, v)| if k == Some(key) { v } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_statm() {
        assert_eq!(parse_statm("2345 678 90 1 0 300 0\n"), Some((2345, 678)));
        assert_eq!(parse_statm("garbage"), None);
        assert_eq!(parse_statm(""), None);
    }

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "42 (we) ird (name)) S 1 42 42 0 -1 4194560 100 0 0 0 \
                    7 3 0 0 20 0 1 0 12345 1000 10 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 7,
                stime: 3,
                start_ticks: 12345
            })
        );
        assert_eq!(parse_stat("no parens here"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn parses_btime() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
    }

    #[test]
    fn auxv_lookup() {
        let mut aux = Vec::new();
        for (k, v) in [
            (3usize, 64usize),
            (AT_PAGESZ as usize, 4096),
            (0, 0),
            (AT_CLKTCK as usize, 1),
        ] {
            aux.extend_from_slice(&k.to_ne_bytes());
            aux.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_value(&aux, AT_PAGESZ), Some(4096));
        assert_eq!(
            auxv_value(&aux, AT_CLKTCK),
            None,
            "entries after AT_NULL are ignored"
        );
        assert_eq!(auxv_value(&aux[..5], AT_PAGESZ), None);
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessCollector::new();
        let rss = p
            .resident_bytes()
            .expect("this test runs on Linux with /proc");
        assert!(
            rss > 1024 * 1024,
            "a test binary is bigger than 1 MiB resident: {rss}"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time_seconds();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
    }
}
