//! Text for merged reports (`mphang merge`): the header naming the hosts and their reports, and
//! one line per host above its processes.

use super::Report;
use crate::model::Pid;
use std::io::Write;

/// `mphang merge of 3 reports from 3 hosts (node-a, node-b, node-c): ...`.
pub fn header(report: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    let s = &report.snapshot;
    let nthreads: usize = s.processes.iter().map(|p| p.threads.len()).sum();
    let reports: usize = s.hosts.iter().map(|h| h.sources.len()).sum();
    let names: Vec<&str> = s.hosts.iter().map(|h| h.name()).collect();
    let times: Vec<u64> = s
        .hosts
        .iter()
        .flat_map(|h| h.sources.iter().map(|x| x.taken_at_ms))
        .collect();
    let spread = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
    writeln!(
        out,
        "mphang merge of {reports} report{} from {} host{} ({}): {} processes, {} threads; taken within {:.1} s of each other",
        if reports == 1 { "" } else { "s" },
        s.hosts.len(),
        if s.hosts.len() == 1 { "" } else { "s" },
        names.join(", "),
        s.processes.len(),
        nthreads,
        spread as f64 / 1000.0
    )
}

/// `host node-b: report node-b.json (mphang 0.1.0, root node-b/2), boot 1c2f…`.
pub fn host_line(report: &Report, pid: Pid, out: &mut dyn Write) -> std::io::Result<()> {
    let Some(h) = report.snapshot.host_of(pid) else {
        return Ok(());
    };
    let srcs: Vec<String> = h
        .sources
        .iter()
        .map(|s| format!("{} (mphang {}, root {})", s.file, s.mphang_version, s.root))
        .collect();
    writeln!(
        out,
        "host {}: {}{}",
        h.name(),
        srcs.join(", "),
        h.boot_id
            .as_deref()
            .map(|b| format!(", boot {}", &b[..b.len().min(8)]))
            .unwrap_or_default()
    )
}
