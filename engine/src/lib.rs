//! Installing a slot image (the update bundle) into an inactive slot, safely.
//!
//! Order of writes, so that a power cut at any moment leaves a bootable device:
//! 1. the bundle's signatures, rollback index, size and hash tree are checked first when
//!    the bundle can be read out of order (a file); a bundle refused here touches nothing
//!    (one whose data does not match is refused in step 3, with the target slot left
//!    unbootable, never the running one);
//! 2. the target slot's footer (its last 4 KiB) is zeroed and flushed: from here on the slot
//!    is refused at boot until step 4, whatever else is on it;
//! 3. the image is copied into the slot while its hash tree is computed, and the computed
//!    root hash is compared with the signed one (a stream from stdin, which cannot be read
//!    out of order, is instead verified in full from the slot once it is written);
//! 4. [`Written::commit`] flips the boot state: new slot first, 3 tries, not yet good;
//! 5. and only then writes the footer to the slot's last 4 KiB, and flushes.
//!
//! The boot state is written only in step 4, after every check, so a refused bundle leaves
//! it untouched. Because the footer comes after the flip, the slot's old record in the
//! state (perhaps "successful", perhaps first in line) never applies to the new content: a
//! power cut before step 4 leaves a slot without a footer, refused at boot; one between 4
//! and 5 leaves a trial slot without a footer, refused at boot, and the old slot boots.
//! Generic over `Read`/`Write`/`Seek`; flushing to stable storage is the caller's `sync`.

use std::io::{self, Read, Seek, SeekFrom};

use stele_verifier::footer::{Footer, FOOTER_LEN, FOOTER_SIZE};
use stele_verifier::keys::Keyring;
use stele_verifier::manifest::VerifiedManifest;
use stele_verifier::progress::{Progress, Silent, Step};
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::state::{self, BootState, Slot};
use stele_verifier::verity::TreeBuilder;
use stele_verifier::{hex, Error, Result};

pub mod delta;
pub mod recorder_write;
pub mod reset_write;
pub mod state_write;
pub mod storage;

pub use storage::Storage;

/// Tries a freshly installed slot gets before it is abandoned.
pub const NEW_SLOT_TRIES: u8 = 3;

/// Copy buffer size.
const COPY_BUFFER: usize = 1 << 20;

/// What a bundle must satisfy to be installed: signed by the device's keyring, a
/// rollback_index at or above `rollback_floor`, and (when the device is bound to a
/// product) that product's `name`.
#[derive(Clone, Copy, Debug)]
pub struct Policy<'a> {
    pub keyring: &'a Keyring,
    pub rollback_floor: u64,
    pub product: Option<&'a str>,
}

impl Policy<'_> {
    /// The options of [`slot::verify`] that apply this policy.
    fn verify_options(&self, full: bool) -> VerifyOptions<'_> {
        VerifyOptions {
            full,
            rollback_floor: Some(self.rollback_floor),
            product: self.product,
        }
    }
}

/// An image written to a slot and checked there, without its footer yet: the slot cannot
/// boot until [`Written::commit`].
#[derive(Clone, Debug)]
#[must_use = "the slot cannot boot until the install is committed"]
pub struct Written {
    /// The verified manifest of the new image.
    pub verified: VerifiedManifest,
    /// Bytes of the image written to the slot (without its footer).
    pub image_len: u64,
    footer: Footer,
}

