//! The machine a bench runs on: what it is (CPU model, cores, kernel, commit), how busy it was, and the
//! verdict whether the figures of a run may be kept. A run is busy when the 1-minute load average was
//! too high as it started, or when processes outside the bench's own process tree and its named helpers
//! (PostgreSQL, the S3 server) used too much CPU time while it ran.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Above this 1-minute load average per core before the start, the machine is busy.
pub const DEFAULT_MAX_LOAD_PER_CORE: f64 = 0.25;
/// Above this share of all cores used by outside processes during the run, the machine was busy.
pub const DEFAULT_MAX_OUTSIDE_SHARE: f64 = 0.10;
/// Processes that serve the bench without being its children, by command name (`comm`) or a word of
/// their command line.
pub const DEFAULT_HELPERS: &str = "postgres,moto_server";

/// What the machine is, as printed before a run and written with its results.
#[derive(Debug, Clone)]
pub struct Environment {
    /// `model name` of the first CPU in `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Online cores.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `git rev-parse --short HEAD` of the checkout the bench runs in, with `-dirty` when it has changes.
    pub commit: String,
    /// The 1-, 5- and 15-minute load averages as the run began.
    pub load_before: [f64; 3],
}

impl Environment {
    /// Reads the environment now.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or("unknown".to_string(), |(_, model)| model.trim().to_string());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".to_string(), |k| k.trim().to_string());
        Self {
            cpu_model,
            cores: cores(),
            kernel,
            commit: commit(),
            load_before: load_average(),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!(
            "machine: {}, {} cores, kernel {}, commit {}, load average {:.2} {:.2} {:.2}",
            self.cpu_model,
            self.cores,
            self.kernel,
            self.commit,
            self.load_before[0],
            self.load_before[1],
            self.load_before[2]
        )
    }

    /// A JSON object of the environment and `load_after`, for the results file.
    pub fn json(&self, load_after: [f64; 3], outside_share: f64) -> String {
        format!(
            "{{\"environment\":{{\"cpu_model\":{:?},\"cores\":{},\"kernel\":{:?},\"commit\":{:?},\
             \"load_before\":[{:.2},{:.2},{:.2}],\"load_after\":[{:.2},{:.2},{:.2}],\
             \"outside_cpu_share\":{:.3}}}}}",
            self.cpu_model,
            self.cores,
            self.kernel,
            self.commit,
            self.load_before[0],
            self.load_before[1],
            self.load_before[2],
            load_after[0],
            load_after[1],
            load_after[2],
            outside_share
        )
    }
}

/// Online cores.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn commit() -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".to_string();
    };
    match git(&["status", "--porcelain", "--untracked-files=no"]) {
        Some(changes) if !changes.is_empty() => format!("{head}-dirty"),
        _ => head,
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<f64>().unwrap_or(0.0));
    [(); 3].map(|_| fields.next().unwrap_or(0.0))
}

/// Clock ticks per second of the CPU times in `/proc`.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf reads a constant of the system and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// What `/proc/<pid>/stat` says of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The command name (at most 15 bytes).
    pub comm: String,
    /// The parent's pid.
    pub ppid: u32,
    /// User and system time of the process, and of its children it has waited for, in clock ticks.
    pub ticks: u64,
    /// User and system time of the process alone.
    pub own_ticks: u64,
}

/// Parses a `/proc/<pid>/stat` line (the command name may hold spaces and parentheses).
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    // After the name: state (field 3), ppid (4), ..., utime (14), stime (15), cutime (16), cstime (17).
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let own_ticks = field(14)? + field(15)?;
    Some(ProcStat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: own_ticks + field(16)? + field(17)?,
        own_ticks,
    })
}

/// One process's CPU time in seconds (user and system, its own threads only); 0 when it is gone.
pub fn process_cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|line| parse_stat(&line))
        .map_or(0.0, |s| s.own_ticks as f64 / clock_ticks())
}

/// Seconds the whole machine's cores were busy (all but idle and I/O wait, from `/proc/stat`).
pub fn machine_busy_seconds() -> f64 {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / clock_ticks()
}

/// Every process of the machine at one moment.
#[derive(Debug, Clone, Default)]
pub struct Processes {
    by_pid: HashMap<u32, ProcStat>,
    cmdlines: HashMap<u32, String>,
}

