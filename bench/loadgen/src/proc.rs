//! Broker process statistics from /proc: RSS and CPU time of a pid and all its descendants
//! (so `--broker-pid` may be an nginx master: its workers are counted too).

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct ProcStats {
    pub rss_kib: u64,
    pub cpu_secs: f64,
    pub processes: u32,
}

fn clk_tck() -> f64 {
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// (ppid, utime+stime ticks) from /proc/<pid>/stat.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid = field 4, utime = 14, stime = 15
    let ppid = f.get(1)?.parse().ok()?;
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, ut + st))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn tree(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = vec![];
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, _)) = stat(pid) {
                    all.push((pid, ppid));
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < 256 {
        let p = out[i];
        for &(c, pp) in &all {
            if pp == p && !out.contains(&c) {
                out.push(c);
            }
        }
        i += 1;
    }
    out
}

pub fn sample(pid: Option<u32>) -> Option<ProcStats> {
    let pid = pid?;
    stat(pid)?;
    let tck = clk_tck();
    let mut s = ProcStats::default();
    for p in tree(pid) {
        if let Some((_, ticks)) = stat(p) {
            s.cpu_secs += ticks as f64 / tck;
            s.rss_kib += rss_kib(p);
            s.processes += 1;
        }
    }
    Some(s)
}

/// CPU time (user + system) used by this process so far, all threads.
pub fn self_cpu_secs() -> f64 {
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(u.ru_utime) + tv(u.ru_stime)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> u64 {
    unsafe {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            if r.rlim_cur < r.rlim_max {
                let want = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                    return want.rlim_cur as u64;
                }
            }
            return r.rlim_cur as u64;
        }
    }
    0
}
