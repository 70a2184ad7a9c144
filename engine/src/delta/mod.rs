//! Installing an image read through byte ranges (HTTP, a local file), as a delta: only
//! the data blocks the device lacks are fetched. Pure and generic (`Read`/`Write`/`Seek`,
//! a [`RangeSource`], an injected [`Clock`]); the update crate adds devices, HTTP and
//! output.
//!
//! 1. **Signed first** ([`fetch_meta`]): the footer (the file's last 4 KiB), the manifest
//!    envelope (signatures, threshold, rollback floor, slot fit), then the hash tree,
//!    checked against the signed root hash. Nothing is written before all of it checks.
//! 2. **Plan** ([`plan::plan`]): the verified tree is the block-hash index. Each data
//!    block is, in this order: already in the target slot (kept: resume, no rewrite),
//!    present in the running slot (copied), all zero, or fetched; adjacent fetches are
//!    merged into ranges of at most `max_range` bytes.
//! 3. **Write** ([`apply::apply`]), in the order of [`crate`]: the target's footer
//!    zeroed, the data blocks (each checked against the tree before it is written; a bad
//!    answer is fetched again, never kept), the tree, the envelope; [`Written::commit`]
//!    then flips the state and writes the footer last. The target slot is the journal:
//!    after a cut anywhere, a new run keeps what is there and fetches the rest.

pub mod apply;
pub mod frame_plan;
pub mod lzc;
pub mod patched;
pub mod plan;
pub mod published;
pub mod rebuilt;
pub mod retry;
pub mod source;
pub mod tree;
pub mod ways;
pub mod zst;

use std::io;
use std::time::Duration;

pub use retry::{Backoff, Clock, RetryPolicy, Throttle, DEFAULT_MAX_TIME};
pub use source::{
    read_frame_by_range, read_patch_by_range, read_patch_with, read_whole, Abort, FetchError,
    RangeSource, ReaderSource, Sink, Streamed,
};
pub use tree::KnownHashBlocks;

use super::Written;
use stele_verifier::footer::{Footer, FOOTER_SIZE};
use stele_verifier::keys::{KeyId, Keyring};
use stele_verifier::manifest::{Envelope, Manifest};
use stele_verifier::verity::VerityParams;

/// Ranges merged from adjacent fetched blocks are at most this long by default.
pub const DEFAULT_MAX_RANGE: u64 = 4 << 20;

/// Why a delta install (or plan) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The image was refused: footer, envelope, signatures, floor, layout, hash tree.
    #[error("{0}")]
    Verify(#[source] stele_verifier::Error),
    /// Reading from the source failed and retrying did not help (or could not).
    #[error("fetching {what} of {source_name} failed: {error}{}", if *gave_up { " (gave up retrying: raise --deadline on a slow or flaky link)" } else { "" })]
    Fetch {
        source_name: String,
        what: &'static str,
        #[source]
        error: FetchError,
        /// True when the retries ran into the deadline.
        gave_up: bool,
    },
    /// The source kept sending bytes that do not match the signed hash tree.
    #[error("{source_name}: {what} did not match the signed hash tree in {answers} answers: the server does not serve the image it names")]
    BadData {
        source_name: String,
        what: String,
        answers: u32,
    },
    /// The image does not fit the slot.
    #[error("the image needs {needed} bytes but the slot holds {slot_len}: build a smaller image or repartition")]
    TooLarge { needed: u64, slot_len: u64 },
    /// Reading or writing a local slot failed.
    #[error("I/O error on {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The fetch ran past `--max-time` (the slot keeps what arrived; a new run resumes).
    #[error("{source_name}: the update did not finish within --max-time {}s: stopped; the target slot keeps the blocks that arrived and the boot state is unchanged, so running it again resumes (raise --max-time on a slow link)", limit.as_secs())]
    OutOfTime {
        source_name: String,
        limit: Duration,
    },
    /// Writing needs a manifest whose signatures were checked.
    #[error("the image's signatures were not checked: it cannot be installed")]
    Unsigned,
}

