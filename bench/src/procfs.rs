//! What a process costs, read from `/proc`: memory (VmRSS and, from
//! `smaps_rollup`, PSS), threads, open files, CPU time and voluntary context
//! switches, for one process or for a process and all its descendants (an agent
//! that forks, like zabbix_agentd, is all of its processes).
//!
//! CPU time is the scheduler's own count in nanoseconds (`/proc/PID/task/*/schedstat`),
//! not `utime + stime`, whose 10 ms ticks are too coarse for an agent that runs a
//! few milliseconds a minute.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One look at one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident memory (`VmRSS`), shared pages counted whole.
    pub rss_kib: u64,
    /// Proportional set size: shared pages divided among their sharers.
    pub pss_kib: u64,
    /// Live threads.
    pub threads: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// CPU time of its live threads, in nanoseconds.
    pub cpu_ns: u64,
    /// Voluntary context switches of its live threads: each one is the process
    /// going to sleep, so each one is followed by a wake-up.
    pub voluntary_switches: u64,
}

impl ProcessSample {
    /// Reads process `pid`. Fails when it is gone.
    pub fn read(pid: u32) -> Result<Self, String> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let status = read(&proc.join("status"))?;
        let rollup = read(&proc.join("smaps_rollup"))?;
        let mut sample = Self {
            rss_kib: kib_field(&status, "VmRSS:"),
            pss_kib: kib_field(&rollup, "Pss:"),
            fds: count_entries(&proc.join("fd")),
            ..Self::default()
        };
        for task in std::fs::read_dir(proc.join("task")).map_err(|e| format!("{pid}: {e}"))? {
            let task = task.map_err(|e| e.to_string())?.path();
            // A thread may end between the listing and the read: it then counts
            // for nothing, as it would have a moment later.
            let (Ok(schedstat), Ok(status)) = (
                std::fs::read_to_string(task.join("schedstat")),
                std::fs::read_to_string(task.join("status")),
            ) else {
                continue;
            };
            sample.threads += 1;
            sample.cpu_ns += schedstat
                .split_whitespace()
                .next()
                .and_then(|ns| ns.parse::<u64>().ok())
                .unwrap_or(0);
            sample.voluntary_switches += kib_field(&status, "voluntary_ctxt_switches:");
        }
        Ok(sample)
    }

    /// The sum of two processes' figures (PSS adds up; RSS over-counts shared pages).
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib + other.rss_kib,
            pss_kib: self.pss_kib + other.pss_kib,
            threads: self.threads + other.threads,
            fds: self.fds + other.fds,
            cpu_ns: self.cpu_ns + other.cpu_ns,
            voluntary_switches: self.voluntary_switches + other.voluntary_switches,
        }
    }
}

/// One look at a process and its descendants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSample {
    /// The process itself.
    pub main: ProcessSample,
    /// It and every descendant, summed.
    pub all: ProcessSample,
    /// How many processes `all` sums.
    pub processes: u64,
}

impl TreeSample {
    /// Reads `pid` and every process descended from it. Fails when `pid` is gone;
    /// a descendant that ends during the read is left out.
    pub fn read(pid: u32) -> Result<Self, String> {
        let main = ProcessSample::read(pid)?;
        let mut sample = Self {
            main,
            all: main,
            processes: 1,
        };
        for child in descendants(pid) {
            if let Ok(child) = ProcessSample::read(child) {
                sample.all = sample.all.plus(child);
                sample.processes += 1;
            }
        }
        Ok(sample)
    }
}

/// Every process whose parent chain leads to `pid` (not `pid` itself).
pub fn descendants(pid: u32) -> BTreeSet<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| Some((child, parent_of(child)?)))
        .collect();
    let mut found = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, _) in parents.iter().filter(|(_, p)| *p == parent) {
            if found.insert(child) {
                frontier.push(child);
            }
        }
    }
    found
}

/// The parent of `pid`, from `/proc/PID/stat` (after the command name, which may
/// hold spaces and parentheses: hence from the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    parent_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parent_in_stat(stat: &str) -> Option<u32> {
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// The files `pid` maps executable (its program and its shared libraries), with
/// their sizes on disk, sorted by path.
pub fn executable_files(pid: u32) -> Result<Vec<(PathBuf, u64)>, String> {
    let maps = read(Path::new(&format!("/proc/{pid}/maps")))?;
    let paths: BTreeSet<PathBuf> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let perms = fields.nth(1)?;
            let path = fields.nth(3)?;
            (perms.contains('x') && path.starts_with('/')).then(|| PathBuf::from(path))
        })
        .collect();
    Ok(paths
        .into_iter()
        .map(|path| {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            (path, size)
        })
        .collect())
}

