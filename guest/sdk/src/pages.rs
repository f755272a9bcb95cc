//! A machine component's allocator: an allocation of a page or more lies on whole pages
//! of its own, and nothing is written to them but what the machine writes.
//!
//! Rust's allocator for wasm32 (dlmalloc) keeps a header in front of every allocation
//! and zeroes what `alloc_zeroed` returns itself. A machine's `init` makes its buffers
//! all at once (the LSM's blocks and tables, its free set), and so wrote to a page of
//! each: ~257 pages for echo, every one a page fault in the host, most of an empty
//! `open`'s time. Here an allocation of [`PAGE`] bytes to [`REGION_MAX`] takes a region
//! of 2^k pages (its class), from its class's free list or else from memory fresh from
//! `memory.grow`, which wasm guarantees is zero: a buffer's pages are first touched when
//! the machine writes them. Smaller allocations, larger ones (few; dlmalloc fits them
//! exactly) and any aligned past a page stay dlmalloc's.
//!
//! A freed region goes to the front of its class's list (its first word links the
//! next), and is reused as it is: `alloc_zeroed` zeroes only a reused region. Regions
//! are never split nor merged, so memory holds, for each class, the most regions of it
//! ever live at once: a machine that allocates its buffers at `init` reaches that at
//! once. A region wastes less than half its address space, at most 4 MiB, never a page
//! the machine does not write.
//!
//! Everything here is deterministic: a component runs on one thread, and which region
//! an allocation gets depends only on the allocations before it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// The unit of large allocations: the host's page (wasm's own is 64 KiB).
const PAGE: usize = 4096;
/// Regions of 1 to 2^(CLASSES - 1) pages.
const CLASSES: usize = 12;
/// The largest region, and allocation, here: 8 MiB.
const REGION_MAX: usize = PAGE << (CLASSES - 1);
/// wasm's page, the unit `memory.grow` counts in.
const WASM_PAGE: usize = 65536;
/// Memory grows by at least this much at a time, so that growing is rare. Where the
/// host traps a growth past the guest's limit (carapace's does), an allocation can trap
/// up to this much short of it.
const GROW_MIN: usize = 1 << 20;

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
compile_error!("the page allocator assumes one thread: build components without wasm threads");

/// Grows memory by this many wasm pages; the address of the new memory, or `None` when
/// it cannot grow.
type Grow = fn(usize) -> Option<usize>;