impl stele_verifier::exit::Report for DeltaError {
    /// A refused image keeps the verifier's class; a bad answer or an image too large is
    /// refused; the network and local I/O are the environment.
    fn exit(&self) -> stele_verifier::exit::Exit {
        use stele_verifier::exit::Exit;
        match self {
            DeltaError::Verify(e) => e.exit(),
            DeltaError::BadData { .. } | DeltaError::TooLarge { .. } | DeltaError::Unsigned => {
                Exit::Refused
            }
            DeltaError::Fetch { .. } | DeltaError::Io { .. } | DeltaError::OutOfTime { .. } => {
                Exit::Environment
            }
        }
    }
}

pub(crate) fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> DeltaError {
    move |source| DeltaError::Io { what, source }
}

/// Which keys the image must be signed by.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// Signatures and threshold checked against this keyring (installs).
    Keyring(&'a Keyring),
    /// Not checked: for estimates only (`stele image diff` without keys); such a
    /// [`Meta`] cannot be written.
    Unsigned,
}

/// An image's footer, envelope and hash tree, fetched and checked.
#[derive(Clone, Debug)]
pub struct Meta {
    /// The image file's length.
    pub len: u64,
    pub footer: Footer,
    pub envelope: Envelope,
    /// The envelope exactly as fetched (its sha256 is what a channel names).
    pub envelope_bytes: Vec<u8>,
    pub manifest: Manifest,
    pub params: VerityParams,
    /// The hash area, checked against the signed root hash (empty after [`fetch_head`]
    /// alone).
    pub tree: Vec<u8>,
    /// `None` when the signatures were not checked ([`Trust::Unsigned`]).
    pub signed_by: Option<Vec<KeyId>>,
    /// Bytes received for all of this.
    pub fetched: u64,
}

impl Meta {
    /// Bytes of the image before the footer's padding.
    pub fn image_len(&self) -> u64 {
        self.footer.image_len
    }
    /// The level-0 view of the tree: the digest each data block must have.
    pub fn level0(&self) -> Result<stele_verifier::verity::Level0<'_>, DeltaError> {
        stele_verifier::verity::Level0::new(
            &self.tree,
            &self.params,
            &self.manifest.verity.root_hash,
        )
        .map_err(DeltaError::Verify)
    }
}

/// Reads from a [`RangeSource`] with retries (backoff, jitter, deadline), the rate limit,
/// and the switch to one stream when the server ignores Range.
pub struct Fetcher<'a> {
    src: &'a mut dyn RangeSource,
    clock: &'a mut dyn Clock,
    backoff: Backoff,
    policy: RetryPolicy,
    throttle: Throttle,
    streamed: Option<Streamed>,
    len: Option<u64>,
    /// When the fetcher was made: [`RetryPolicy::max_time`] counts from here.
    started: Duration,
    /// Bytes received from the source.
    pub received: u64,
    /// Range requests made (answered or not).
    pub requests: u64,
}

impl std::fmt::Debug for Fetcher<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("source", &self.src.name())
            .field("received", &self.received)
            .field("streamed", &self.streamed.is_some())
            .finish()
    }
}

impl<'a> Fetcher<'a> {
    /// A fetcher of `src`, at most `max_rate` bytes per second on average.
    pub fn new(
        src: &'a mut dyn RangeSource,
        clock: &'a mut dyn Clock,
        policy: RetryPolicy,
        max_rate: Option<u64>,
    ) -> Self {
        let now = clock.now();
        Fetcher {
            src,
            clock,
            backoff: Backoff::new(policy, now),
            policy,
            throttle: Throttle::new(max_rate),
            streamed: None,
            len: None,
            started: now,
            received: 0,
            requests: 0,
        }
    }

    /// The source's name.
    pub fn name(&self) -> String {
        self.src.name()
    }

    /// The retry policy.
    pub fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// True once the server was found to ignore Range.
    pub fn streaming(&self) -> bool {
        self.streamed.is_some()
    }

    /// True once [`RetryPolicy::max_time`] has passed since the fetcher was made.
    fn out_of_time(&self, now: Duration) -> bool {
        now.saturating_sub(self.started) >= self.policy.max_time
    }