impl Processes {
    /// Reads `/proc` now.
    pub fn read() -> Self {
        let mut by_pid = HashMap::new();
        let mut cmdlines = HashMap::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|l| parse_stat(&l))
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            cmdlines.insert(pid, String::from_utf8_lossy(&cmdline).replace('\0', " "));
            by_pid.insert(pid, stat);
        }
        Self { by_pid, cmdlines }
    }

    /// Builds a snapshot from parsed entries (for tests).
    pub fn from_entries(entries: impl IntoIterator<Item = (u32, ProcStat, String)>) -> Self {
        let mut snapshot = Self::default();
        for (pid, stat, cmdline) in entries {
            snapshot.by_pid.insert(pid, stat);
            snapshot.cmdlines.insert(pid, cmdline);
        }
        snapshot
    }

    /// The processes that work for the bench: `root` and its descendants, and every process whose
    /// command name or command line names one of `helpers`. Kernel threads (children of pid 2, and pid
    /// 2 itself) are counted as the bench's too: their work (flushes, interrupts) is mostly caused by it.
    pub fn working_for(&self, root: u32, helpers: &[String]) -> HashSet<u32> {
        let mut own: HashSet<u32> = HashSet::new();
        for (&pid, stat) in &self.by_pid {
            let cmdline = self.cmdlines.get(&pid).map_or("", String::as_str);
            let helper = helpers.iter().any(|h| {
                !h.is_empty()
                    && (stat.comm == *h || cmdline.split(' ').any(|w| w.ends_with(h.as_str())))
            });
            if helper || pid == 2 || stat.ppid == 2 || self.descends_from(pid, root) {
                own.insert(pid);
            }
        }
        own
    }

    fn descends_from(&self, mut pid: u32, root: u32) -> bool {
        for _ in 0..64 {
            if pid == root {
                return true;
            }
            match self.by_pid.get(&pid) {
                Some(stat) if stat.ppid != 0 && stat.ppid != pid => pid = stat.ppid,
                _ => return false,
            }
        }
        false
    }
}

/// Clock ticks used between `before` and `after` by processes outside `own`. A process that appeared in
/// between counts whole; one that ended counts through its parent's children's time, which holds all of
/// its time, so what it had used by `before` is taken off again.
pub fn outside_ticks(before: &Processes, after: &Processes, own: &HashSet<u32>) -> u64 {
    let grown: u64 = after
        .by_pid
        .iter()
        .filter(|(pid, _)| !own.contains(pid))
        .map(|(pid, now)| {
            let then = before.by_pid.get(pid).map_or(0, |s| s.ticks);
            now.ticks.saturating_sub(then)
        })
        .sum();
    let ended: u64 = before
        .by_pid
        .iter()
        .filter(|(pid, _)| !own.contains(pid) && !after.by_pid.contains_key(pid))
        .map(|(_, then)| then.ticks)
        .sum();
    grown.saturating_sub(ended)
}

/// Whether a run's figures may be kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The machine was quiet.
    Quiet,
    /// The machine was busy: why, in one line.
    Busy(String),
}

/// The limits a run is held to, from the environment: `LOAD_MAX_LOADAVG` (1-minute load average at the
/// start; default 0.25 per core), `LOAD_MAX_OUTSIDE_CPU` (share of all cores used by outside processes
/// during the run; default 0.10), `LOAD_BUSY_HELPERS` (default `postgres,moto_server`) and
/// `LOAD_ALLOW_BUSY=1` (run anyway; results are marked busy and not written).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Highest 1-minute load average at the start.
    pub max_load: f64,
    /// Highest share of all cores used by outside processes.
    pub max_outside_share: f64,
    /// Names of processes that work for the bench without being its children.
    pub helpers: Vec<String>,
    /// Run on a busy machine (results are never written then).
    pub allow_busy: bool,
}

impl Limits {
    /// The limits from the environment.
    pub fn from_env(cores: usize) -> Self {
        let number = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .map(|v| {
                    v.parse::<f64>()
                        .unwrap_or_else(|_| panic!("{name}: a number"))
                })
                .unwrap_or(default)
        };
        Self {
            max_load: number("LOAD_MAX_LOADAVG", DEFAULT_MAX_LOAD_PER_CORE * cores as f64),
            max_outside_share: number("LOAD_MAX_OUTSIDE_CPU", DEFAULT_MAX_OUTSIDE_SHARE),
            helpers: std::env::var("LOAD_BUSY_HELPERS")
                .unwrap_or_else(|_| DEFAULT_HELPERS.to_string())
                .split(',')
                .map(|h| h.trim().to_string())
                .collect(),
            allow_busy: std::env::var("LOAD_ALLOW_BUSY").is_ok_and(|v| v == "1"),
        }
    }

    /// The verdict before the start, on the 1-minute load average.
    pub fn before(&self, load_1m: f64) -> Verdict {
        if load_1m > self.max_load {
            Verdict::Busy(format!(
                "the machine is busy: 1-minute load average {load_1m:.2} > {:.2} (LOAD_MAX_LOADAVG) before the start",
                self.max_load
            ))
        } else {
            Verdict::Quiet
        }
    }

    /// The verdict after the run, on the share of all cores that outside processes used.
    pub fn after(&self, outside_share: f64) -> Verdict {
        if outside_share > self.max_outside_share {
            Verdict::Busy(format!(
                "the machine was busy: processes outside the bench used {:.1} % of all cores during the run \
                 (> {:.1} %, LOAD_MAX_OUTSIDE_CPU)",
                outside_share * 100.0,
                self.max_outside_share * 100.0
            ))
        } else {
            Verdict::Quiet
        }
    }
}

