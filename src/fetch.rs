//! `stele update install URL` and `stele update plan URL|FILE` on a build host (`--disk`):
//! the delta install of stele_device::remote into the disk image's target slot, with the
//! slot the disk boots next as the base, HTTP in-process (stele-fetch's [`HttpSource`]).
//! Without `--disk` the device commands run as on the device.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use stele_device::cli::remote_args::parse_rate;
use stele_device::commands::install;
use stele_device::remote::{
    install_from, plan_from, plan_text, summary_line, FetchOptions, Location, Slots, SystemClock,
};
use stele_device::runtime::state_file::StateFile;
use stele_device::runtime::storage;
use stele_engine::delta::{RangeSource, ReaderSource};
use stele_fetch::HttpSource;
use stele_verifier::keys::Keyring;
use stele_verifier::layout::Role;
use stele_verifier::partition::PartitionIo;

use stele_verifier::state::{BootState, Slot};

use crate::error::{CliResult, Usage};
use crate::update::{log, open_partition};

/// `--max-rate`, `--deadline`, `--timeout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    /// Fetch at most RATE bytes per second on average (K, M, G: powers of 1024), for
    /// metered links.
    #[arg(long, value_name = "RATE")]
    max_rate: Option<String>,
    /// Stop retrying after SECONDS without receiving a byte.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    deadline: u64,
    /// Cut a request that sends nothing for SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

impl FetchArgs {
    /// Any option given away from its default.
    pub fn given(&self) -> bool {
        self.max_rate.is_some() || self.deadline != 300 || self.timeout != 30
    }

    /// The options of a command that only fetches (no rate, no retries to tune).
    pub fn timeout_only(timeout: u64) -> CliResult<FetchOptions> {
        FetchArgs {
            max_rate: None,
            deadline: 300,
            timeout,
        }
        .options()
    }

    /// The options, checked.
    pub fn options(&self) -> CliResult<FetchOptions> {
        let max_rate = match &self.max_rate {
            Some(r) => Some(parse_rate(r).ok_or_else(|| Usage::Rate(r.clone()))?),
            None => None,
        };
        if self.timeout == 0 {
            return Err(Usage::Timeout.into());
        }
        Ok(FetchOptions {
            max_rate,
            deadline: Duration::from_secs(self.deadline),
            timeout: Duration::from_secs(self.timeout),
        })
    }
}

/// The source of `loc` on the host: HTTP in-process, or the file.
pub fn host_source(loc: &Location, opts: &FetchOptions) -> CliResult<Box<dyn RangeSource>> {
    Ok(match loc {
        Location::Http(url) => Box::new(HttpSource::new(url, opts.timeout)),
        Location::File(p) => {
            let name = p.display().to_string();
            Box::new(ReaderSource::new(storage::open(&name, false)?, name))
        }
    })
}

/// The slot the disk boots next (the base of a delta) and a fresh handle of the disk with
/// that slot's byte range.
type Base = (Option<Slot>, Option<(File, u64, u64)>);

fn base_of(disk: &Path, st: &BootState) -> CliResult<Base> {
    let slot = st.choose();
    let window = match slot {
        Some(b) => Some(open_partition(disk, Role::slot(b), false)?),
        None => None,
    };
    Ok((slot, window))
}

/// `stele update install --disk DISK URL`: into the slot the disk's state would not boot
/// next; the slot it boots next is the base, and its floor and product apply as for a
/// bundle file (`--name` binds another product).
pub fn install_disk(
    disk: &Path,
    loc: &Location,
    keyring: &Keyring,
    name: Option<&str>,
    opts: &FetchOptions,
) -> CliResult {
    let mut src = host_source(loc, opts)?;
    let (mut sf, s_off, s_len) = open_partition(disk, Role::State, true)?;
    let mut state = StateFile::new(
        PartitionIo::new(&mut sf, s_off, s_len),
        disk.display().to_string(),
    );
    let st = state.load()?;
    let target = install::plan(&st, None)?;
    let (mut tf, t_off, t_len) = open_partition(disk, Role::slot(target), true)?;
    let next = crate::update::disk_next(&mut tf, &st, keyring);
    let trust = crate::update::disk_trust(keyring, name, next.as_ref());
    let mut slot = PartitionIo::new(&mut tf, t_off, t_len);
    let (_, mut base_file) = base_of(disk, &st)?;
    let mut base_io = base_file
        .as_mut()
        .map(|(f, off, len)| (PartitionIo::new(f, *off, *len), *len));
    let done = install_from(
        &mut *src,
        &mut SystemClock::default(),
        Slots {
            target,
            slot: &mut slot,
            slot_len: t_len,
            base: base_io.as_mut().map(|(b, l)| (b, *l)),
        },
        &mut state,
        &trust,
        opts,
        &mut |_| Ok(()),
        &mut log,
        &mut crate::progress::Bars::stderr(),
    )?;
    println!("{}", summary_line(&done));
    println!("{}", install::installed_line(&done.installed));
    Ok(())
}

/// `stele update plan --disk DISK URL|FILE`: what that install would do.
pub fn plan_disk(disk: &Path, loc: &Location, keyring: &Keyring, opts: &FetchOptions) -> CliResult {
    let mut src = host_source(loc, opts)?;
    let (mut sf, s_off, s_len) = open_partition(disk, Role::State, false)?;
    let st = StateFile::new(
        PartitionIo::new(&mut sf, s_off, s_len),
        disk.display().to_string(),
    )
    .load()?;
    let target = install::plan(&st, None)?;
    let (mut tf, t_off, t_len) = open_partition(disk, Role::slot(target), false)?;
    let (base_slot, mut base_file) = base_of(disk, &st)?;
    let mut base_io = base_file
        .as_mut()
        .map(|(f, off, len)| (PartitionIo::new(f, *off, *len), *len));
    let (meta, p) = plan_from(
        &mut *src,
        &mut SystemClock::default(),
        Some((&mut PartitionIo::new(&mut tf, t_off, t_len), t_len)),
        base_io.as_mut().map(|(b, l)| (b, *l)),
        st.rollback_floor,
        keyring,
        opts,
    )?;
    print!("{}", plan_text(&loc.show(), &meta, &p, target, base_slot));
    Ok(())
}