    /// [`DeltaError::OutOfTime`] when [`RetryPolicy::max_time`] has passed now: a failure
    /// then ends the install (a new run resumes), it is not a reason to try another way.
    pub fn check_time(&mut self) -> Result<(), DeltaError> {
        let now = self.clock.now();
        if self.out_of_time(now) {
            return Err(DeltaError::OutOfTime {
                source_name: self.src.name(),
                limit: self.policy.max_time,
            });
        }
        Ok(())
    }

    /// Waits after a failed attempt, or gives up (past `max_time`, the deadline, or an
    /// error retrying cannot fix). An attempt stopped by `max_time` ends here.
    pub fn failed(&mut self, what: &'static str, error: FetchError) -> Result<(), DeltaError> {
        let now = self.clock.now();
        if self.out_of_time(now) {
            return Err(DeltaError::OutOfTime {
                source_name: self.src.name(),
                limit: self.policy.max_time,
            });
        }
        let give_up = |gave_up, error| DeltaError::Fetch {
            source_name: self.src.name(),
            what,
            error,
            gave_up,
        };
        let retry_after = match &error {
            FetchError::Transient { retry_after, .. } => *retry_after,
            _ => return Err(give_up(false, error)),
        };
        let random = self.clock.random();
        match self.backoff.next_delay(now, retry_after, random) {
            // A wait that would end past max_time: stop now, it is the same end.
            Some(d) if self.out_of_time(now + d) => Err(DeltaError::OutOfTime {
                source_name: self.src.name(),
                limit: self.policy.max_time,
            }),
            Some(d) => {
                self.clock.sleep(d);
                Ok(())
            }
            None => Err(give_up(true, error)),
        }
    }

    /// The file's length (asked once, with retries).
    pub fn file_len(&mut self) -> Result<u64, DeltaError> {
        loop {
            if let Some(l) = self.len {
                return Ok(l);
            }
            match self.src.len() {
                Ok(l) => {
                    self.len = Some(l);
                    self.backoff.progress(self.clock.now());
                }
                Err(FetchError::RangesIgnored) => self.start_streaming()?,
                Err(e) => self.failed("the length", e)?,
            }
        }
    }

    fn start_streaming(&mut self) -> Result<(), DeltaError> {
        if self.streamed.is_some() {
            return Ok(());
        }
        // The stream tells the length as it starts.
        loop {
            match self.src.start_stream() {
                Ok(()) => break,
                Err(e) => self.failed("the whole file", e)?,
            }
        }
        let len = loop {
            match self.src.len() {
                Ok(l) => break l,
                Err(e) => self.failed("the length", e)?,
            }
        };
        self.len = Some(len);
        self.streamed = Some(Streamed::new(len));
        Ok(())
    }

    /// One attempt at `len` bytes at `off`, throttled, counted; a server found to ignore
    /// Range switches the fetcher to streaming and the attempt is made again that way.
    /// Past [`RetryPolicy::max_time`] no request is made and a running one is stopped at
    /// its next bytes: [`FetchError::Aborted`], which [`Fetcher::failed`] turns into
    /// [`DeltaError::OutOfTime`].
    pub fn attempt(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        let now = self.clock.now();
        if self.out_of_time(now) {
            return Err(FetchError::Aborted);
        }
        self.requests += 1;
        let clock = &mut *self.clock;
        let throttle = &mut self.throttle;
        let backoff = &mut self.backoff;
        let end = self.started.saturating_add(self.policy.max_time);
        let mut delivered = 0u64;
        let mut counted = |chunk: &[u8]| -> Result<(), Abort> {
            let now = clock.now();
            if now >= end {
                return Err(Abort);
            }
            delivered += chunk.len() as u64;
            backoff.progress(now);
            let wait = throttle.account(chunk.len() as u64, now);
            if !wait.is_zero() {
                clock.sleep(wait);
            }
            sink(chunk)
        };
        if let Some(st) = &mut self.streamed {
            let before = st.received;
            let r = st.read_range(&mut *self.src, off, len, &mut counted);
            // Bytes streamed past (discarded) were received too.
            self.received += st.received - before;
            return r;
        }
        let r = self.src.read_range(off, len, &mut counted);
        self.received += delivered;
        match r {
            Err(FetchError::RangesIgnored) => {
                let file_len = match self.len {
                    Some(l) => l,
                    None => self.src.len()?,
                };
                self.len = Some(file_len);
                self.streamed = Some(Streamed::new(file_len));
                self.attempt(off, len, sink)
            }
            other => other,
        }
    }

