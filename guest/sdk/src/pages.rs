//! A machine component's allocator: an allocation of a page or more lies on whole pages
//! of its own, and nothing is written to them but what the machine writes.
//!
//! Rust's allocator for wasm32 (dlmalloc) keeps a header in front of every allocation
//! and zeroes what `alloc_zeroed` returns itself. A machine's `init` makes its buffers
//! all at once (the LSM's blocks and tables, its free set), and so wrote to a page of
//! each: ~257 pages for echo, every one a page fault in the host, most of an empty
//! `open`'s time. Here an allocation of at least [`PAGE`] bytes takes a region of 2^k
//! pages (its class), from its class's free list or else from memory fresh from
//! `memory.grow`, which wasm guarantees is zero: a buffer's pages are first touched when
//! the machine writes them. Smaller allocations, and any aligned past a page, stay
//! dlmalloc's.
//!
//! A freed region goes to the front of its class's list (its first word links the
//! next), and is reused as it is: `alloc_zeroed` zeroes only a reused region. Regions
//! are never split nor merged, so memory holds, for each class, the most regions of it
//! ever live at once: a machine that allocates its buffers at `init` reaches that at
//! once. A region wastes up to half its address space, never a page the machine does
//! not write.
//! Everything here is deterministic: a component runs on one thread, and which region
//! an allocation gets depends only on the allocations before it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr;

/// The unit of large allocations: the host's page (wasm's own is 64 KiB).
pub(crate) const PAGE: usize = 4096;
/// wasm's page, the unit `memory.grow` counts in.
const WASM_PAGE: usize = 65536;
/// Memory grows by at least this much at a time, so that growing is rare.
const GROW_MIN: usize = 1 << 20;
/// Regions of 1 to 2^19 pages (2 GiB, the largest a 32-bit size reaches by doubling).
const CLASSES: usize = 20;

/// Grows memory by this many wasm pages; the address of the new memory, or `None` when
/// it cannot grow.
pub(crate) type Grow = fn(usize) -> Option<usize>;

/// The allocator: free lists of regions by class, and the fresh memory not yet handed
/// out, `next..end`.
pub(crate) struct Pages {
    grow: Grow,
    /// The first free region of each class; 0 when there is none (memory.grow never
    /// returns address 0: a module's stack and data lie below).
    free: [Cell<usize>; CLASSES],
    next: Cell<usize>,
    end: Cell<usize>,
}

// SAFETY: a component instance runs on one thread (wasm32 without threads), the only
// place the allocator is global; tests use their own instances, each on one thread.
unsafe impl Sync for Pages {}

/// The class of a region that holds `layout`, if it is large: `Some(k)` for 2^k pages
/// (`k` may be past the largest class, which no allocation can have).
fn class_of(layout: Layout) -> Option<usize> {
    if layout.size() < PAGE || layout.align() > PAGE {
        return None;
    }
    let pages = layout.size().div_ceil(PAGE);
    Some(pages.next_power_of_two().trailing_zeros() as usize)
}

impl Pages {
    pub(crate) const fn new(grow: Grow) -> Pages {
        Pages {
            grow,
            free: [const { Cell::new(0) }; CLASSES],
            next: Cell::new(0),
            end: Cell::new(0),
        }
    }

