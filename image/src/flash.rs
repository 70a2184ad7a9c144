//! Flashing a slot image into a partition: the image at offset 0 and its footer again in
//! the partition's last 4 KiB (where the device looks for it). `stele disk create` and a
//! write to a block device both go through [`flash_slot`].

use std::io::{self, Read, Seek, SeekFrom, Write};

use stele_verifier::footer::FOOTER_SIZE;

/// Writes a slot image into a partition: the image at offset 0, and its footer (last
/// 4096 bytes) again in the partition's last 4096 bytes.
pub fn flash_slot<D: Write + Seek, R: Read + Seek>(
    part: &mut D,
    part_len: u64,
    image: &mut R,
    image_len: u64,
) -> io::Result<()> {
    if image_len > part_len || image_len < FOOTER_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("image of {image_len} bytes does not fit a {part_len}-byte partition"),
        ));
    }
    image.seek(SeekFrom::Start(0))?;
    part.seek(SeekFrom::Start(0))?;
    let copied = io::copy(&mut image.take(image_len), part)?;
    if copied != image_len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the slot image shrank while copying",
        ));
    }
    let mut footer = [0u8; 4096];
    debug_assert_eq!(footer.len() as u64, FOOTER_SIZE);
    image.seek(SeekFrom::Start(image_len - FOOTER_SIZE))?;
    image.read_exact(&mut footer)?;
    part.seek(SeekFrom::Start(part_len - FOOTER_SIZE))?;
    part.write_all(&footer)?;
    Ok(())
}