impl Written {
    /// Steps 4 and 5: flips the boot state to `target` ([`activate`]), then writes the
    /// footer into the slot's last 4 KiB and flushes it. Returns the new state.
    pub fn commit<D: Storage, S: Storage>(
        self,
        slot: &mut D,
        slot_len: u64,
        state: &mut S,
        target: Slot,
    ) -> Result<BootState> {
        let st = activate(state, target)?;
        write_footer(slot, slot_len, &self.footer)?;
        Ok(st)
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |e| Error::io(what, e)
}

fn too_large(needed: u64, slot_len: u64) -> Error {
    Error::invalid(
        "bundle",
        format!(
            "the image needs {needed} bytes but the slot holds {slot_len}: \
             build a smaller image or repartition"
        ),
    )
}

/// Zeroes the slot's footer so the slot cannot boot while it is being rewritten.
fn invalidate<D: Storage>(slot: &mut D, slot_len: u64) -> Result<()> {
    let at = slot_len
        .checked_sub(FOOTER_SIZE)
        .ok_or_else(|| too_large(FOOTER_SIZE, slot_len))?;
    slot.seek(SeekFrom::Start(at))
        .map_err(io_err("slot footer"))?;
    slot.write_all(&[0u8; FOOTER_LEN])
        .map_err(io_err("slot footer"))?;
    slot.sync().map_err(io_err("slot footer"))
}

fn write_footer<D: Storage>(slot: &mut D, slot_len: u64, footer: &Footer) -> Result<()> {
    slot.seek(SeekFrom::Start(slot_len - FOOTER_SIZE))
        .map_err(io_err("slot footer"))?;
    slot.write_all(&footer.to_bytes())
        .map_err(io_err("slot footer"))?;
    slot.sync().map_err(io_err("slot footer"))
}

/// A bundle read out of order whose signatures, rollback index, size and hash tree have
/// been checked ([`check_seekable`]); nothing has been written yet.
#[derive(Clone, Debug)]
pub struct Checked {
    loc: slot::SlotLocator,
    verified: VerifiedManifest,
}

impl Checked {
    /// The verified manifest of the bundle.
    pub fn verified(&self) -> &VerifiedManifest {
        &self.verified
    }
}

/// Step 1 for a bundle that can be read out of order (a file of `bundle_len` bytes):
/// everything that can be checked without touching the slot.
pub fn check_seekable<R: Read + Seek>(
    bundle: &mut R,
    bundle_len: u64,
    slot_len: u64,
    policy: &Policy<'_>,
) -> Result<Checked> {
    let (loc, verified) = slot::verify(
        bundle,
        bundle_len,
        policy.keyring,
        policy.verify_options(false),
    )?;
    let needed = loc
        .footer
        .image_len
        .checked_add(FOOTER_SIZE)
        .ok_or_else(|| too_large(u64::MAX, slot_len))?;
    if needed > slot_len {
        return Err(too_large(needed, slot_len));
    }
    Ok(Checked { loc, verified })
}

/// Steps 1-3 for a bundle that can be read out of order (a file of `bundle_len` bytes):
/// [`check_seekable`], then [`write_checked`]. [`Written::commit`] finishes.
pub fn install_seekable<R: Read + Seek, D: Storage>(
    bundle: &mut R,
    bundle_len: u64,
    slot: &mut D,
    slot_len: u64,
    policy: &Policy<'_>,
) -> Result<Written> {
    let checked = check_seekable(bundle, bundle_len, slot_len, policy)?;
    write_checked(bundle, checked, slot, slot_len, &mut Silent)
}

/// Steps 2-3 for a [`Checked`] bundle: the slot's footer is zeroed, the image is copied
/// while its hash tree is computed, both the tree and the root hash must match the signed
/// manifest, and the verified envelope is written. [`Written::commit`] finishes. The copy
/// is reported to `progress`.
pub fn write_checked<R: Read + Seek, D: Storage>(
    bundle: &mut R,
    checked: Checked,
    slot: &mut D,
    slot_len: u64,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let Checked { loc, verified } = checked;
    let image_len = loc.footer.image_len;
    if image_len.saturating_add(FOOTER_SIZE) > slot_len {
        return Err(too_large(image_len.saturating_add(FOOTER_SIZE), slot_len));
    }
    let m = &verified.manifest;
    let params = m.verity_params()?;
    let hash_offset = m.verity.hash_offset;
    let hash_end = hash_offset + params.hash_tree_size();

    // 2. The slot cannot boot from now until the footer is back.
    invalidate(slot, slot_len)?;

    // 3. Copy data and hash tree, hashing the data on the way. Only these are read again
    //    from the bundle; the manifest written is the envelope verified in step 1, so a
    //    bundle that changes while it is read cannot slip in anything unchecked.
    bundle.seek(SeekFrom::Start(0)).map_err(io_err("bundle"))?;
    slot.seek(SeekFrom::Start(0)).map_err(io_err("slot"))?;
    let mut tree = TreeBuilder::new(params.clone());
    let mut stored_tree = Vec::new();
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut pos = 0u64;
    let mut step = Step::new(progress, "writing", Some(hash_end));
    while pos < hash_end {
        let want = usize::try_from((hash_end - pos).min(COPY_BUFFER as u64)).unwrap_or(COPY_BUFFER);
        let chunk = &mut buf[..want];
        bundle.read_exact(chunk).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Truncated {
                what: "bundle",
                offset: pos,
                needed: want as u64,
                available: 0,
            },
            _ => Error::io("bundle", e),
        })?;
        // Data part of this chunk feeds the tree; hash-tree part is kept to compare.
        let start = pos;
        let end = pos + want as u64;
        if start < hash_offset {
            let n = usize::try_from(end.min(hash_offset) - start).unwrap_or(want);
            tree.update(&chunk[..n])?;
        }
        if end > hash_offset {
            let from = usize::try_from(hash_offset.saturating_sub(start)).unwrap_or(0);
            stored_tree.extend_from_slice(&chunk[from..]);
        }
        slot.write_all(chunk).map_err(io_err("slot"))?;
        step.advance(want as u64);
        pos = end;
    }
    drop(step);
    let (computed_tree, root) = tree.finish()?;
    if root != m.verity.root_hash {
        return Err(Error::DataRootMismatch {
            computed: hex::encode(&root),
            expected: hex::encode(&m.verity.root_hash),
        });
    }
    if computed_tree != stored_tree {
        // Step 1 checked this tree: the bundle changed while it was being read.
        return Err(Error::invalid(
            "bundle",
            "its hash tree changed while it was being read; install from a file nobody writes",
        ));
    }
    let envelope = loc.envelope.to_bytes();
    let padding = loc
        .footer
        .manifest_offset
        .checked_sub(hash_end)
        .ok_or_else(|| Error::invalid("slot layout", "the manifest overlaps the hash tree"))?;
    io::copy(&mut io::repeat(0).take(padding), slot).map_err(io_err("slot"))?;
    slot.write_all(&envelope).map_err(io_err("slot"))?;
    slot.flush().map_err(io_err("slot"))?;
    slot.sync().map_err(io_err("slot"))?;
    Ok(Written {
        verified,
        image_len,
        footer: loc.footer,
    })
}

