//! Writing model files so that the kernel caches them in 2 MiB pages.
//!
//! Linux (6.x, ext4/XFS with large folios) sizes a file's page-cache folios
//! by the writes that created them: a file written 8 or 64 KiB at a time
//! stays cached in small folios, and a memory map of it then needs a 4 KiB
//! page-table entry per page; written in whole 2 MiB-aligned chunks, the
//! cache holds 2 MiB folios and the map uses huge pages (one TLB entry per
//! 2 MiB, prefetches not stopped at every 4 KiB). Decoding streams every
//! weight once per token: on a 2-core Xeon, Gemma 3 4B Q4_K_M tg64 ran at
//! 5.15–5.31 t/s from a file written 64 KiB at a time and at 5.55–5.68 t/s
//! from the same bytes written 2 MiB at a time (alternating runs;
//! docs/PERFORMANCE.md).

use std::io::{self, Write};

/// The chunk every write but the last hands the file: one PMD-sized page.
pub const CHUNK: usize = 2 << 20;

/// A buffered writer that passes its inner writer exactly [`CHUNK`] bytes at
/// a time (then the rest at `flush`), so a file written from its start
/// receives only 2 MiB-aligned whole-chunk writes.
pub struct FolioWriter<W: Write> {
    /// `None` only after `into_inner`.
    inner: Option<W>,
    buf: Vec<u8>,
}

impl<W: Write> FolioWriter<W> {
    /// Wrap `inner`, which must be positioned at a multiple of [`CHUNK`]
    /// (a new file) for the writes to be aligned.
    pub fn new(inner: W) -> Self {
        Self { inner: Some(inner), buf: Vec::with_capacity(CHUNK) }
    }

    /// Flush everything and return the inner writer (e.g. to `sync_all` a file).
    pub fn into_inner(mut self) -> io::Result<W> {
        self.flush()?;
        Ok(self.inner.take().expect("present until into_inner"))
    }
}

impl<W: Write> Write for FolioWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK {
            self.inner.as_mut().expect("present until into_inner").write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        let Some(inner) = self.inner.as_mut() else { return Ok(()) };
        if !self.buf.is_empty() {
            inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        inner.flush()
    }
}

impl<W: Write> Drop for FolioWriter<W> {
    fn drop(&mut self) {
        // As `BufWriter`: a best-effort flush; callers that care call `flush`.
        let _ = self.flush();
    }
}

/// Ask that the pages of a file map which are not cached yet be read in
/// 2 MiB folios (`MADV_HUGEPAGE`: a read fault then reads ahead a whole
/// PMD-sized folio, which the map takes as one huge page). Advice only:
/// pages already cached keep their folios, and kernels without THP ignore it.
pub fn advise_huge(map: &memmap2::Mmap) {
    #[cfg(unix)]
    let _ = map.advise(memmap2::Advice::HugePage);
    #[cfg(not(unix))]
    let _ = map;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the length of every write it receives.
    struct Sizes(Vec<usize>, Vec<u8>);
    impl Write for Sizes {
        fn write(&mut self, d: &[u8]) -> io::Result<usize> {
            self.0.push(d.len());
            self.1.extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_but_the_last_is_one_whole_chunk() {
        let data: Vec<u8> = (0..CHUNK * 3 + 12345).map(|i| (i * 31 % 251) as u8).collect();
        // Pieces of odd sizes, one larger than a chunk.
        let mut w = FolioWriter::new(Sizes(Vec::new(), Vec::new()));
        let mut at = 0;
        for len in [1usize, 7, 8192, CHUNK + 3, 65536, 1 << 20].iter().cycle() {
            let end = (at + len).min(data.len());
            w.write_all(&data[at..end]).unwrap();
            at = end;
            if at == data.len() {
                break;
            }
        }
        let Sizes(sizes, got) = w.into_inner().unwrap();
        assert_eq!(got, data, "bytes lost or reordered");
        assert_eq!(sizes, vec![CHUNK, CHUNK, CHUNK, 12345]);
    }

    #[test]
    fn dropping_flushes_the_tail() {
        let mut out = Vec::new();
        {
            let mut w = FolioWriter::new(&mut out);
            w.write_all(b"tail").unwrap();
        }
        assert_eq!(out, b"tail");
    }
}
