//! A persistent thread pool for the kernels, built for many small parallel
//! loops (decoding issues hundreds per token): a `parallel_for` publishes
//! one job, workers claim indices with one atomic add each, the caller works
//! too, and nothing is allocated per call. Idle workers spin briefly (the
//! next loop usually follows within microseconds), then sleep on a condvar.
//!
//! Protocol: `epoch` is odd while a job is open. A worker registers in
//! `active` and re-checks the epoch before it touches the job, and the
//! caller closes the epoch and waits for `active == 0` before returning,
//! so the job (on the caller's stack) outlives every use of it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;

/// Spins of an idle worker before it sleeps (a few milliseconds: prefill has
/// serial stretches between loops, and a sleeping worker wakes late).
const SPINS: usize = 200_000;

/// One parallel loop: `f(i)` for `i in 0..total`.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    total: usize,
}

/// A value alone on its cache line (no false sharing between the counters).
#[repr(align(128))]
struct Line<T>(T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

struct Shared {
    epoch: Line<AtomicU64>,
    job: AtomicPtr<Job<'static>>,
    next: Line<AtomicUsize>,
    done: Line<AtomicUsize>,
    active: Line<AtomicUsize>,
    panicked: AtomicBool,
    stop: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Shared {
    /// Claim and run indices of the open job until none are left.
    fn run(&self, job: &Job) {
        let mut ran = 0;
        loop {
            let i = self.next.fetch_add(1, SeqCst);
            if i >= job.total {
                break;
            }
            if catch_unwind(AssertUnwindSafe(|| (job.f)(i))).is_err() {
                self.panicked.store(true, SeqCst);
            }
            ran += 1;
        }
        if ran > 0 {
            self.done.fetch_add(ran, SeqCst);
        }
    }
}

/// A fixed set of worker threads plus the calling thread.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// Serializes callers (a job is one loop at a time).
    caller: Mutex<()>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool({} threads)", self.threads())
    }
}

