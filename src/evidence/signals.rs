//! The signal catalogue: a USE pack for the node (CPU, memory, swap, filesystems, disks,
//! network, file descriptors, availability, reboots, clock), each PromQL with `{sel}` (the
//! instance matcher) and `{w}` (the rate window), and the alert's own rule expression.

use super::score::Saturation;
use crate::model::alert::Alert;
use crate::model::evidence::Resource;

/// One signal of the USE pack: PromQL with `{sel}` (the instance matcher) and `{w}` (the
/// rate window), and how to read it.
pub struct Signal {
    /// What it measures.
    pub resource: Resource,
    /// Its name on a report.
    pub name: &'static str,
    /// `%`, `bytes`, `/s`, `s`, or empty.
    pub unit: &'static str,
    /// The PromQL.
    pub expr: &'static str,
    /// The label that tells the series of one signal apart (mode, mountpoint, ...).
    pub by: Option<&'static str>,
    /// When a value counts as saturated.
    pub saturation: Option<Saturation>,
    /// One unit of spread, at least (see [`super::score::score`]).
    pub floor: f64,
}

/// The catalogue.
pub const SIGNALS: &[Signal] = &[
    Signal {
        resource: Resource::Cpu,
        name: "CPU busy %",
        unit: "%",
        expr: "100 * (1 - sum by (instance) (rate(node_cpu_seconds_total{mode=~\"idle|iowait\",{sel}}[{w}])) / count by (instance) (node_cpu_seconds_total{mode=\"idle\",{sel}}))",
        by: None,
        saturation: Some(Saturation::Above(90.0)),
        floor: 5.0,
    },
    Signal {
        resource: Resource::Cpu,
        name: "CPU %",
        unit: "%",
        expr: "100 * avg by (instance, mode) (rate(node_cpu_seconds_total{mode=~\"user|nice|system|steal\",{sel}}[{w}]))",
        by: Some("mode"),
        saturation: None,
        floor: 5.0,
    },
    // Time the CPUs sat idle waiting for I/O: a disk's pressure, not CPU work (USE).
    Signal {
        resource: Resource::DiskIo,
        name: "CPU iowait %",
        unit: "%",
        expr: "100 * avg by (instance) (rate(node_cpu_seconds_total{mode=\"iowait\",{sel}}[{w}]))",
        by: None,
        saturation: None,
        floor: 5.0,
    },
    Signal {
        resource: Resource::Cpu,
        name: "load1 per core",
        unit: "",
        expr: "node_load1{{sel}} / on (instance) count by (instance) (node_cpu_seconds_total{mode=\"idle\",{sel}})",
        by: None,
        saturation: Some(Saturation::Above(2.0)),
        floor: 0.25,
    },
    Signal {
        resource: Resource::Memory,
        name: "memory available %",
        unit: "%",
        expr: "100 * node_memory_MemAvailable_bytes{{sel}} / node_memory_MemTotal_bytes{{sel}}",
        by: None,
        saturation: Some(Saturation::Below(10.0)),
        floor: 3.0,
    },
    Signal {
        resource: Resource::Memory,
        name: "OOM kills",
        unit: "",
        expr: "increase(node_vmstat_oom_kill{{sel}}[{w}])",
        by: None,
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::Memory,
        name: "major page faults",
        unit: "/s",
        expr: "rate(node_vmstat_pgmajfault{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 20.0,
    },
    Signal {
        resource: Resource::Swap,
        name: "swap in",
        unit: "pages/s",
        expr: "rate(node_vmstat_pswpin{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 10.0,
    },
    Signal {
        resource: Resource::Swap,
        name: "swap out",
        unit: "pages/s",
        expr: "rate(node_vmstat_pswpout{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 10.0,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem used %",
        unit: "%",
        expr: "100 * (1 - node_filesystem_avail_bytes{{sel}} / node_filesystem_size_bytes{{sel}})",
        by: Some("mountpoint"),
        saturation: Some(Saturation::Above(90.0)),
        floor: 2.0,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem free",
        unit: "bytes",
        expr: "node_filesystem_avail_bytes{{sel}}",
        by: Some("mountpoint"),
        saturation: None,
        floor: 1e8,
    },
    Signal {
        resource: Resource::DiskSpace,
        name: "filesystem read-only",
        unit: "",
        expr: "node_filesystem_readonly{{sel},fstype!~\"squashfs|iso9660|nsfs\",mountpoint!~\"/(sys|proc)(/.*)?\"}",
        by: Some("mountpoint"),
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::DiskIo,
        name: "disk busy %",
        unit: "%",
        expr: "100 * rate(node_disk_io_time_seconds_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: Some(Saturation::Above(80.0)),
        floor: 5.0,
    },
    Signal {
        resource: Resource::DiskIo,
        name: "disk await",
        unit: "s",
        expr: "(rate(node_disk_read_time_seconds_total{{sel}}[{w}]) + rate(node_disk_write_time_seconds_total{{sel}}[{w}])) / (rate(node_disk_reads_completed_total{{sel}}[{w}]) + rate(node_disk_writes_completed_total{{sel}}[{w}]))",
        by: Some("device"),
        saturation: None,
        floor: 0.005,
    },
    Signal {
        resource: Resource::Network,
        name: "network errors",
        unit: "/s",
        expr: "rate(node_network_receive_errs_total{{sel}}[{w}]) + rate(node_network_transmit_errs_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: None,
        floor: 1.0,
    },
    Signal {
        resource: Resource::Network,
        name: "network drops",
        unit: "/s",
        expr: "rate(node_network_receive_drop_total{{sel}}[{w}]) + rate(node_network_transmit_drop_total{{sel}}[{w}])",
        by: Some("device"),
        saturation: None,
        floor: 1.0,
    },
    Signal {
        resource: Resource::Network,
        name: "TCP retransmits",
        unit: "/s",
        expr: "rate(node_netstat_Tcp_RetransSegs{{sel}}[{w}])",
        by: None,
        saturation: None,
        floor: 5.0,
    },
    Signal {
        resource: Resource::Process,
        name: "file descriptors used %",
        unit: "%",
        expr: "100 * node_filefd_allocated{{sel}} / node_filefd_maximum{{sel}}",
        by: None,
        saturation: Some(Saturation::Above(90.0)),
        floor: 2.0,
    },
    Signal {
        resource: Resource::Availability,
        name: "up",
        unit: "",
        expr: "up{{sel}}",
        by: None,
        saturation: Some(Saturation::Below(0.5)),
        floor: 0.5,
    },
    Signal {
        resource: Resource::Availability,
        name: "scrape duration",
        unit: "s",
        expr: "scrape_duration_seconds{{sel}}",
        by: None,
        saturation: None,
        floor: 0.25,
    },
    Signal {
        resource: Resource::System,
        name: "reboots",
        unit: "",
        expr: "changes(node_boot_time_seconds{{sel}}[{w}])",
        by: None,
        saturation: Some(Saturation::NonZero),
        floor: 1.0,
    },
    Signal {
        resource: Resource::System,
        name: "clock offset",
        unit: "s",
        expr: "abs(node_timex_offset_seconds{{sel}})",
        by: None,
        saturation: Some(Saturation::Above(0.5)),
        floor: 0.05,
    },
];

/// A signal of the catalogue by name.
pub fn signal(name: &str) -> Option<&'static Signal> {
    SIGNALS.iter().find(|s| s.name == name)
}

/// The alert's own rule expression: `g0.expr` of its `generatorURL`, or an `expr`
/// annotation.
pub fn rule_expression(alert: &Alert) -> Option<String> {
    if let Some(expr) = alert
        .annotations
        .get("expr")
        .filter(|e| !e.trim().is_empty())
    {
        return Some(expr.clone());
    }
    let query = alert.generator_url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "g0.expr").then(|| percent_decode(value))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_expression_comes_from_the_generator_url_or_an_annotation() {
        let mut alert = Alert {
            generator_url: "http://prom:9090/graph?g0.expr=node_load1+%3E+2&g0.tab=1".to_owned(),
            ..Alert::default()
        };
        assert_eq!(rule_expression(&alert).as_deref(), Some("node_load1 > 2"));
        alert.annotations.insert("expr".into(), "up == 0".into());
        assert_eq!(rule_expression(&alert).as_deref(), Some("up == 0"));
    }
}
