//! What the benches read about a process from Linux's `/proc`: CPU time, peak RSS,
//! whether it exited, and the processes of a name.

/// utime + stime of a process in seconds, all its threads (None once it is gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

/// Clock ticks per second, the unit of the CPU times in `/proc/PID/stat`.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// True when the process is gone or has exited and is not reaped yet (a zombie).
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// The `/proc` file of a process's status (memory figures among them).
pub fn status_path(pid: u32) -> String {
    format!("/proc/{pid}/status")
}

/// Peak resident set size (VmHWM) in KiB, from the text of `/proc/PID/status`.
pub fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak resident set size (VmHWM) of a process in KiB (None once it is gone).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    vm_hwm_kib(&std::fs::read_to_string(status_path(pid)).ok()?)
}

/// Pids of the processes whose `comm` is `name`.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        (comm.trim_end() == name).then_some(pid)
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_rss_is_read_from_the_vmhwm_line() {
        let status = "Name:\tswitchyard\nVmPeak:\t  20000 kB\nVmHWM:\t   12345 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(12345));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_a_peak_rss_and_runs() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).is_some_and(|s| s >= 0.0));
        assert!(peak_rss_kib(pid).is_some_and(|k| k > 0));
        assert!(!exited(pid));
    }
}