/// Installs a bundle read front to back (stdin, a pipe from a download).
///
/// The signatures are at the end of the bundle, so the image is written to the (already
/// invalidated) slot first and then verified in full from the slot: signatures, rollback
/// floor, hash tree and every data block. The footer is written by [`Written::commit`].
/// The copy and the check are reported to `progress`.
pub fn install_stream<R: Read, D: Storage>(
    bundle: &mut R,
    slot: &mut D,
    slot_len: u64,
    policy: &Policy<'_>,
    progress: &mut dyn Progress,
) -> Result<Written> {
    let capacity = slot_len
        .checked_sub(FOOTER_SIZE)
        .ok_or_else(|| too_large(FOOTER_SIZE, slot_len))?;
    invalidate(slot, slot_len)?;
    slot.seek(SeekFrom::Start(0)).map_err(io_err("slot"))?;

    // The last 4096 bytes of the stream are the footer: hold them back, never write them at
    // their stream position (which is the partition's end when the sizes are equal).
    let hold = FOOTER_LEN;
    let mut pending: Vec<u8> = Vec::with_capacity(COPY_BUFFER + hold);
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut written = 0u64;
    let mut step = Step::new(&mut *progress, "writing", None);
    loop {
        let n = match bundle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("bundle", e)),
        };
        pending.extend_from_slice(&buf[..n]);
        step.advance(n as u64);
        if pending.len() > hold {
            let out = pending.len() - hold;
            if written + out as u64 > capacity {
                // The size of the whole stream, not how far it got: read the rest.
                let rest = io::copy(bundle, &mut io::sink()).map_err(io_err("bundle"))?;
                return Err(too_large(written + pending.len() as u64 + rest, slot_len));
            }
            slot.write_all(&pending[..out]).map_err(io_err("slot"))?;
            written += out as u64;
            pending.drain(..out);
        }
    }
    if pending.len() < hold {
        return Err(Error::Truncated {
            what: "bundle",
            offset: written,
            needed: FOOTER_SIZE,
            available: pending.len() as u64,
        });
    }
    slot.flush().map_err(io_err("slot"))?;
    slot.sync().map_err(io_err("slot"))?;
    drop(step);

    // Verify the slot as the bundle: its first `written` bytes followed by the held footer.
    let total = written + FOOTER_SIZE;
    let mut step = Step::new(progress, "verifying", Some(total));
    let mut view = step.reader(WithFooter {
        dev: &mut *slot,
        body_len: written,
        footer: &pending,
        pos: 0,
    });
    let (loc, verified) = slot::verify(
        &mut view,
        total,
        policy.keyring,
        policy.verify_options(true),
    )?;
    Ok(Written {
        verified,
        image_len: loc.footer.image_len,
        footer: loc.footer,
    })
}

