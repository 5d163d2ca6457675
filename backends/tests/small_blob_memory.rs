//! The small-file cache stays within its budget in real memory, counted by the allocator: with 1-byte
//! bodies and their metadata (where per-entry overhead dominates) sliced from larger read buffers
//! (which a careless cache would pin whole).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use bytes::Bytes;
use homestead_backends::small_blobs::{CAPACITY_BYTES, SmallBlobs};
use object_store::ObjectMeta;
use object_store::path::Path;

/// Bytes allocated and not yet freed by this process.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call is passed to the system allocator unchanged; only the count is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn tiny_bodies_from_large_buffers_stay_within_the_budget() {
    let cache = SmallBlobs::default();
    let before = LIVE.load(Ordering::Relaxed);
    // About three times what the budget holds at an honest per-entry cost: the oldest must go.
    for i in 0..400_000u32 {
        let buffer = Bytes::from(vec![1u8; 4096]);
        let meta = ObjectMeta {
            location: Path::from(format!("blobs/{i:032}")),
            last_modified: Default::default(),
            size: 1,
            // As a filesystem store tags a file: inode, modification time, size.
            e_tag: Some(format!("{i:x}-61f0a8b2c4d10-1")),
            version: None,
        };
        cache.insert(&meta, buffer.slice(0..1));
    }
    let grown = LIVE.load(Ordering::Relaxed) - before;
    let bound = CAPACITY_BYTES as isize * 5 / 4;
    assert!(
        grown <= bound,
        "the cache holds {grown} bytes, over its budget of {CAPACITY_BYTES} (+25 %)"
    );
    assert!(
        cache
            .get("blobs/00000000000000000000000000399999")
            .is_some()
    );
}
