//! `stele update install URL` and `stele update plan URL|FILE` on a build host (`--disk`):
//! the delta install of stele_device::remote into the disk image's target slot, with the
//! slot the disk boots next as the base, HTTP in-process (stele-fetch's [`HttpSource`]).
//! Without `--disk` the device commands run as on the device.

use std::time::Duration;

use stele_device::cli::args::parse_rate;
use stele_device::cli::spec;
use stele_device::remote::{FetchOptions, Location, DEFAULT_DEADLINE_SECS, DEFAULT_TIMEOUT_SECS};
use stele_engine::delta::RangeSource;
use stele_fetch::HttpSource;

use crate::error::{CliResult, Usage};

/// `--max-rate`, `--deadline`, `--timeout`.
#[derive(Debug, Clone, clap::Args)]
pub struct FetchArgs {
    #[arg(long, value_name = spec::MAX_RATE.value, help = spec::MAX_RATE.help)]
    max_rate: Option<String>,
    #[arg(long, value_name = spec::DEADLINE.value, help = spec::DEADLINE.help,
          default_value_t = DEFAULT_DEADLINE_SECS)]
    deadline: u64,
    #[arg(long, value_name = spec::TIMEOUT.value, help = spec::TIMEOUT.help,
          default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
}

impl FetchArgs {
    /// Any option given away from its default.
    pub fn given(&self) -> bool {
        self.max_rate.is_some()
            || self.deadline != DEFAULT_DEADLINE_SECS
            || self.timeout != DEFAULT_TIMEOUT_SECS
    }

    /// The options of a command that only fetches (no rate, no retries to tune).
    pub fn timeout_only(timeout: u64) -> CliResult<FetchOptions> {
        FetchArgs {
            max_rate: None,
            deadline: DEFAULT_DEADLINE_SECS,
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

/// The host's HTTP client for a URL (stele-fetch's, in-process): what `--disk` commands,
/// `image diff` and `channel build` fetch with.
pub fn http(url: &str, timeout: Duration) -> Box<dyn RangeSource> {
    Box::new(HttpSource::new(url, timeout))
}

/// The source of `loc` on the host: HTTP in-process, or the file.
pub fn host_source(loc: &Location, opts: &FetchOptions) -> CliResult<Box<dyn RangeSource>> {
    Ok(stele_device::remote::host_source(loc, opts, Some(http))?)
}
