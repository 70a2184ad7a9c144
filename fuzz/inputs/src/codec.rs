//! The byte encoding of the structured fuzz inputs: a [`Reader`] that accepts every input
//! (an input that ends early reads as zeros), and the [`Writer`] the seeds are written
//! with, field for field the same, so that `decode(encode(x)) == x` for every decoded `x`.

/// Reads fields from the front of a fuzz input; never fails.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// Up to `n` bytes (fewer where the input ends).
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut v = [0u8; N];
        let got = self.take(N);
        v[..got.len()].copy_from_slice(got);
        v
    }

    pub fn u8(&mut self) -> u8 {
        self.le::<1>()[0]
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.le())
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }
    /// The low bit of one byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// One of `n` choices (`n` ≤ 256), from one byte.
    pub fn choice(&mut self, n: usize) -> usize {
        usize::from(self.u8()) % n.max(1)
    }
    /// A byte string of at most `max` bytes (`max` < 65536): a u16 length, then the bytes.
    pub fn bytes(&mut self, max: usize) -> Vec<u8> {
        let len = usize::from(self.u16()) % (max + 1);
        self.take(len).to_vec()
    }
    /// A string of at most `max` characters, one byte each (Latin-1, so that any byte
    /// string decodes and bytes 128..=255 give non-ASCII characters).
    pub fn latin1(&mut self, max: usize) -> String {
        self.bytes(max).into_iter().map(char::from).collect()
    }
    /// `Some` when a flag byte says so.
    pub fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.bool().then(|| f(self))
    }
    /// Up to `max` items (`max` < 256): a count byte, then the items.
    pub fn list<T>(&mut self, max: usize, mut f: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.choice(max + 1);
        (0..n).map(|_| f(self)).collect()
    }
    /// Everything not read yet.
    pub fn rest(&mut self) -> Vec<u8> {
        self.take(self.data.len()).to_vec()
    }
}

/// Writes fields as [`Reader`] reads them (for the seeds).
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer::default()
    }
    pub fn finish(self) -> Vec<u8> {
        self.out
    }

    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }
    /// Choice `i` of `n` (as [`Reader::choice`] reads it).
    pub fn choice(&mut self, i: usize, n: usize) {
        assert!(i < n && n <= 256, "choice {i} of {n}");
        self.u8(u8::try_from(i).unwrap_or(u8::MAX));
    }
    pub fn bytes(&mut self, v: &[u8], max: usize) {
        assert!(
            v.len() <= max && max < 65536,
            "{} bytes, at most {max}",
            v.len()
        );
        self.u16(u16::try_from(v.len()).unwrap_or(u16::MAX));
        self.out.extend_from_slice(v);
    }
    /// A string of characters below 256 (as [`Reader::latin1`] reads it).
    pub fn latin1(&mut self, v: &str, max: usize) {
        let bytes: Vec<u8> = v
            .chars()
            .map(|c| u8::try_from(c).expect("a Latin-1 character"))
            .collect();
        self.bytes(&bytes, max);
    }
    pub fn opt<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            f(self, v);
        }
    }
    pub fn list<T>(&mut self, v: &[T], max: usize, mut f: impl FnMut(&mut Self, &T)) {
        self.choice(v.len(), max + 1);
        for item in v {
            f(self, item);
        }
    }
    /// The remaining bytes of the input (as [`Reader::rest`] reads them): must come last.
    pub fn rest(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_reads_as_zeros() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16(), 0x0201);
        assert_eq!(r.u32(), 3);
        assert_eq!(r.u64(), 0);
        assert!(r.bytes(10).is_empty());
        assert!(r.rest().is_empty());
    }

    #[test]
    fn writer_writes_what_reader_reads() {
        let mut w = Writer::new();
        w.u8(9);
        w.u64(u64::MAX - 1);
        w.latin1("\u{e9}t\u{e9}", 8);
        w.opt(Some(&7u32), |w, v| w.u32(*v));
        w.list(&[1u16, 2], 3, |w, v| w.u16(*v));
        w.choice(2, 3);
        w.rest(b"tail");
        let bytes = w.finish();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), 9);
        assert_eq!(r.u64(), u64::MAX - 1);
        assert_eq!(r.latin1(8), "\u{e9}t\u{e9}");
        assert_eq!(r.opt(Reader::u32), Some(7));
        assert_eq!(r.list(3, Reader::u16), vec![1, 2]);
        assert_eq!(r.choice(3), 2);
        assert_eq!(r.rest(), b"tail");
    }
}
