//! Reading and checking a whole slot image (or a partition holding one) through `Read + Seek`.

use std::io::{BufReader, Read, Seek, SeekFrom};

use crate::footer::{Footer, FOOTER_SIZE};
use crate::keys::Keyring;
use crate::manifest::{Envelope, Manifest, VerifiedManifest};
use crate::verity::{verify_data, verify_hash_area};
use crate::{Error, Result};

/// Buffer of the reader used for the full data pass.
const DATA_READ_BUFFER: usize = 4 << 20;

/// Smallest verity block size of a slot image.
pub const MIN_SLOT_BLOCK_SIZE: u32 = crate::verity::MIN_BLOCK_SIZE;
/// Largest verity block size of a slot image (data and hash blocks): the kernel's dm-verity
/// maps blocks of at most the page size, 4096 bytes on x86-64. The format itself
/// ([`crate::verity::MAX_BLOCK_SIZE`]) and the `stele verity` verbs go further.
pub const MAX_SLOT_BLOCK_SIZE: u32 = 4096;

/// The slot-image rule on a verity block size `size` (`what` names it): a power of two from
/// [`MIN_SLOT_BLOCK_SIZE`] to [`MAX_SLOT_BLOCK_SIZE`]. Checked by every reader of a slot
/// ([`verify`]: `stele verify`, installs, stele-init) and by the build, so the build
/// refuses exactly what the device would. Pure.
pub fn check_block_size(what: &'static str, size: u32) -> Result<()> {
    if size.is_power_of_two() && (MIN_SLOT_BLOCK_SIZE..=MAX_SLOT_BLOCK_SIZE).contains(&size) {
        Ok(())
    } else {
        Err(Error::SlotBlockSize { what, size })
    }
}

/// What to check besides the signatures.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions<'a> {
    /// Check every data block against the signed root hash.
    pub full: bool,
    /// Refuse a rollback_index below this.
    pub rollback_floor: Option<u64>,
    /// Refuse a manifest `name` other than this (the product the device is bound to,
    /// boot.toml `name`).
    pub product: Option<&'a str>,
}

/// Footer and envelope of a slot, located but not yet trusted.
#[derive(Clone, Debug)]
pub struct SlotLocator {
    pub footer: Footer,
    pub envelope: Envelope,
}

/// Length of the stream (its end), for error messages.
fn stream_len<R: Seek>(r: &mut R) -> u64 {
    r.seek(SeekFrom::End(0)).unwrap_or(0)
}

/// Reads exactly `len` bytes at `offset`; a short read is [`Error::Truncated`] naming `what`.
fn read_region<R: Read + Seek>(
    r: &mut R,
    what: &'static str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let truncated = |available: u64| Error::Truncated {
        what,
        offset,
        needed: len,
        available,
    };
    let n = usize::try_from(len).map_err(|_| truncated(0))?;
    r.seek(SeekFrom::Start(offset))
        .map_err(|e| Error::io(what, e))?;
    let mut buf = Vec::new();
    buf.try_reserve_exact(n)
        .map_err(|_| Error::NoMemory { what, bytes: len })?;
    let got = r
        .by_ref()
        .take(len)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(what, e))?;
    if got != n {
        let end = stream_len(r);
        return Err(truncated(end.saturating_sub(offset)));
    }
    Ok(buf)
}

/// Reads the footer (last 4096 bytes of `len`) and the envelope it points at.
pub fn locate<R: Read + Seek>(r: &mut R, len: u64) -> Result<SlotLocator> {
    let footer_at = len.checked_sub(FOOTER_SIZE).ok_or(Error::Truncated {
        what: "footer",
        offset: 0,
        needed: FOOTER_SIZE,
        available: len,
    })?;
    let bytes = read_region(r, "footer", footer_at, FOOTER_SIZE)?;
    let footer = Footer::parse(&bytes, len)?;
    let bytes = read_region(
        r,
        "manifest envelope",
        footer.manifest_offset,
        footer.manifest_len,
    )?;
    let envelope = Envelope::parse(&bytes)?;
    Ok(SlotLocator { footer, envelope })
}