/// The allocator: free lists of regions by class, and the fresh memory not yet handed
/// out, `next..end`.
struct Pages {
    grow: Grow,
    /// The first free region of each class; 0 when there is none (memory.grow never
    /// returns address 0: a module's stack and data lie below).
    free: [Cell<usize>; CLASSES],
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a component instance runs on one thread (wasm32 without threads, which the
// `compile_error!` above enforces), the only place the allocator is global; tests use
// their own instances, each on one thread.
unsafe impl Sync for Pages {}

/// The class of the region that holds `layout`, `Some(k)` for 2^k pages, if it is one
/// of this allocator's.
fn class_of(layout: Layout) -> Option<usize> {
    if !(PAGE..=REGION_MAX).contains(&layout.size()) || layout.align() > PAGE {
        return None;
    }
    let pages = layout.size().div_ceil(PAGE);
    Some(pages.next_power_of_two().trailing_zeros() as usize)
}

impl Pages {
    const fn new(grow: Grow) -> Pages {
        Pages {
            grow,
            free: [const { Cell::new(0) }; CLASSES],
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// A region of `class`, and whether it is fresh (zero, never handed out).
    fn take(&self, class: usize) -> Option<(*mut u8, bool)> {
        let first = self.free[class].get();
        if first != 0 {
            // SAFETY: a free region is ours, and its first word links the next.
            let next = unsafe { (first as *const usize).read() };
            self.free[class].set(next);
            return Some((first as *mut u8, false));
        }
        let bytes = PAGE << class;
        if self.end.get() - self.next.get() < bytes {
            self.grow_by(bytes)?;
        }
        let region = self.next.get();
        self.next.set(region + bytes);
        Some((region as *mut u8, true))
    }

    /// Put `region`, of `class`, at the front of its class's list.
    fn give_back(&self, region: usize, class: usize) {
        // SAFETY: the region is ours again and at least a page long.
        unsafe { (region as *mut usize).write(self.free[class].get()) };
        self.free[class].set(region);
    }

    /// Grow memory so that at least `bytes` are fresh at `next`: by [`GROW_MIN`], or by
    /// `bytes` alone where a host fails a growth past the guest's limit (rather than
    /// trapping). Memory that grew elsewhere in between (dlmalloc grows it too) leaves
    /// the fresh rest behind: it is handed to the free lists, so none is lost.
    fn grow_by(&self, bytes: usize) -> Option<()> {
        let needed = bytes.div_ceil(WASM_PAGE);
        let usual = GROW_MIN.div_ceil(WASM_PAGE).max(needed);
        let grow = |wasm_pages| Some(((self.grow)(wasm_pages)?, wasm_pages));
        let (start, wasm_pages) =
            grow(usual).or_else(|| (needed < usual).then(|| grow(needed))?)?;
        // Memory that would end at 4 GiB, wasm32's whole address space, cannot be
        // described: it is left unused.
        let end = start.checked_add(wasm_pages * WASM_PAGE)?;
        if start != self.end.get() {
            self.give_back_rest();
            self.next.set(start);
        }
        self.end.set(end);
        Some(())
    }

    /// Hand the fresh memory left, `next..end`, to the free lists, largest region first.
    fn give_back_rest(&self) {
        // Both are page multiples: the loop leaves nothing behind.
        let (mut at, end) = (self.next.get(), self.end.get());
        while end - at >= PAGE {
            let class = (((end - at) / PAGE).ilog2() as usize).min(CLASSES - 1);
            self.give_back(at, class);
            at += PAGE << class;
        }
        self.next.set(end);
    }
}

// SAFETY: a large allocation is a region of its own, page-aligned and at least its
// layout's size, until it is freed; the rest is `System`'s, chosen by layout alone, so
// an allocation is always freed by the allocator that made it.
unsafe impl GlobalAlloc for Pages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => self
                .take(class)
                .map_or(ptr::null_mut(), |(region, _)| region),
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout) {
            Some(class) => match self.take(class) {
                Some((region, true)) => region,
                Some((region, false)) => {
                    // SAFETY: the region holds at least `layout.size()` bytes.
                    unsafe { region.write_bytes(0, layout.size()) };
                    region
                }
                None => ptr::null_mut(),
            },
            // SAFETY: the caller's contract, passed on.
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class_of(layout) {
            Some(class) => self.give_back(ptr as usize, class),
            // SAFETY: `System` made it (see above).
            None => unsafe { System.dealloc(ptr, layout) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size` with `layout`'s alignment is a
        // valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class_of(layout), class_of(new_layout)) {
            // SAFETY: `System` made it, and makes the new one.
            (None, None) => unsafe { System.realloc(ptr, layout, new_size) },
            // The region already holds the new size.
            (Some(old), Some(new)) if old == new => ptr,
            _ => {
                // SAFETY: the new allocation is distinct from the old, which is live
                // for `layout.size()` bytes, and freed once copied.
                unsafe {
                    let moved = self.alloc(new_layout);
                    if !moved.is_null() {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// The allocator of the component's instance.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: Pages = Pages::new(grow_memory);

#[cfg(target_arch = "wasm32")]
fn grow_memory(wasm_pages: usize) -> Option<usize> {
    let old = core::arch::wasm32::memory_grow(0, wasm_pages);
    (old != usize::MAX).then(|| old * WASM_PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for wasm's memory: the address space of a zeroed, page-aligned host
    /// allocation, handed out 64 KiB at a time; `steal` grows it for someone else.
    struct Memory {
        base: usize,
        size: usize,
        used: Cell<usize>,
    }

    const MEMORY_SIZE: usize = 256 << 20;

    thread_local! {
        static MEMORY: Memory = {
            let layout = Layout::from_size_align(MEMORY_SIZE, WASM_PAGE).unwrap();
            // SAFETY: a non-zero size; never freed (one per test thread).
            let base = unsafe { std::alloc::alloc_zeroed(layout) } as usize;
            assert_ne!(base, 0);
            Memory { base, size: MEMORY_SIZE, used: Cell::new(WASM_PAGE) }
        };
    }

    fn grow(wasm_pages: usize) -> Option<usize> {
        MEMORY.with(|memory| {
            let used = memory.used.get();
            let grown = used + wasm_pages * WASM_PAGE;
            (grown <= memory.size).then(|| {
                memory.used.set(grown);
                memory.base + used
            })
        })
    }

    fn grown() -> usize {
        MEMORY.with(|memory| memory.used.get())
    }

    fn steal(wasm_pages: usize) {
        grow(wasm_pages).unwrap();
    }

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    /// A new allocation of `size` bytes (zeroed if `zeroed`), as its address, and its
    /// bytes.
    fn allocate(pages: &Pages, size: usize, zeroed: bool) -> (usize, &'static mut [u8]) {
        // SAFETY: a valid layout of a non-zero size; the allocation is `size` bytes of
        // the test's memory, which is never freed, initialized (fresh memory is zero,
        // and a reused region holds its old bytes); the tests drop the slice before they
        // free the allocation.
        unsafe {
            let region = if zeroed {
                pages.alloc_zeroed(layout(size))
            } else {
                pages.alloc(layout(size))
            };
            assert!(!region.is_null(), "{size} bytes");
            (
                region as usize,
                std::slice::from_raw_parts_mut(region, size),
            )
        }
    }

    fn free(pages: &Pages, region: usize, size: usize) {
        // SAFETY: `region` came from `allocate` with `size`, and is freed once.
        unsafe { pages.dealloc(region as *mut u8, layout(size)) };
    }

    /// Whether an allocation of `layout` fails.
    fn fails(pages: &Pages, layout: Layout) -> bool {
        // SAFETY: a valid layout of a non-zero size; a region it returns is freed.
        unsafe {
            let region = pages.alloc(layout);
            if !region.is_null() {
                pages.dealloc(region, layout);
            }
            region.is_null()
        }
    }

    /// The address every allocation of a fixed sequence gets, from the first one's.
    fn offsets_of_a_sequence(pages: &Pages) -> Vec<usize> {
        let mut live = Vec::new();
        let mut offsets = Vec::new();
        let mut seed = 11u64;
        for _ in 0..300 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if seed >> 63 == 1 && !live.is_empty() {
                let (region, size) = live.swap_remove((seed >> 40) as usize % live.len());
                free(pages, region, size);
            } else {
                let size = PAGE + (seed >> 33) as usize % (256 << 10);
                live.push((allocate(pages, size, false).0, size));
                offsets.push(live.last().unwrap().0);
            }
        }
        offsets.iter().map(|&region| region - offsets[0]).collect()
    }

    #[test]
    fn large_allocations_are_page_aligned_disjoint_and_zeroed_when_reused() {
        let pages = Pages::new(grow);
        let sizes = [PAGE, 5000, 3 * PAGE, 64 << 10, 100_000, REGION_MAX];
        let mut first_round = Vec::new();
        for round in 0..2 {
            let mut regions = Vec::new();
            for &size in &sizes {
                let (region, bytes) = allocate(&pages, size, true);
                assert_eq!(region % PAGE, 0);
                assert!(bytes.iter().all(|&byte| byte == 0), "{size} bytes zeroed");
                bytes.fill(0xa5);
                regions.push((region, size));
            }
            let mut sorted = regions.clone();
            sorted.sort();
            for pair in sorted.windows(2) {
                assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
            }
            if round == 0 {
                first_round = sorted;
            } else {
                assert_eq!(sorted, first_round, "the second round reuses every region");
            }
            // Freed with garbage in them, last first: each class's list gives back its
            // last freed region first.
            for &(region, size) in regions.iter().rev() {
                free(&pages, region, size);
            }
        }
    }

    #[test]
    fn a_freed_region_is_reused_by_its_class_and_memory_stops_growing() {
        let pages = Pages::new(grow);
        let (first, _) = allocate(&pages, 3 * PAGE, false);
        free(&pages, first, 3 * PAGE);
        let (second, _) = allocate(&pages, 4 * PAGE, false);
        assert_eq!(first, second, "three pages and four are one class");
        free(&pages, second, 4 * PAGE);
        // One region of each class, then many allocations of every size, each freed:
        // memory does not grow again.
        for class in 0..CLASSES {
            let (region, _) = allocate(&pages, PAGE << class, false);
            free(&pages, region, PAGE << class);
        }
        let after_one_of_each = grown();
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = PAGE + (seed >> 33) as usize % (REGION_MAX - PAGE + 1);
            let (region, _) = allocate(&pages, size, false);
            free(&pages, region, size);
        }
        assert_eq!(grown(), after_one_of_each);
    }

    #[test]
    fn reallocation_keeps_a_region_within_its_class_and_moves_the_bytes_across() {
        let pages = Pages::new(grow);
        let sevens = |at: *mut u8, size: usize| {
            // SAFETY: `at` is a live allocation of at least `size` bytes.
            unsafe { std::slice::from_raw_parts(at, size) }
                .iter()
                .all(|&byte| byte == 7)
        };
        // SAFETY: each call passes the live allocation and the layout it has.
        unsafe {
            // From a small allocation into a region.
            let small = pages.alloc(layout(100));
            small.write_bytes(7, 100);
            let region = pages.realloc(small, layout(100), 5000);
            assert_eq!(region as usize % PAGE, 0);
            assert!(sevens(region, 100));
            region.write_bytes(7, 5000);
            let same = pages.realloc(region, layout(5000), 8000);
            assert_eq!(same, region, "5,000 and 8,000 bytes are both two pages");
            let grown = pages.realloc(same, layout(8000), 40_000);
            assert_ne!(grown, same);
            assert!(sevens(grown, 5000));
            let shrunk = pages.realloc(grown, layout(40_000), 9000);
            assert_ne!(shrunk, grown, "three pages are a smaller class than ten");
            assert!(sevens(shrunk, 5000));
            // Past the largest region, and back down to a small allocation: dlmalloc's.
            let large = pages.realloc(shrunk, layout(9000), 4 * REGION_MAX);
            assert!(sevens(large, 5000));
            let small = pages.realloc(large, layout(4 * REGION_MAX), 100);
            assert!(sevens(small, 100));
            pages.dealloc(small, layout(100));
        }
    }

    #[test]
    fn small_overaligned_or_larger_allocations_are_dlmallocs() {
        let pages = Pages::new(grow);
        let before = grown();
        for layout in [
            layout(PAGE - 1),
            Layout::from_size_align(PAGE, 2 * PAGE).unwrap(),
            layout(REGION_MAX + 1),
        ] {
            assert!(!fails(&pages, layout), "{layout:?}");
        }
        assert_eq!(grown(), before, "none of them took this allocator's memory");
    }

    #[test]
    fn near_its_limit_memory_grows_by_only_what_an_allocation_needs() {
        let pages = Pages::new(grow);
        // 256 KiB left: not enough for the usual growth.
        steal(MEMORY_SIZE / WASM_PAGE - grown() / WASM_PAGE - 4);
        let (region, _) = allocate(&pages, 128 << 10, false);
        assert_eq!(grown(), MEMORY_SIZE - (128 << 10));
        assert!(fails(&pages, layout(256 << 10)), "128 KiB are left");
        free(&pages, region, 128 << 10);
    }

    #[test]
    fn memory_grown_by_another_leaves_the_fresh_rest_to_the_free_lists() {
        let pages = Pages::new(grow);
        // Memory grows by 1 MiB; three pages are used, and one of them freed.
        let (first, _) = allocate(&pages, 2 * PAGE, false);
        let (freed, _) = allocate(&pages, PAGE, false);
        free(&pages, freed, PAGE);
        steal(1);
        // 1 MiB does not fit the 253 pages left: memory grows again, past the stolen
        // 64 KiB, and the 253 fresh pages go to the free lists.
        let (large, _) = allocate(&pages, GROW_MIN, false);
        assert!(large >= first + GROW_MIN + WASM_PAGE);
        let before = grown();
        let rest = first + 3 * PAGE..first + GROW_MIN;
        // 128 + 64 + 32 + 16 + 8 + 4 + 1 pages. The one page goes in front of the freed
        // one, its first word linking it: zeroed when reused.
        let (one, bytes) = allocate(&pages, PAGE, true);
        assert!(rest.contains(&one));
        assert!(bytes.iter().all(|&byte| byte == 0));
        for class in [2, 3, 4, 5, 6, 7] {
            let (region, _) = allocate(&pages, PAGE << class, false);
            assert!(rest.contains(&region), "class {class} from the rest");
        }
        assert_eq!(allocate(&pages, PAGE, false).0, freed);
        assert_eq!(grown(), before);
    }

    #[test]
    fn the_same_allocations_get_the_same_regions() {
        let offsets = offsets_of_a_sequence(&Pages::new(grow));
        assert_eq!(offsets_of_a_sequence(&Pages::new(grow)), offsets);
    }
}
