//! Part buffers, reused from one part to the next.
//!
//! An upload fills a buffer of `part_size` bytes, hands it to the request that sends it, and
//! needs a new one at once. Allocated fresh each time, every 8 MiB part costs 2,048 page
//! faults when it is filled and a return to the system when it is freed (or, with glibc's
//! default policy, memory kept in its arenas for good). Recycled, a buffer is allocated once:
//! the sent part's bytes ([`Bytes`]) hand their buffer back here when the request drops them.
//! At most `keep` buffers wait here; more (several uploads at once) are freed.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

/// The free part buffers of one storage.
#[derive(Debug)]
pub(crate) struct PartBuffers {
    free: Mutex<Vec<Vec<u8>>>,
    size: usize,
    keep: usize,
}

impl PartBuffers {
    /// Buffers of `size` bytes, at most `keep` of them kept for reuse.
    pub(crate) fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            size,
            keep,
        })
    }

    /// An empty buffer with room for a part.
    pub(crate) fn take(&self) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// `buffer`'s bytes, shared without a copy; the buffer comes back here when the last
    /// clone of them is dropped.
    pub(crate) fn share(self: &Arc<Self>, buffer: Vec<u8>) -> Bytes {
        Bytes::from_owner(Recycled {
            buffer,
            pool: Arc::clone(self),
        })
    }

    /// Keeps `buffer` for a later part (if it is a part buffer and there is room).
    pub(crate) fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() != self.size {
            return;
        }
        buffer.clear();
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        if free.len() < self.keep {
            free.push(buffer);
        }
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// The owner of a shared part's bytes.
struct Recycled {
    buffer: Vec<u8>,
    pool: Arc<PartBuffers>,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buffer
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buffer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sent_part_gives_its_buffer_back_up_to_the_limit() {
        let pool = PartBuffers::new(16, 1);
        let mut first = pool.take();
        first.extend_from_slice(b"part one");
        let address = first.as_ptr();
        let bytes = pool.share(first);
        assert_eq!(&bytes[..], b"part one");
        let copy = bytes.clone();
        drop(bytes);
        assert_eq!(pool.kept(), 0, "still shared");
        drop(copy);
        assert_eq!(pool.kept(), 1);
        let again = pool.take();
        assert_eq!(again.as_ptr(), address, "the same allocation");
        assert!(again.is_empty());
        // Beyond `keep`, buffers are freed.
        let (one, two) = (pool.share(again), pool.share(pool.take()));
        drop((one, two));
        assert_eq!(pool.kept(), 1);
    }
}