/// Flips the boot state after a successful install into `slot`: it becomes the first
/// choice with [`NEW_SLOT_TRIES`] tries, not yet good; the running slot stays the fallback.
/// Reads the state, then writes it by the one protocol ([`state_write::store`]).
pub fn activate<D: Storage>(dev: &mut D, slot: Slot) -> Result<BootState> {
    let (mut st, mut copy) = state::load(dev)?;
    st.activate_new(slot, NEW_SLOT_TRIES);
    state_write::store(dev, &mut st, &mut copy).map_err(|e| match e {
        state_write::StateWriteError::Write(e) => e,
        state_write::StateWriteError::Flush(e) => Error::io("boot state", e),
    })?;
    Ok(st)
}

/// A read-only view: the first `body_len` bytes of `dev`, then `footer`.
struct WithFooter<'a, D> {
    dev: &'a mut D,
    body_len: u64,
    footer: &'a [u8],
    pos: u64,
}

impl<D: Read + Seek> Read for WithFooter<'_, D> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.body_len {
            let n = usize::try_from((self.body_len - self.pos).min(out.len() as u64))
                .unwrap_or(out.len());
            self.dev.seek(SeekFrom::Start(self.pos))?;
            let got = self.dev.read(&mut out[..n])?;
            self.pos += got as u64;
            return Ok(got);
        }
        let off = usize::try_from(self.pos - self.body_len).unwrap_or(usize::MAX);
        let rest = self.footer.get(off..).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<D> Seek for WithFooter<'_, D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let len = self.body_len + self.footer.len() as u64;
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            )),
        }
    }
}