    /// Counts an answered frame's `len` compressed bytes as received (progress for the
    /// backoff, the rate limit's wait); hands `r` back.
    fn answered(&mut self, r: Result<(), FetchError>, len: u64) -> Result<(), FetchError> {
        if r.is_ok() {
            self.received += len;
            let now = self.clock.now();
            self.backoff.progress(now);
            let wait = self.throttle.account(len, now);
            if !wait.is_zero() {
                self.clock.sleep(wait);
            }
        }
        r
    }

    /// One attempt at frame `frame` of the source (a compressed form), decoded by the
    /// source; its compressed length is counted as received once it is answered.
    pub fn attempt_frame(&mut self, frame: &zst::Frame, sink: Sink<'_>) -> Result<(), FetchError> {
        self.requests += 1;
        let r = self.src.read_frame(frame, sink);
        self.answered(r, frame.len)
    }

    /// One attempt at frame `frame` of the source (the chained form), decoded by the
    /// source after `prime`; its compressed length is counted as received once it is
    /// answered (the priming is local: it costs no bytes on the link).
    pub fn attempt_chain(
        &mut self,
        frame: &zst::Frame,
        prime: lzc::Prime<'_>,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        self.requests += 1;
        let r = self.src.read_chain(frame, prime, sink);
        self.answered(r, frame.len)
    }

    /// One attempt at frame `frame` of the source (a published delta), decoded by the
    /// source against `reference`; its compressed length is counted as received once it
    /// is answered.
    pub fn attempt_patch(
        &mut self,
        frame: &published::PatchFrame,
        block_size: u64,
        reference: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        self.requests += 1;
        let r = self.src.read_patch(frame, block_size, reference, sink);
        self.answered(r, frame.len)
    }

    /// `len` bytes at `off` in memory, retried until they arrive whole.
    pub fn read_vec(
        &mut self,
        what: &'static str,
        off: u64,
        len: u64,
    ) -> Result<Vec<u8>, DeltaError> {
        let cap = usize::try_from(len).map_err(|_| {
            DeltaError::Verify(stele_verifier::Error::invalid(what, "too large for memory"))
        })?;
        loop {
            let mut out = Vec::with_capacity(cap);
            let mut push = |c: &[u8]| {
                out.extend_from_slice(c);
                Ok(())
            };
            match self.attempt(off, len, &mut push) {
                Ok(()) if out.len() == cap => return Ok(out),
                Ok(()) => self.failed(what, FetchError::transient("short answer"))?,
                Err(e) => self.failed(what, e)?,
            }
        }
    }

    /// [`Fetcher::read_vec`] then `check`; an answer that fails its check is fetched again
    /// (up to the policy's `bad_answers`), then the check's error is the refusal.
    pub fn read_checked<T>(
        &mut self,
        what: &'static str,
        off: u64,
        len: u64,
        mut check: impl FnMut(&[u8]) -> stele_verifier::Result<T>,
    ) -> Result<(T, Vec<u8>), DeltaError> {
        let mut tries = 0;
        loop {
            let bytes = self.read_vec(what, off, len)?;
            match check(&bytes) {
                Ok(v) => return Ok((v, bytes)),
                Err(e) => {
                    tries += 1;
                    // An I/O error or the last try: refuse.
                    if tries >= self.policy.bad_answers.max(1)
                        || matches!(e, stele_verifier::Error::Io { .. })
                    {
                        return Err(DeltaError::Verify(e));
                    }
                }
            }
        }
    }

    /// The fetcher's clock.
    pub fn now(&mut self) -> Duration {
        self.clock.now()
    }
}