    /// A region of `class`, and whether it is fresh (zero, never handed out).
    fn take(&self, class: usize) -> Option<(*mut u8, bool)> {
        if class >= CLASSES {
            return None;
        }
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
    /// `bytes` alone when memory cannot grow so far (near its limit). Memory that grew
    /// elsewhere in between (dlmalloc grows it too) leaves the fresh rest behind: it is
    /// handed to the free lists, so none is lost.
    fn grow_by(&self, bytes: usize) -> Option<()> {
        let needed = bytes.div_ceil(WASM_PAGE);
        let (start, wasm_pages) = [GROW_MIN.div_ceil(WASM_PAGE).max(needed), needed]
            .into_iter()
            .find_map(|wasm_pages| Some(((self.grow)(wasm_pages)?, wasm_pages)))?;
        if start != self.end.get() {
            self.give_back_rest();
            self.next.set(start);
        }
        self.end.set(start + wasm_pages * WASM_PAGE);
        Some(())
    }

    /// Hand the fresh memory left, `next..end`, to the free lists, largest region first.
    fn give_back_rest(&self) {
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

    #[test]
    fn large_allocations_are_page_aligned_disjoint_and_zeroed_even_when_reused() {
        let pages = Pages::new(grow);
        let sizes = [PAGE, 5000, 3 * PAGE, 64 << 10, 100_000, 1 << 20];
        let mut regions = Vec::new();
        // The second round reuses every region the first freed, garbage in them.
        for _ in 0..2 {
            for &size in &sizes {
                let (region, bytes) = allocate(&pages, size, true);
                assert_eq!(region % PAGE, 0);
                assert!(bytes.iter().all(|&byte| byte == 0), "{size} bytes zeroed");
                bytes.fill(0xa5);
                regions.push((region, size));
            }
            regions.sort();
            for pair in regions.windows(2) {
                assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
            }
            for (region, size) in regions.drain(..) {
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
        // One region of each class up to 1 MiB, then many allocations of sizes up to
        // 1 MiB, each freed: memory does not grow again.
        for class in 0..=8 {
            let (region, _) = allocate(&pages, PAGE << class, false);
            free(&pages, region, PAGE << class);
        }
        let after_one_of_each = grown();
        let mut seed = 7u64;
        for _ in 0..2000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let size = PAGE + (seed >> 33) as usize % ((1 << 20) - PAGE + 1);
            let (region, _) = allocate(&pages, size, false);
            free(&pages, region, size);
        }
        assert_eq!(grown(), after_one_of_each);
    }

    #[test]
    fn reallocation_keeps_a_region_within_its_class_and_moves_the_bytes_across() {
        let pages = Pages::new(grow);
        let (region, bytes) = allocate(&pages, 5000, false);
        bytes.fill(7);
        let sevens = |at: *mut u8, size: usize| {
            // SAFETY: `at` is a live allocation of at least `size` bytes.
            unsafe { std::slice::from_raw_parts(at, size) }
                .iter()
                .all(|&byte| byte == 7)
        };
        // SAFETY: each call passes the live allocation and the layout it has.
        unsafe {
            let same = pages.realloc(region as *mut u8, layout(5000), 8000);
            assert_eq!(
                same as usize, region,
                "5,000 and 8,000 bytes are both two pages"
            );
            let moved = pages.realloc(same, layout(8000), 40_000);
            assert_ne!(moved, same);
            assert!(sevens(moved, 5000));
            // Down to a small allocation: the bytes go to `System`'s.
            let small = pages.realloc(moved, layout(40_000), 100);
            assert!(sevens(small, 100));
            pages.dealloc(small, layout(100));
        }
    }

    #[test]
    fn small_or_overaligned_allocations_are_dlmallocs_and_too_large_ones_fail() {
        let pages = Pages::new(grow);
        let before = grown();
        assert!(!fails(&pages, layout(PAGE - 1)));
        assert!(!fails(
            &pages,
            Layout::from_size_align(PAGE, 2 * PAGE).unwrap()
        ));
        assert!(
            fails(&pages, layout(PAGE << CLASSES)),
            "past the largest class"
        );
        assert!(
            fails(&pages, layout(MEMORY_SIZE)),
            "memory cannot grow so far"
        );
        assert_eq!(grown(), before);
    }

    #[test]
    fn near_its_limit_memory_grows_by_only_what_an_allocation_needs() {
        let pages = Pages::new(grow);
        // 512 KiB left: not enough for the usual 1 MiB of growth.
        steal(MEMORY_SIZE / WASM_PAGE - grown() / WASM_PAGE - 8);
        let (region, _) = allocate(&pages, 256 << 10, false);
        assert_eq!(grown(), MEMORY_SIZE - (256 << 10));
        assert!(fails(&pages, layout(512 << 10)), "256 KiB are left");
        free(&pages, region, 256 << 10);
    }

    #[test]
    fn memory_grown_by_another_leaves_the_fresh_rest_to_the_free_lists() {
        let pages = Pages::new(grow);
        // Memory grows by 1 MiB: one page used, 255 fresh.
        let (first, _) = allocate(&pages, PAGE, false);
        steal(1);
        // 1 MiB does not fit the rest: memory grows again, past the stolen 64 KiB, and
        // the 255 fresh pages go to the free lists.
        let (large, _) = allocate(&pages, 1 << 20, false);
        assert!(large > first + (1 << 20));
        let before = grown();
        // 128 + 64 + 32 + 16 + 8 + 4 + 2 + 1 pages, all from the rest.
        for class in 0..8 {
            let (region, _) = allocate(&pages, PAGE << class, false);
            assert!(region < large, "class {class} from the rest");
        }
        assert_eq!(grown(), before);
    }
}