#[cfg(test)]
mod power_cut;
#[cfg(test)]
mod power_cut_delta;
#[cfg(test)]
mod power_cut_recorder;
#[cfg(test)]
mod power_cut_reset;

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;
    use std::io::Cursor;
    use stele_verifier::state::initialize;
    use stele_verifier::testutil::{image, ring, trusted};

    pub(super) const SLOT_LEN: u64 = 1 << 20;

    /// The policy of a device trusting `key(1)` with rollback floor `floor`, not bound to
    /// a product.
    pub(super) fn policy(rollback_floor: u64) -> Policy<'static> {
        Policy {
            keyring: trusted(),
            rollback_floor,
            product: None,
        }
    }

    pub(super) fn blank_slot() -> Cursor<Vec<u8>> {
        Cursor::new(vec![0xee; SLOT_LEN as usize])
    }

    /// Steps 4-5 with a scratch boot state: the slot gets its footer.
    pub(super) fn commit(w: Written, slot: &mut Cursor<Vec<u8>>) -> Written {
        let mut st = Cursor::new(vec![0u8; 8192]);
        initialize(&mut st, &BootState::initial(true)).unwrap();
        let after = w.clone().commit(slot, SLOT_LEN, &mut st, Slot::B).unwrap();
        assert_eq!(after.choose(), Some(Slot::B));
        assert_eq!(after.slot(Slot::B).tries_remaining, NEW_SLOT_TRIES);
        w
    }

    /// [`install_seekable`] of a bundle file held in memory, trusting `key(1)`.
    pub(super) fn install_file<D: Storage>(
        bundle: &[u8],
        slot: &mut D,
        slot_len: u64,
        floor: u64,
    ) -> Result<Written> {
        let len = bundle.len() as u64;
        install_seekable(
            &mut Cursor::new(bundle),
            len,
            slot,
            slot_len,
            &policy(floor),
        )
    }

    pub(super) fn verify_slot(slot: &mut Cursor<Vec<u8>>) -> Result<VerifiedManifest> {
        let full = VerifyOptions {
            full: true,
            ..VerifyOptions::default()
        };
        slot::verify(slot, SLOT_LEN, &ring(), full).map(|(_, v)| v)
    }

    #[test]
    fn seekable_install_makes_a_verifiable_slot() {
        let (img, _) = image(40, 3, 1);
        let mut slot = blank_slot();
        let done = install_file(&img, &mut slot, SLOT_LEN, 2).unwrap();
        // Written but not committed: no footer, the slot cannot boot yet.
        assert!(verify_slot(&mut slot).is_err());
        let done = commit(done, &mut slot);
        assert_eq!(done.verified.manifest.rollback_index, 3);
        assert!(done.image_len + FOOTER_SIZE <= img.len() as u64);
        assert_eq!(verify_slot(&mut slot).unwrap().manifest.version, "3.1");
    }

    #[test]
    fn stream_install_makes_a_verifiable_slot() {
        let (img, _) = image(40, 3, 2);
        let mut slot = blank_slot();
        // A reader that hands out odd-sized pieces, like a pipe.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(out.len()).min(1000);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let done = install_stream(
            &mut Dribble(&img),
            &mut slot,
            SLOT_LEN,
            &policy(0),
            &mut stele_verifier::progress::Silent,
        )
        .unwrap();
        let done = commit(done, &mut slot);
        assert_eq!(done.verified.manifest.version, "3.2");
        verify_slot(&mut slot).unwrap();
    }

    #[test]
    fn refused_bundles_leave_the_slot_untouched_when_seekable() {
        let (img, manifest_offset) = image(40, 3, 1);
        let other_product = Policy {
            product: Some("router"),
            ..policy(0)
        };
        let cases: Vec<(Vec<u8>, Policy<'_>, &str)> = vec![
            // A flipped bit in the manifest body.
            (
                {
                    let mut b = img.clone();
                    let at = manifest_offset as usize + 24 + 72 + 5;
                    b[at] ^= 1;
                    b
                },
                policy(0),
                "signature",
            ),
            // Below the rollback floor.
            (img.clone(), policy(4), "rollback"),
            // Another product's image, signed by a trusted key.
            (img.clone(), other_product, "product refused"),
        ];
        for (bundle, policy, why) in cases {
            let mut slot = blank_slot();
            let err = install_seekable(
                &mut Cursor::new(&bundle),
                bundle.len() as u64,
                &mut slot,
                SLOT_LEN,
                &policy,
            )
            .unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
            assert!(
                slot.get_ref().iter().all(|&b| b == 0xee),
                "{why}: slot was written"
            );
        }
    }

    #[test]
    fn tampered_data_is_refused_and_the_slot_cannot_boot() {
        let (mut img, _) = image(40, 3, 1);
        img[4096 * 7 + 11] ^= 0x80;
        let mut slot = blank_slot();
        let err = install_file(&img, &mut slot, SLOT_LEN, 0).unwrap_err();
        assert!(matches!(err, Error::DataRootMismatch { .. }), "{err}");
        assert!(verify_slot(&mut slot).is_err());

        let mut slot = blank_slot();
        let err = install_stream(&mut &img[..], &mut slot, SLOT_LEN, &policy(0), &mut Silent)
            .unwrap_err();
        // From a stream the product is checked too, once the image is in the slot.
        let (good, _) = image(40, 3, 1);
        let mut other = blank_slot();
        let bound = Policy {
            product: Some("router"),
            ..policy(0)
        };
        let e =
            install_stream(&mut &good[..], &mut other, SLOT_LEN, &bound, &mut Silent).unwrap_err();
        assert!(matches!(e, Error::WrongProduct { .. }), "{e}");
        assert!(
            matches!(err, Error::DataBlockMismatch { block: 7 }),
            "{err}"
        );
        assert!(verify_slot(&mut slot).is_err());
    }

    /// A bundle file that changes between the check and the copy (the second pass from
    /// offset 0): the manifest written is the one that was verified, and a changed tree or
    /// data is refused.
    #[test]
    fn bundle_changing_while_read_cannot_slip_anything_in() {
        struct Changing {
            data: Vec<u8>,
            pos: usize,
            rewinds: usize,
            flip_at: usize,
        }
        impl Read for Changing {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let rest = self.data.get(self.pos..).unwrap_or(&[]);
                let n = rest.len().min(out.len());
                out[..n].copy_from_slice(&rest[..n]);
                self.pos += n;
                Ok(n)
            }
        }
        impl Seek for Changing {
            fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
                self.pos = match to {
                    SeekFrom::Start(p) => p as usize,
                    SeekFrom::End(d) => self.data.len().checked_add_signed(d as isize).unwrap(),
                    SeekFrom::Current(d) => self.pos.checked_add_signed(d as isize).unwrap(),
                };
                if self.pos == 0 {
                    self.rewinds += 1;
                    // The copy pass starts with the second rewind (the check starts with
                    // the data pass of verify only when `full`; it reads the tail first).
                    if self.rewinds == 1 {
                        self.data[self.flip_at] ^= 0x40;
                    }
                }
                Ok(self.pos as u64)
            }
        }
        let (img, manifest_offset) = image(40, 3, 1);
        // A changed manifest body: the verified one is written anyway.
        let mut bundle = Changing {
            data: img.clone(),
            pos: 0,
            rewinds: 0,
            flip_at: manifest_offset as usize + 24 + 72 + 3,
        };
        let mut slot = blank_slot();
        let w = install_seekable(
            &mut bundle,
            img.len() as u64,
            &mut slot,
            SLOT_LEN,
            &policy(0),
        )
        .unwrap();
        let _ = commit(w, &mut slot);
        assert_eq!(bundle.rewinds, 1, "the copy rewinds once");
        verify_slot(&mut slot).unwrap();
        // A changed hash block: refused.
        let mut bundle = Changing {
            data: img.clone(),
            pos: 0,
            rewinds: 0,
            flip_at: 40 * 4096 + 5,
        };
        let mut slot = blank_slot();
        let err = install_seekable(
            &mut bundle,
            img.len() as u64,
            &mut slot,
            SLOT_LEN,
            &policy(0),
        )
        .unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        assert!(verify_slot(&mut slot).is_err());
    }

    #[test]
    fn too_large_and_truncated_streams_are_refused() {
        let (img, _) = image(300, 3, 1);
        let mut small = Cursor::new(vec![0u8; 256 * 1024]);
        let err = install_stream(
            &mut &img[..],
            &mut small,
            256 * 1024,
            &policy(0),
            &mut stele_verifier::progress::Silent,
        )
        .unwrap_err();
        // The stream's whole size, not where the copy stopped.
        let needs = format!(
            "the image needs {} bytes but the slot holds 262144",
            img.len()
        );
        assert!(err.to_string().contains(&needs), "{err}");
        let err = install_file(&img, &mut small, 256 * 1024, 0).unwrap_err();
        assert!(err.to_string().contains("slot holds"), "{err}");

        let (img, _) = image(40, 3, 1);
        let mut slot = blank_slot();
        let cut = &img[..img.len() - 100];
        assert!(
            install_stream(&mut &cut[..], &mut slot, SLOT_LEN, &policy(0), &mut Silent).is_err()
        );
        assert!(verify_slot(&mut slot).is_err());
    }
}