/// Signatures, rollback floor, layout sanity, the hash tree against the signed root hash,
/// and with `full` every data block.
pub fn verify<R: Read + Seek>(
    r: &mut R,
    len: u64,
    keyring: &Keyring,
    opts: VerifyOptions<'_>,
) -> Result<(SlotLocator, VerifiedManifest)> {
    let loc = locate(r, len)?;
    let verified = loc.envelope.verify(keyring)?;
    let m = &verified.manifest;
    if let Some(floor) = opts.rollback_floor {
        if m.rollback_index < floor {
            return Err(Error::Rollback {
                index: m.rollback_index,
                floor,
            });
        }
    }
    check_product(m, opts.product)?;
    check_contents(r, &loc, m, opts.full)?;
    Ok((loc, verified))
}

/// Refuses a verified manifest whose `name` is not `product` (when the device is bound to
/// one). Pure.
pub fn check_product(m: &Manifest, product: Option<&str>) -> Result<()> {
    match product {
        Some(p) if m.name != p => Err(Error::WrongProduct {
            found: m.name.clone(),
            expected: p.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Everything but the signatures, for a signer (`stele sign`): parses the body WITHOUT
/// checking any signature, then checks that the image matches it (layout, the hash tree
/// against the root hash), so that nobody signs a body that does not describe the image.
/// Its result must never be used to trust an image: use [`verify`].
pub fn check_unsigned<R: Read + Seek>(r: &mut R, len: u64) -> Result<(SlotLocator, Manifest)> {
    let loc = locate(r, len)?;
    let m = loc.envelope.unverified_manifest()?;
    check_contents(r, &loc, &m, false)?;
    Ok((loc, m))
}

/// Layout sanity, the hash tree against `m`'s root hash, and with `full` (or a single data
/// block, which has no hash block) every data block.
fn check_contents<R: Read + Seek>(
    r: &mut R,
    loc: &SlotLocator,
    m: &Manifest,
    full: bool,
) -> Result<()> {
    let params = m.verity_params()?;
    check_block_size("verity data block size", params.data_block_size())?;
    check_block_size("verity hash block size", params.hash_block_size())?;
    let hash_offset = m.verity.hash_offset;
    let tree_size = params.hash_tree_size();
    let hash_end = hash_offset.checked_add(tree_size).ok_or_else(|| {
        Error::invalid(
            "slot layout",
            "hash_offset + hash tree size overflows 64 bits",
        )
    })?;
    if hash_end > loc.footer.manifest_offset {
        return Err(Error::invalid(
            "slot layout",
            format!(
                "the hash tree ends at {hash_end} but the manifest starts at {}: \
                 the footer does not match the signed manifest",
                loc.footer.manifest_offset
            ),
        ));
    }
    // Footer::parse already put the manifest before the footer, inside `len`.
    let hash_area = read_region(r, "verity hash tree", hash_offset, tree_size)?;
    verify_hash_area(&hash_area, &params, &m.verity.root_hash)?;
    // With a single data block there is no hash block: the root hash is the hash of that
    // block, so the data itself is what must be checked (one block, cheap).
    if full || params.levels() == 0 {
        r.seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("verity data", e))?;
        // No larger than the data: a small image does not allocate the whole buffer.
        let buffer =
            usize::try_from(hash_offset).map_or(DATA_READ_BUFFER, |n| n.min(DATA_READ_BUFFER));
        let data = BufReader::with_capacity(buffer, r.by_ref().take(hash_offset));
        verify_data(data, &hash_area, &params, &m.verity.root_hash)?;
    }
    Ok(())
}

/// A `Read + Seek` that counts bytes, for tests of the read pattern.
#[cfg(test)]
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    read: u64,
}

#[cfg(test)]
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    use crate::testutil::{key, ring};

    /// A whole slot image (docs/FORMATS.md layout) and its manifest offset.
    fn image(blocks: u64, rollback_index: u64) -> (Vec<u8>, u64) {
        crate::testutil::image(blocks, rollback_index, 0)
    }

    fn check(img: &[u8], opts: VerifyOptions<'_>) -> Result<(SlotLocator, VerifiedManifest)> {
        verify(&mut Cursor::new(img), img.len() as u64, &ring(), opts)
    }

    const FULL: VerifyOptions = VerifyOptions {
        full: true,
        rollback_floor: None,
        product: None,
    };

    /// One data block has no hash blocks: the data is checked even without `full`.
    #[test]
    fn single_block_image_checks_its_data_always() {
        let (mut img, _) = image(1, 1);
        let quick = VerifyOptions::default();
        check(&img, quick).unwrap();
        img[100] ^= 1;
        assert!(matches!(
            check(&img, quick),
            Err(Error::DataBlockMismatch { block: 0 })
        ));
    }

    #[test]
    fn good_image_verifies() {
        for blocks in [1, 2, 200] {
            let (img, moff) = image(blocks, 3);
            let (loc, v) = check(&img, FULL).unwrap();
            assert_eq!(loc.footer.manifest_offset, moff);
            assert_eq!(v.manifest.rollback_index, 3);
            // On a partition larger than the image, the footer sits at the very end.
            let mut part = img.clone();
            let footer = part.split_off(part.len() - 4096);
            part.resize(part.len() + 3 * 4096 + 512, 0xee);
            part.extend_from_slice(&footer);
            check(&part, FULL).unwrap();
        }
    }

    #[test]
    fn rollback_floor() {
        let (img, _) = image(2, 5);
        let opts = |floor| VerifyOptions {
            full: false,
            rollback_floor: Some(floor),
            product: None,
        };
        check(&img, opts(5)).unwrap();
        assert!(matches!(
            check(&img, opts(6)),
            Err(Error::Rollback { index: 5, floor: 6 })
        ));
    }

    /// A device bound to a product refuses another product's image (signed by a key it
    /// trusts); an unbound one takes any name.
    #[test]
    fn product_binding() {
        let (img, _) = image(2, 5);
        let opts = |product| VerifyOptions {
            product,
            ..VerifyOptions::default()
        };
        check(&img, opts(None)).unwrap();
        check(&img, opts(Some("demo"))).unwrap();
        let e = check(&img, opts(Some("router"))).unwrap_err();
        assert!(
            matches!(&e, Error::WrongProduct { found, expected } if found == "demo" && expected == "router"),
            "{e}"
        );
        assert_eq!(crate::exit::Report::exit(&e), crate::exit::Exit::Refused);
    }

    #[test]
    fn tampering_is_found() {
        let (img, moff) = image(200, 1);
        // Data: only the full pass reads it.
        let mut t = img.clone();
        t[150 * 4096 + 7] ^= 1;
        check(&t, VerifyOptions::default()).unwrap();
        assert!(matches!(
            check(&t, FULL),
            Err(Error::DataBlockMismatch { block: 150 })
        ));
        // Hash tree: the top block is at hash_offset; level 0 after it.
        let mut t = img.clone();
        t[200 * 4096 + 4096 + 9] ^= 1;
        assert!(matches!(
            check(&t, VerifyOptions::default()),
            Err(Error::HashBlockMismatch { level: 0, block: 0 })
        ));
        let mut t = img.clone();
        t[200 * 4096 + 9] ^= 1;
        assert!(matches!(
            check(&t, VerifyOptions::default()),
            Err(Error::RootHashMismatch { .. })
        ));
        // Manifest body.
        let mut t = img.clone();
        t[moff as usize + 24 + 72 + 3] ^= 1;
        assert!(matches!(
            check(&t, VerifyOptions::default()),
            Err(Error::BadSignature { .. })
        ));
        // Footer.
        let mut t = img.clone();
        let n = t.len();
        t[n - 100] ^= 1;
        assert!(matches!(
            check(&t, VerifyOptions::default()),
            Err(Error::FooterChecksum)
        ));
        // Untrusted keyring.
        let other = Keyring::new(vec![key(2).verifying_key()], 1).unwrap();
        assert!(matches!(
            verify(&mut Cursor::new(&img), img.len() as u64, &other, FULL),
            Err(Error::ThresholdNotMet { .. })
        ));
    }

    /// A validly signed image with 8 KiB blocks (which the format allows) is refused as a
    /// slot; 512-byte blocks are fine.
    #[test]
    fn block_sizes_above_the_page_size_are_refused() {
        for (dbs, hbs, ok) in [(512, 4096, true), (8192, 4096, false), (4096, 8192, false)] {
            let img = crate::testutil::image_with_blocks(16, dbs, hbs);
            let r = check(&img, FULL);
            assert_eq!(r.is_ok(), ok, "{dbs}/{hbs}: {r:?}");
            if !ok {
                assert!(
                    matches!(r, Err(Error::SlotBlockSize { size: 8192, .. })),
                    "{r:?}"
                );
                let msg = r.unwrap_err().to_string();
                assert!(msg.contains("above 4096"), "{msg}");
            }
        }
        assert!(check_block_size("--data-block-size", 1000).is_err());
        assert!(check_block_size("--data-block-size", 256).is_err());
        let e = check_block_size("--data-block-size", 1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid --data-block-size 1000: a slot image takes a power of two from 512 to 4096"
        );
    }

    #[test]
    fn footer_pointing_into_the_tree_is_refused() {
        let (img, moff) = image(200, 1);
        let loc = locate(&mut Cursor::new(&img), img.len() as u64).unwrap();
        let env = loc.envelope.to_bytes();
        // Move the (still validly signed) manifest into the hash tree area.
        let mut t = img.clone();
        let at = 200 * 4096 + 4096;
        t[at..at + env.len()].copy_from_slice(&env);
        let n = t.len();
        t[n - 4096..].copy_from_slice(&Footer::new(at as u64, env.len() as u64).to_bytes());
        assert!(moff > at as u64);
        assert!(matches!(
            check(&t, VerifyOptions::default()),
            Err(Error::Invalid {
                what: "slot layout",
                ..
            })
        ));
    }

    #[test]
    fn truncation_names_the_region() {
        let (img, moff) = image(2, 1);
        let len = img.len() as u64;
        // The caller claims a longer device than there is.
        assert!(matches!(
            locate(&mut Cursor::new(&img), len + 4096),
            Err(Error::Truncated { what: "footer", .. })
        ));
        assert!(matches!(
            locate(&mut Cursor::new(&img[..100]), 100),
            Err(Error::Truncated { what: "footer", .. })
        ));
        // The footer promises a manifest beyond the data we have: cut the middle out.
        let mut short = img[..moff as usize].to_vec();
        short.extend_from_slice(&img[img.len() - 4096..]);
        let r = locate(&mut Cursor::new(&short), len);
        assert!(matches!(r, Err(Error::Truncated { .. })), "{r:?}");
    }

    #[test]
    fn full_pass_reads_the_data_once() {
        let (img, _) = image(300, 1);
        let mut c = Counting {
            inner: Cursor::new(&img),
            read: 0,
        };
        verify(&mut c, img.len() as u64, &ring(), FULL).unwrap();
        assert!(
            c.read < img.len() as u64 + 3 * 4096,
            "read {} bytes",
            c.read
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..10000), extra in 0u64..10000) {
            let _ = locate(&mut Cursor::new(&bytes), bytes.len() as u64);
            let _ = locate(&mut Cursor::new(&bytes), bytes.len() as u64 + extra);
            let _ = verify(&mut Cursor::new(&bytes), bytes.len() as u64, &ring(), FULL);
        }

        #[test]
        fn mutated_images_never_panic(pos: prop::sample::Index, val: u8) {
            let (mut img, _) = image(3, 1);
            let i = pos.index(img.len());
            img[i] = val;
            let _ = check(&img, FULL);
        }

        /// The signer's check parses an unsigned body: any bytes, no panic.
        #[test]
        fn unsigned_check_never_panics(pos: prop::sample::Index, val: u8, cut in 0usize..40000) {
            let (mut img, _) = image(3, 1);
            let i = pos.index(img.len());
            img[i] = val;
            let _ = check_unsigned(&mut Cursor::new(&img), img.len() as u64);
            let short = &img[..cut.min(img.len())];
            let _ = check_unsigned(&mut Cursor::new(short), short.len() as u64);
        }
    }
}