/// The CPU time of processes outside the bench over a run: start it before the first cell, read it after
/// the last.
pub struct OutsideCpu {
    before: Processes,
    at: Instant,
    root: u32,
    helpers: Vec<String>,
}

impl OutsideCpu {
    /// Starts counting for this process's tree and `helpers`.
    pub fn start(helpers: &[String]) -> Self {
        Self {
            before: Processes::read(),
            at: Instant::now(),
            root: std::process::id(),
            helpers: helpers.to_vec(),
        }
    }

    /// The share of all cores outside processes used since the start (0 to 1).
    pub fn share(&self) -> f64 {
        let after = Processes::read();
        let mut own = after.working_for(self.root, &self.helpers);
        own.extend(self.before.working_for(self.root, &self.helpers));
        let ticks = outside_ticks(&self.before, &after, &own);
        let capacity = self.at.elapsed().as_secs_f64() * cores() as f64 * clock_ticks();
        if capacity > 0.0 {
            ticks as f64 / capacity
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(comm: &str, ppid: u32, ticks: u64) -> ProcStat {
        ProcStat {
            comm: comm.to_string(),
            ppid,
            ticks,
            own_ticks: ticks,
        }
    }

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let line = "4242 (tokio (rt) 1) S 17 4242 17 0 -1 4194560 100 0 0 0 250 40 7 3 20 0 9 0 1000 \
                    12345 678 18446744073709551615";
        let parsed = parse_stat(line).unwrap();
        assert_eq!(
            parsed,
            ProcStat {
                comm: "tokio (rt) 1".into(),
                ppid: 17,
                ticks: 300,
                own_ticks: 290
            }
        );
        assert_eq!(parse_stat("4242 (cut"), None);
    }

    #[test]
    fn only_processes_outside_the_tree_and_the_helpers_count() {
        let entries = |bench: u64, child: u64, postgres: u64, compiler: u64, new: Option<u64>| {
            let mut all = vec![
                (1, stat("init", 0, 0), "/sbin/init".to_string()),
                (2, stat("kthreadd", 0, 0), String::new()),
                (30, stat("kworker/0:1", 2, bench), String::new()),
                (
                    100,
                    stat("load", 1, bench),
                    "target/release/deps/load".to_string(),
                ),
                (
                    101,
                    stat("homestead", 100, child),
                    "homestead --data-dir x".to_string(),
                ),
                (
                    200,
                    stat("postgres", 1, postgres),
                    "postgres: bench db".to_string(),
                ),
                (
                    210,
                    stat("python3", 1, postgres),
                    "python3 /venv/bin/moto_server -p 1".to_string(),
                ),
                (
                    300,
                    stat("rustc", 1, compiler),
                    "rustc --edition 2024".to_string(),
                ),
            ];
            if let Some(ticks) = new {
                all.push((301, stat("cc", 300, ticks), "cc -O2".to_string()));
            }
            Processes::from_entries(all)
        };
        let helpers = vec!["postgres".to_string(), "moto_server".to_string()];
        let before = entries(10, 10, 10, 10, None);
        let quiet = entries(500, 900, 700, 10, None);
        let own = quiet.working_for(100, &helpers);
        assert_eq!(own, HashSet::from([2, 30, 100, 101, 200, 210]));
        assert_eq!(outside_ticks(&before, &quiet, &own), 0);
        // A compiler that ran beside the bench, and a process it started meanwhile, count whole.
        let busy = entries(500, 900, 700, 160, Some(40));
        let own = busy.working_for(100, &helpers);
        assert_eq!(outside_ticks(&before, &busy, &own), 150 + 40);
        // The process that started has ended and its parent has waited for it: its 40 ticks and its
        // 25 ticks before are in the parent's children's time, and only the 40 count.
        let with_child = entries(10, 10, 10, 10, Some(25));
        let reaped = entries(500, 900, 700, 160 + 40, None);
        assert_eq!(outside_ticks(&with_child, &reaped, &own), 150 + 40 - 25);
    }

    #[test]
    fn a_busy_machine_is_refused_before_and_after() {
        let limits = Limits {
            max_load: 0.5,
            max_outside_share: 0.1,
            helpers: Vec::new(),
            allow_busy: false,
        };
        assert_eq!(limits.before(0.49), Verdict::Quiet);
        let Verdict::Busy(why) = limits.before(1.7) else {
            panic!("a load of 1.7 is busy");
        };
        assert!(why.contains("1.70 > 0.50"), "{why}");
        assert_eq!(limits.after(0.05), Verdict::Quiet);
        let Verdict::Busy(why) = limits.after(0.25) else {
            panic!("25 % outside is busy");
        };
        assert!(why.contains("25.0 %"), "{why}");
    }
}
