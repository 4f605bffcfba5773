//! Keeps secret memory out of swap: `mlock(2)` on the pages that hold a
//! secret, for as long as the secret lives, where `RLIMIT_MEMLOCK` allows.
//!
//! `mlock` does not nest: one `munlock` unlocks a page for everyone. Secrets
//! are small heap values that share pages with each other, so pages are
//! reference-counted here and unlocked only when the last secret on them is
//! gone. Locking is best effort by design (an unprivileged process may lock
//! `RLIMIT_MEMLOCK` bytes, 8 MiB by default): a failure is logged once and
//! the secret works as before, still zeroized on drop.
//!
//! Locking a page splits the kernel's memory map and unlocking merges it
//! again, tens of microseconds each, and a key's programming makes a few
//! hundred secrets on the same few heap pages. So a page whose last secret
//! is gone stays locked, idle, for the next one (up to [`MAX_IDLE`] pages);
//! it holds only zeroized or ordinary bytes by then, and is locked again
//! (cheaply) when a secret lands on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Pages kept locked with no secret on them, for reuse.
pub const MAX_IDLE: usize = 256;

/// Locked pages (page address → secrets on it; 0 = idle).
static PAGES: OnceLock<Mutex<HashMap<usize, u32>>> = OnceLock::new();
static FAILURES: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static IDLE: AtomicUsize = AtomicUsize::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

fn pages() -> std::sync::MutexGuard<'static, HashMap<usize, u32>> {
    PAGES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

fn page_size() -> usize {
    static SIZE: OnceLock<usize> = OnceLock::new();
    *SIZE.get_or_init(|| {
        // SAFETY: sysconf reads a constant; no memory is touched.
        #[allow(unsafe_code)]
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
}

/// The pages `[addr, addr + len)` touches.
fn page_range(addr: usize, len: usize) -> impl Iterator<Item = usize> {
    let size = page_size();
    let first = addr / size * size;
    let end = addr.saturating_add(len);
    (first..end).step_by(size)
}

fn syscall(page: usize, lock: bool) -> bool {
    let ptr = page as *const libc::c_void;
    // SAFETY: mlock/munlock only change the residency of pages; they never
    // read or write them, and fail with ENOMEM on unmapped addresses.
    #[allow(unsafe_code)]
    let rc = unsafe {
        if lock {
            libc::mlock(ptr, page_size())
        } else {
            libc::munlock(ptr, page_size())
        }
    };
    rc == 0
}

/// Pages locked for one secret; unlocked (when no other secret shares them)
/// on drop. Drop it after the secret's memory is zeroized.
#[derive(Debug)]
pub struct Locked {
    pages: Vec<usize>,
}

impl Locked {
    /// Locks the pages holding `[addr, addr + len)`; pages the OS refuses are
    /// skipped (see the module note). Nothing to do for `len == 0`.
    pub fn region(addr: usize, len: usize) -> Locked {
        let mut held = Vec::new();
        if len == 0 || addr == 0 {
            return Locked { pages: held };
        }
        let mut map = pages();
        for page in page_range(addr, len) {
            if let Some(n) = map.get_mut(&page) {
                if *n == 0 {
                    // Idle: the allocator may have given the page back to the
                    // OS meanwhile (heap trim), losing the lock. Locking an
                    // already-locked page is cheap (no map split), so ask again.
                    IDLE.fetch_sub(1, Ordering::Relaxed);
                    if !syscall(page, true) {
                        map.remove(&page);
                        failed();
                        continue;
                    }
                }
                *n += 1;
                held.push(page);
            } else if syscall(page, true) {
                map.insert(page, 1);
                held.push(page);
                PEAK.fetch_max(map.len(), Ordering::Relaxed);
            } else {
                failed();
            }
        }
        Locked { pages: held }
    }

    /// The value's own bytes (for values that live at a stable address,
    /// i.e. inside a `Box`).
    pub fn value<T>(value: &T) -> Locked {
        Locked::region(value as *const T as usize, std::mem::size_of::<T>())
    }

    /// Pages this guard holds locked.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        if self.pages.is_empty() {
            return;
        }
        let mut map = pages();
        for page in self.pages.drain(..) {
            if let Some(n) = map.get_mut(&page) {
                *n -= 1;
                if *n == 0 {
                    if IDLE.load(Ordering::Relaxed) < MAX_IDLE {
                        IDLE.fetch_add(1, Ordering::Relaxed);
                    } else {
                        map.remove(&page);
                        // The page may already be unmapped (a large freed
                        // buffer): munlock then fails harmlessly.
                        syscall(page, false);
                    }
                }
            }
        }
    }
}