/// Step 1: the footer, the envelope (checked against `trust`, `rollback_floor` and, when
/// given, that image + footer fit `slot_len`), then the hash tree against the signed
/// root hash, its level-0 blocks taken from `known` (the running slot's tree) where it
/// has them ([`tree::fetch_tree`]). Refetches an answer that fails its check; refuses
/// after the policy's `bad_answers`.
pub fn fetch_meta(
    f: &mut Fetcher<'_>,
    trust: Trust<'_>,
    rollback_floor: Option<u64>,
    slot_len: Option<u64>,
    known: Option<&KnownHashBlocks>,
) -> Result<Meta, DeltaError> {
    let mut meta = fetch_head(f, trust, rollback_floor, slot_len)?;
    fetch_tree_into(f, &mut meta, known)?;
    Ok(meta)
}

/// The hash tree of `meta` (fetched by [`fetch_head`], its tree still empty), checked
/// against the signed root hash, its level-0 blocks taken from `known` where it has
/// them; its bytes are added to `meta.fetched`.
pub fn fetch_tree_into(
    f: &mut Fetcher<'_>,
    meta: &mut Meta,
    known: Option<&KnownHashBlocks>,
) -> Result<(), DeltaError> {
    let start = f.received;
    let root = meta.manifest.verity.root_hash;
    let hash_offset = meta.manifest.verity.hash_offset;
    meta.tree = tree::fetch_tree(f, &meta.params, &root, hash_offset, known)?;
    meta.fetched += f.received - start;
    Ok(())
}

/// Step 1 without the tree: the footer and the envelope, checked as [`fetch_meta`] checks
/// them (and the layout: the tree must end before the manifest). The [`Meta`]'s `tree`
/// is empty until [`fetch_tree_into`] (or a writer that rebuilds it from what it wrote,
/// [`rebuilt`]).
pub fn fetch_head(
    f: &mut Fetcher<'_>,
    trust: Trust<'_>,
    rollback_floor: Option<u64>,
    slot_len: Option<u64>,
) -> Result<Meta, DeltaError> {
    let start = f.received;
    let len = f.file_len()?;
    let footer_at = len.checked_sub(FOOTER_SIZE).ok_or(DeltaError::Verify(
        stele_verifier::Error::Truncated {
            what: "footer",
            offset: 0,
            needed: FOOTER_SIZE,
            available: len,
        },
    ))?;
    let (footer, _) = f.read_checked("the footer", footer_at, FOOTER_SIZE, |b| {
        Footer::parse(b, len)
    })?;
    let ((envelope, manifest, signed_by), envelope_bytes) = f.read_checked(
        "the manifest",
        footer.manifest_offset,
        footer.manifest_len,
        |b| {
            let env = Envelope::parse(b)?;
            let (manifest, signed_by) = match trust {
                Trust::Keyring(k) => {
                    let v = env.verify(k)?;
                    (v.manifest, Some(v.signed_by))
                }
                Trust::Unsigned => (env.unverified_manifest()?, None),
            };
            Ok((env, manifest, signed_by))
        },
    )?;
    if let Some(floor) = rollback_floor {
        if manifest.rollback_index < floor {
            return Err(DeltaError::Verify(stele_verifier::Error::Rollback {
                index: manifest.rollback_index,
                floor,
            }));
        }
    }
    if let Some(slot_len) = slot_len {
        let needed = footer.image_len.saturating_add(FOOTER_SIZE);
        if needed > slot_len {
            return Err(DeltaError::TooLarge { needed, slot_len });
        }
    }
    let params = manifest.verity_params().map_err(DeltaError::Verify)?;
    let hash_offset = manifest.verity.hash_offset;
    let tree_size = params.hash_tree_size();
    let hash_end = hash_offset.saturating_add(tree_size);
    if hash_end > footer.manifest_offset {
        return Err(DeltaError::Verify(stele_verifier::Error::invalid(
            "slot layout",
            format!(
                "the hash tree ends at {hash_end} but the manifest starts at {}: the footer does not match the signed manifest",
                footer.manifest_offset
            ),
        )));
    }
    Ok(Meta {
        len,
        footer,
        envelope,
        envelope_bytes,
        manifest,
        params,
        tree: Vec::new(),
        signed_by,
        fetched: f.received - start,
    })
}

#[cfg(test)]
mod lzc_way_tests;
#[cfg(test)]
mod patched_tests;
#[cfg(test)]
mod rebuilt_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod ways_tests;