/// Where `pid`'s resident memory is: RSS and PSS in KiB per mapped file (by
/// path) or kind of anonymous memory (`[heap]`, `[stack]`, `[anon]`), largest
/// RSS first.
pub fn resident_by_mapping(pid: u32) -> Result<Vec<(String, u64, u64)>, String> {
    let smaps = read(Path::new(&format!("/proc/{pid}/smaps")))?;
    let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut current = String::new();
    for line in smaps.lines() {
        if let Some(rss) = line.strip_prefix("Rss:") {
            by_name.entry(current.clone()).or_default().0 += kib_field(rss, "");
        } else if let Some(pss) = line.strip_prefix("Pss:") {
            by_name.entry(current.clone()).or_default().1 += kib_field(pss, "");
        } else if is_mapping_header(line) {
            let name = line.split_whitespace().nth(5).unwrap_or("[anon]");
            name.clone_into(&mut current);
        }
    }
    let mut resident: Vec<(String, u64, u64)> = by_name
        .into_iter()
        .filter(|(_, (rss, _))| *rss > 0)
        .map(|(name, (rss, pss))| (name, rss, pss))
        .collect();
    resident.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Ok(resident)
}

/// How much of each of `program`'s loaded sections of 4 KiB or more is resident
/// in process `pid`, which runs it: `(name, size KiB, resident KiB)` in address
/// order. Resident is what `/proc/PID/pagemap` marks present, by whole pages (a
/// page two sections share counts for both). The sections come from the program's
/// own headers, which a stripped program keeps.
pub fn resident_sections(pid: u32, program: &Path) -> Result<Vec<(String, u64, u64)>, String> {
    use std::io::{Read, Seek, SeekFrom};

    use object::{Object, ObjectSection, ObjectSegment};

    let bytes = std::fs::read(program).map_err(|e| format!("{}: {e}", program.display()))?;
    let elf = object::File::parse(&*bytes).map_err(|e| format!("{}: {e}", program.display()))?;
    // Where the kernel put the program: its mapping of file offset 0 holds the
    // segment that starts the file.
    let path = std::fs::canonicalize(program).map_err(|e| format!("{}: {e}", program.display()))?;
    let maps = read(Path::new(&format!("/proc/{pid}/maps")))?;
    let first = maps
        .lines()
        .map(str::split_whitespace)
        .find_map(|mut fields| {
            let range = fields.next()?;
            let offset = fields.nth(1)?;
            let name = fields.nth(2)?;
            (offset.trim_start_matches('0').is_empty() && Path::new(name) == path)
                .then(|| u64::from_str_radix(range.split_once('-')?.0, 16).ok())
                .flatten()
        })
        .ok_or_else(|| format!("{} is not mapped by process {pid}", path.display()))?;
    let first_vaddr = elf
        .segments()
        .find(|segment| segment.file_range().0 == 0)
        .map_or(0, |segment| segment.address());
    let base = first - first_vaddr;

    let pagemap_path = format!("/proc/{pid}/pagemap");
    let mut pagemap =
        std::fs::File::open(&pagemap_path).map_err(|e| format!("{pagemap_path}: {e}"))?;
    let mut sections = Vec::new();
    for section in elf.sections() {
        // Loaded (an address) and in the file (not .bss): what the program maps.
        if section.address() == 0 || section.file_range().is_none() || section.size() < PAGE {
            continue;
        }
        let first_page = (base + section.address()) / PAGE;
        let last_page = (base + section.address() + section.size() - 1) / PAGE;
        let pages = last_page - first_page + 1;
        let mut entries = vec![0u8; usize::try_from(pages * 8).map_err(|e| e.to_string())?];
        pagemap
            .seek(SeekFrom::Start(first_page * 8))
            .and_then(|_| pagemap.read_exact(&mut entries))
            .map_err(|e| format!("{pagemap_path}: {e}"))?;
        // Bit 63 of each 8-byte entry: the page is present.
        let present = entries
            .chunks_exact(8)
            .filter(|entry| entry[7] & 0x80 != 0)
            .count() as u64;
        let name = section.name().unwrap_or("?").to_owned();
        sections.push((name, pages * PAGE / 1024, present * PAGE / 1024));
    }
    Ok(sections)
}