impl Pool {
    /// A pool running loops on `threads` threads (the caller and `threads − 1` workers).
    pub fn new(threads: usize) -> Self {
        let shared = Arc::new(Shared {
            epoch: Line(AtomicU64::new(0)),
            job: AtomicPtr::new(std::ptr::null_mut()),
            next: Line(AtomicUsize::new(0)),
            done: Line(AtomicUsize::new(0)),
            active: Line(AtomicUsize::new(0)),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        // Return only once every worker runs: a thread's start-up (which
        // allocates) never lands in the middle of the first loops.
        let started = Arc::new(std::sync::Barrier::new(threads.max(1)));
        let workers = (1..threads.max(1))
            .map(|i| {
                let (s, started) = (Arc::clone(&shared), Arc::clone(&started));
                std::thread::Builder::new()
                    .name(format!("gemma-worker-{i}"))
                    .spawn(move || {
                        INDEX.with(|x| x.set(i));
                        started.wait();
                        worker(&s)
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        started.wait();
        Pool { shared, workers, caller: Mutex::new(()) }
    }

    /// Threads that run a loop, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(i)` for every `i in 0..total` across the pool; returns when all
    /// are done. A panic in `f` is re-raised here.
    pub fn parallel_for(&self, total: usize, f: &(dyn Fn(usize) + Sync)) {
        if total == 0 {
            return;
        }
        // Nested calls (from inside a job) and single items run inline.
        if self.workers.is_empty() || total == 1 || IN_JOB.with(|c| c.get()) {
            (0..total).for_each(f);
            return;
        }
        let _one = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        let job = Job { f, total };
        s.job.store(&job as *const Job as *mut Job<'static>, SeqCst);
        s.next.store(0, SeqCst);
        s.done.store(0, SeqCst);
        s.panicked.store(false, SeqCst);
        s.epoch.fetch_add(1, SeqCst); // open (odd)
        if s.sleepers.load(SeqCst) > 0 {
            let _g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        IN_JOB.with(|c| c.set(true));
        s.run(&job);
        IN_JOB.with(|c| c.set(false));
        while s.done.load(SeqCst) < total {
            std::hint::spin_loop();
        }
        s.epoch.fetch_add(1, SeqCst); // closed (even): no new worker enters
        while s.active.load(SeqCst) > 0 {
            std::hint::spin_loop();
        }
        s.job.store(std::ptr::null_mut(), SeqCst);
        if s.panicked.load(SeqCst) {
            panic!("a kernel task panicked in the thread pool");
        }
    }
}

thread_local! {
    /// Whether this thread is running a pool job (nested loops run inline).
    static IN_JOB: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// This thread's index in its pool: workers 1.., any other thread 0.
    static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the current thread within a pool loop: 0 for the calling
/// thread, `1..threads()` for the workers. Per-thread buffers prepared by
/// the caller before a loop can be indexed by it (no lazy allocation inside).
pub fn thread_index() -> usize {
    INDEX.with(|i| i.get())
}

fn worker(s: &Shared) {
    IN_JOB.with(|c| c.set(true));
    let mut seen = 0u64;
    let mut spins = 0usize;
    loop {
        if s.stop.load(SeqCst) {
            return;
        }
        let e = s.epoch.load(SeqCst);
        if e.is_multiple_of(2) || e == seen {
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            // Sleep until a new job opens (or the pool stops).
            let mut g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, SeqCst);
            loop {
                let now = s.epoch.load(SeqCst);
                if s.stop.load(SeqCst) || (now % 2 == 1 && now != seen) {
                    break;
                }
                g = s.wake.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, SeqCst);
            spins = 0;
            continue;
        }
        s.active.fetch_add(1, SeqCst);
        if s.epoch.load(SeqCst) == e {
            // SAFETY: the epoch is still open and we are registered in
            // `active`, so the caller has not returned and the job is alive.
            let job = unsafe { &*s.job.load(SeqCst) };
            s.run(job);
        }
        seen = e;
        spins = 0;
        s.active.fetch_sub(1, SeqCst);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

static GLOBAL: OnceLock<Pool> = OnceLock::new();
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Physical CPU cores of this machine (logical CPUs where unknown).
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_os = "linux")]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let (mut phys, mut cores) = (String::new(), std::collections::HashSet::new());
        for line in info.lines() {
            let mut kv = line.splitn(2, ':').map(str::trim);
            match (kv.next(), kv.next()) {
                (Some("physical id"), Some(v)) => phys = v.to_string(),
                (Some("core id"), Some(v)) => {
                    cores.insert((phys.clone(), v.to_string()));
                }
                _ => {}
            }
        }
        if !cores.is_empty() {
            return cores.len().min(logical);
        }
    }
    logical
}

/// Choose the global pool's size before its first use (0: physical cores).
/// Returns false if the pool already exists with another size.
pub fn set_threads(threads: usize) -> bool {
    REQUESTED.store(threads, SeqCst);
    GLOBAL.get().is_none_or(|p| threads == 0 || p.threads() == threads)
}

/// The global pool (created on first use with [`set_threads`]' size,
/// else `GEMMA_THREADS`, else the physical cores).
pub fn global() -> &'static Pool {
    GLOBAL.get_or_init(|| {
        let n = match REQUESTED.load(SeqCst) {
            0 => std::env::var("GEMMA_THREADS").ok().and_then(|v| v.parse().ok()).filter(|&n| n > 0).unwrap_or_else(physical_cores),
            n => n,
        };
        Pool::new(n)
    })
}

/// A mutable slice shared by the tasks of one pool loop, each task taking
/// its own ranges (the one place training and kernel loops get disjoint
/// `&mut` views of a common output).
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: the slice is only reached through `range`, whose callers promise
// that no two tasks touch the same element; T itself moves between threads.
unsafe impl<T: Send> Send for Disjoint<'_, T> {}
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    /// Share `s` for the length of one loop.
    pub fn new(s: &'a mut [T]) -> Self {
        Self { ptr: s.as_mut_ptr(), len: s.len(), _life: std::marker::PhantomData }
    }

    /// Elements `r` (bounds checked).
    /// # Safety
    /// No other task reads or writes any element of `r` while the result lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn range(&self, r: std::ops::Range<usize>) -> &mut [T] {
        assert!(r.start <= r.end && r.end <= self.len, "Disjoint::range {r:?} outside 0..{}", self.len);
        // SAFETY: in bounds (checked); exclusive by the caller's promise.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }
}

/// `f(range, rows)` over `0..len` cut into ranges of `chunk` (the last
/// shorter), in parallel; `f` gets the range and the matching part of `out`.
pub fn parallel_chunks<T: Send>(out: &mut [T], chunk: usize, f: &(dyn Fn(std::ops::Range<usize>, &mut [T]) + Sync)) {
    let len = out.len();
    let chunk = chunk.max(1);
    let d = Disjoint::new(out);
    parallel_for(len.div_ceil(chunk), &|i| {
        let r = i * chunk..((i + 1) * chunk).min(len);
        // SAFETY: task i alone owns chunk i.
        f(r.clone(), unsafe { d.range(r) })
    });
}

/// `f(i)` for `i in 0..total` on the global pool.
pub fn parallel_for(total: usize, f: &(dyn Fn(usize) + Sync)) {
    global().parallel_for(total, f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_index_runs_exactly_once() {
        let pool = Pool::new(3);
        for total in [0, 1, 2, 7, 1000] {
            let hits: Vec<AtomicUsize> = (0..total).map(|_| AtomicUsize::new(0)).collect();
            pool.parallel_for(total, &|i| {
                hits[i].fetch_add(1, SeqCst);
            });
            assert!(hits.iter().all(|h| h.load(SeqCst) == 1), "total {total}");
        }
    }

    #[test]
    fn many_small_loops_and_sleeping_workers() {
        let pool = Pool::new(2);
        let sum = AtomicUsize::new(0);
        for round in 0..2000 {
            pool.parallel_for(3, &|i| {
                sum.fetch_add(i, SeqCst);
            });
            if round == 1000 {
                std::thread::sleep(std::time::Duration::from_millis(20)); // workers go to sleep
            }
        }
        assert_eq!(sum.load(SeqCst), 2000 * 3);
    }

    #[test]
    fn thread_indices_are_distinct_within_a_loop() {
        let pool = Pool::new(3);
        let seen: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        pool.parallel_for(300, &|_| {
            seen[thread_index()].fetch_add(1, SeqCst);
        });
        assert_eq!(seen.iter().map(|c| c.load(SeqCst)).sum::<usize>(), 300);
        assert_eq!(thread_index(), 0);
    }

    #[test]
    fn nested_loops_run_inline() {
        let pool = Pool::new(2);
        let n = AtomicUsize::new(0);
        pool.parallel_for(4, &|_| {
            // Not the global pool, but nested use of a pool from a job must not deadlock.
            global().parallel_for(3, &|_| {
                n.fetch_add(1, SeqCst);
            });
        });
        assert_eq!(n.load(SeqCst), 12);
    }

    #[test]
    fn a_panicking_task_is_reraised() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.parallel_for(10, &|i| assert!(i != 5, "boom"))));
        assert!(r.is_err());
        let count = AtomicUsize::new(0);
        pool.parallel_for(10, &|_| {
            count.fetch_add(1, SeqCst);
        });
        assert_eq!(count.load(SeqCst), 10, "the pool still works after a panic");
    }
}
