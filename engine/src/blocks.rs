//! Memory for the body buffers of clients that fill nginx's (the glue's body sink): blocks
//! mapped on their own, so
//! that one given back to the system returns its memory at once (malloc keeps freed blocks for
//! the process, and the resident memory of a thousand stalled uploads with them), and a few
//! kept per worker for the next request. Small segments come one after another, each growing
//! its buffer once: without the spares every segment paid a fresh mapping's page faults, or,
//! from malloc, a heap trim and consolidation.
//!
//! Only a worker's event loop allocates and frees body buffers, so the spares are the
//! thread's own.

use core::cell::RefCell;

/// A mapped block of `cap` bytes at `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub start: usize,
    pub cap: usize,
}

/// Spare blocks a worker keeps, and the most memory they may hold together.
const SPARES: usize = 16;
const SPARE_BYTES: usize = 4 << 20;

thread_local! {
    static SPARE: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// A block of at least `size` bytes: the smallest spare that fits, or a new mapping.
pub fn take(size: usize) -> Option<Block> {
    let spare = SPARE.with_borrow_mut(|spare| {
        let best = (0..spare.len())
            .filter(|&i| spare[i].cap >= size)
            .min_by_key(|&i| spare[i].cap)?;
        Some(spare.swap_remove(best))
    });
    if spare.is_some() {
        return spare;
    }
    let cap = size.checked_next_multiple_of(page_size())?;
    // SAFETY: an anonymous private mapping of its own, unmapped only by `give`.
    let mem = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            cap,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (mem != libc::MAP_FAILED).then_some(Block {
        start: mem as usize,
        cap,
    })
}

/// Gives a block nothing refers to any more back: kept as a spare while there is room,
/// unmapped otherwise (the oldest spare goes first).
pub fn give(block: Block) {
    let unmap = SPARE.with_borrow_mut(|spare| {
        spare.push(block);
        let mut gone = Vec::new();
        while spare.len() > SPARES || spare.iter().map(|b| b.cap).sum::<usize>() > SPARE_BYTES {
            gone.push(spare.remove(0));
        }
        gone
    });
    unmap.into_iter().for_each(release);
}

/// Unmaps a block nothing refers to any more, without keeping it: the memory of a client that
/// went quiet goes back to the system at once.
pub fn release(block: Block) {
    // SAFETY: a mapping made by `take`, which no buffer uses any more.
    unsafe { libc::munmap(block.start as *mut libc::c_void, block.cap) };
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> Vec<Block> {
        SPARE.with_borrow(Vec::clone)
    }

    /// Tests may share a thread (`--test-threads 1`): each starts without spares.
    fn without_spares() {
        SPARE
            .with_borrow_mut(core::mem::take)
            .into_iter()
            .for_each(release);
    }

    #[test]
    fn a_block_given_back_is_taken_again_for_a_size_it_fits() {
        without_spares();
        let block = take(65536).expect("mapped");
        assert!(block.cap >= 65536);
        // SAFETY: the block is ours, cap bytes long.
        unsafe { core::ptr::write_bytes(block.start as *mut u8, 7, block.cap) };
        give(block);
        assert_eq!(take(60000), Some(block));
        assert_eq!(take(1000).map(|b| b == block), Some(false));
    }

    #[test]
    fn the_smallest_spare_that_fits_is_taken() {
        without_spares();
        let (small, large) = (take(16384).unwrap(), take(262144).unwrap());
        give(large);
        give(small);
        assert_eq!(take(8192), Some(small));
        assert_eq!(take(100000), Some(large));
    }

    #[test]
    fn spares_beyond_the_limits_are_unmapped_oldest_first() {
        without_spares();
        let blocks: Vec<Block> = (0..SPARES + 2).map(|_| take(4096).unwrap()).collect();
        for b in &blocks {
            give(*b);
        }
        assert_eq!(spares(), blocks[2..]);
        let big = take(SPARE_BYTES).unwrap();
        give(big);
        assert_eq!(spares(), vec![big]);
    }
}