fn failed() {
    FAILURES.fetch_add(1, Ordering::Relaxed);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot lock secret memory (RLIMIT_MEMLOCK reached or not permitted); \
             secrets stay zeroized but may be swapped: raise LimitMEMLOCK"
        );
    }
}

/// Unlocks every idle page (no secret on it).
pub fn trim() {
    let mut map = pages();
    map.retain(|&page, n| {
        if *n == 0 {
            syscall(page, false);
            false
        } else {
            true
        }
    });
    IDLE.store(0, Ordering::Relaxed);
}

/// How secret memory locking is going (for `/metrics` and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Pages locked now (holding secrets, or idle for reuse).
    pub pages: usize,
    /// Most pages locked at once since start.
    pub peak: usize,
    /// Page locks the OS refused so far.
    pub failures: u64,
}

pub fn stats() -> Stats {
    Stats {
        pages: pages().len(),
        peak: PEAK.load(Ordering::Relaxed),
        failures: FAILURES.load(Ordering::Relaxed),
    }
}

/// Whether the page holding `addr` is locked, from `/proc/self/smaps`
/// (tests and diagnostics; `None` where smaps is unavailable).
pub fn is_locked(addr: usize) -> Option<bool> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut inside = false;
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        if let Some((lo, hi)) = first.split_once('-') {
            if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
            {
                inside = (lo..hi).contains(&addr);
                continue;
            }
        }
        if inside && first == "Locked:" {
            return Some(words.next().and_then(|n| n.parse::<u64>().ok())? > 0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    /// A page of our own, so no other test's secret shares it.
    struct Page(*mut u8, Layout);
    impl Page {
        fn new() -> Page {
            Page::pages(1)
        }
        fn pages(n: usize) -> Page {
            let layout = Layout::from_size_align(n * page_size(), page_size()).unwrap();
            // SAFETY: non-zero size; freed in Drop with the same layout.
            #[allow(unsafe_code)]
            let p = unsafe { alloc_zeroed(layout) };
            assert!(!p.is_null());
            Page(p, layout)
        }
        fn addr(&self) -> usize {
            self.0 as usize
        }
    }
    impl Drop for Page {
        fn drop(&mut self) {
            // SAFETY: allocated in Page::new with this layout.
            #[allow(unsafe_code)]
            unsafe {
                dealloc(self.0, self.1)
            }
        }
    }

    fn can_lock() -> bool {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) };
        rc == 0 && rl.rlim_cur >= 1 << 20
    }

    #[test]
    fn pages_are_locked_while_held_and_shared_pages_counted() {
        let page = Page::new();
        assert_eq!(is_locked(page.addr()), Some(false));
        let a = Locked::region(page.addr() + 16, 32);
        if !can_lock() {
            // Where the OS forbids it the guard holds nothing and nothing breaks.
            assert_eq!(a.pages(), 0);
            return;
        }
        assert_eq!(a.pages(), 1);
        assert_eq!(is_locked(page.addr()), Some(true));
        // A second secret on the same page: the first one's drop must not unlock it.
        let b = Locked::region(page.addr() + 100, 8);
        drop(a);
        assert_eq!(is_locked(page.addr()), Some(true));
        drop(b);
        // Idle now: kept locked for the next secret until trimmed.
        trim();
        assert_eq!(is_locked(page.addr()), Some(false));
    }

    #[test]
    fn a_region_spanning_pages_locks_each() {
        let two = Page::pages(2);
        let addr = two.addr();
        let guard = Locked::region(addr + page_size() - 4, 8);
        if can_lock() {
            assert_eq!(guard.pages(), 2);
            assert_eq!(is_locked(addr + page_size()), Some(true));
        }
        drop(guard);
        trim();
        assert_eq!(is_locked(addr + page_size()), Some(false));
        assert_eq!(page_range(addr + page_size() - 4, 8).count(), 2);
        assert_eq!(page_range(addr, page_size()).count(), 1);
        assert_eq!(Locked::region(addr, 0).pages(), 0);
    }
}