const PAGE: u64 = 4096;

/// `start-end perms offset dev inode [path]`: the first line of each mapping.
fn is_mapping_header(line: &str) -> bool {
    line.split_whitespace()
        .next()
        .and_then(|range| range.split_once('-'))
        .is_some_and(|(start, end)| {
            [start, end]
                .iter()
                .all(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        })
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The number after `name` in a `Name: value [kB]` file (0 when absent).
fn kib_field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

fn count_entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_threads_files_and_cpu_time() {
        // Burn a little CPU so the scheduler has something to count.
        let busy: u64 = (0..2_000_000u64).map(std::hint::black_box).sum();
        assert!(busy > 0);
        let me = ProcessSample::read(std::process::id()).expect("/proc/self");
        assert!(me.rss_kib > 100, "{me:?}");
        assert!(me.pss_kib > 0 && me.pss_kib <= me.rss_kib, "{me:?}");
        assert!(me.threads >= 1 && me.fds >= 3, "{me:?}");
        assert!(me.cpu_ns > 0, "{me:?}");
    }

    #[test]
    fn a_tree_counts_the_children_a_process_forked() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let pid = child.id();
        // The shell forks its two sleeps at once; wait (bounded) until both show.
        let mut tree = TreeSample::default();
        for _ in 0..200 {
            tree = TreeSample::read(pid).expect("the shell runs");
            if tree.processes == 3 {
                break;
            }
            std::process::Command::new("sleep")
                .arg("0.01")
                .status()
                .expect("sleep");
        }
        let _ = child.kill();
        let _ = child.wait();
        for sleeper in descendants(pid) {
            let _ = std::process::Command::new("kill")
                .arg(sleeper.to_string())
                .status();
        }
        assert_eq!(tree.processes, 3, "{tree:?}");
        assert!(tree.all.rss_kib > tree.main.rss_kib);
        assert_eq!(tree.all.threads, 3);
    }

    #[test]
    fn the_executable_files_are_the_program_and_its_libraries() {
        let files = executable_files(std::process::id()).expect("/proc/self/maps");
        let me = std::env::current_exe().expect("current exe");
        assert!(
            files.iter().any(|(path, size)| *path == me && *size > 0),
            "{files:?}"
        );
    }

    #[test]
    fn resident_memory_is_found_in_the_program_libraries_and_heap() {
        let keep: Vec<u8> = vec![1; 4 << 20];
        let rss = || {
            ProcessSample::read(std::process::id())
                .expect("/proc/self")
                .rss_kib
        };
        // VmRSS read on both sides: the other tests of this binary run in
        // parallel threads of the same process, and allocate meanwhile.
        let before = rss();
        let resident = resident_by_mapping(std::process::id()).expect("/proc/self/smaps");
        let after = rss();
        let total: u64 = resident.iter().map(|(_, rss, _)| rss).sum();
        // The same memory as VmRSS, give or take what moved between the reads.
        assert!(
            total + 1024 >= before.min(after) && total <= before.max(after) + 1024,
            "{total} against {before} then {after}"
        );
        let exe = std::env::current_exe().expect("current exe");
        assert!(
            resident
                .iter()
                .any(|(name, rss, _)| *name == exe.display().to_string() && *rss > 0)
        );
        assert!(
            resident
                .iter()
                .any(|(name, rss, _)| name.starts_with('[') && *rss >= 4096)
        );
        assert!(
            resident.windows(2).all(|w| w[0].1 >= w[1].1),
            "largest first"
        );
        assert_eq!(keep.iter().map(|&b| u64::from(b)).sum::<u64>(), 4 << 20);
    }

    #[test]
    fn the_running_code_is_resident_in_the_program_s_text() {
        let exe = std::env::current_exe().expect("current exe");
        let sections = resident_sections(std::process::id(), &exe).expect("the sections");
        let text = sections
            .iter()
            .find(|(name, ..)| name == ".text")
            .expect("a .text section");
        // This very test runs from it.
        assert!(text.2 > 0 && text.2 <= text.1, "{text:?}");
        assert!(
            sections.iter().any(|(name, ..)| name == ".rodata"),
            "{sections:?}"
        );
        assert!(
            sections
                .iter()
                .all(|(_, size, resident)| *size >= 4 && resident <= size),
            "{sections:?}"
        );
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_confuse_the_parent() {
        assert_eq!(parent_in_stat("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
