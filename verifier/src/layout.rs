//! The one table of partition roles and the fixed paths of the initramfs and the image.
//!
//! `stele disk create` writes these names and type GUIDs, boot.toml defaults to the names,
//! stele-init looks partitions up by them and publishes them in `/run/stele/devices` under
//! the `devices` keys, and `stele update --disk` finds them again. Nothing else spells them.
//! The EFI system partition is optional (`stele disk create --uki`): the boot never reads
//! it, it only publishes where it is, for `stele update stage1`.

use crate::state::Slot;

/// What a partition is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The EFI system partition with the stage-1 UKI (optional; `stele update stage1`).
    Esp,
    /// The A/B boot state (two copies, docs/FORMATS.md "Boot state").
    State,
    /// Root slot a.
    SlotA,
    /// Root slot b.
    SlotB,
    /// The optional read-write ext4 data partition.
    Data,
}

/// One row of [`ROLES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    pub role: Role,
    /// Default GPT partition name (boot.toml can rename it).
    pub name: &'static str,
    /// GPT partition type GUID.
    pub type_guid: &'static str,
    /// The boot.toml key that renames it.
    pub config_key: &'static str,
    /// Its key in `/run/stele/devices`.
    pub devices_key: &'static str,
}

const ESP: RoleSpec = RoleSpec {
    role: Role::Esp,
    name: "stele-esp",
    // The UEFI specification's EFI system partition GUID (gdisk type EF00).
    type_guid: "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
    config_key: "esp_partition",
    devices_key: "esp",
};
const STATE: RoleSpec = RoleSpec {
    role: Role::State,
    name: "stele-state",
    type_guid: "5ee1e000-57a7-4e5e-9b5f-000000000001",
    config_key: "state_partition",
    devices_key: "state",
};
const SLOT_A: RoleSpec = RoleSpec {
    role: Role::SlotA,
    name: "stele-root-a",
    type_guid: "5ee1e000-57a7-4e5e-9b5f-000000000002",
    config_key: "slot_a_partition",
    devices_key: "a",
};
const SLOT_B: RoleSpec = RoleSpec {
    role: Role::SlotB,
    name: "stele-root-b",
    type_guid: "5ee1e000-57a7-4e5e-9b5f-000000000002",
    config_key: "slot_b_partition",
    devices_key: "b",
};
const DATA: RoleSpec = RoleSpec {
    role: Role::Data,
    name: "stele-data",
    // The Linux filesystem data GUID: the data partition is a plain ext4.
    type_guid: "0fc63daf-8483-4772-8e79-3d69d8477de4",
    config_key: "data_partition",
    devices_key: "data",
};

/// Every partition role, in disk order.
pub const ROLES: [RoleSpec; 5] = [ESP, STATE, SLOT_A, SLOT_B, DATA];

impl Role {
    /// Its row of [`ROLES`].
    pub const fn spec(self) -> RoleSpec {
        match self {
            Role::Esp => ESP,
            Role::State => STATE,
            Role::SlotA => SLOT_A,
            Role::SlotB => SLOT_B,
            Role::Data => DATA,
        }
    }

    /// Default GPT partition name.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// The role of slot `s`.
    pub fn slot(s: Slot) -> Role {
        match s {
            Slot::A => Role::SlotA,
            Slot::B => Role::SlotB,
        }
    }
}

impl Role {
    /// Its place in [`ROLES`] (and in a [`PerRole`]).
    pub const fn index(self) -> usize {
        match self {
            Role::Esp => 0,
            Role::State => 1,
            Role::SlotA => 2,
            Role::SlotB => 3,
            Role::Data => 4,
        }
    }
}

/// THE partition record: one value per role, in [`ROLES`] order. boot.toml's partition
/// names (`PerRole<String>`), the partitions the boot found on the disk (init), what it
/// publishes in `/run/stele/devices` (`PerRole<Option<String>>`) and the partitions
/// `stele disk create` lays out are each one of these, so a role is added in one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerRole<T>([T; ROLES.len()]);

impl<T> PerRole<T> {
    /// A record with `f(role)` for every role.
    pub fn from_fn(mut f: impl FnMut(Role) -> T) -> Self {
        PerRole(ROLES.map(|r| f(r.role)))
    }

    /// The value of `role`.
    pub fn get(&self, role: Role) -> &T {
        &self.0[role.index()]
    }

    /// The value of `role`, mutably.
    pub fn get_mut(&mut self, role: Role) -> &mut T {
        &mut self.0[role.index()]
    }

    /// Every role with its value, in [`ROLES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Role, &T)> {
        ROLES.iter().map(|r| r.role).zip(self.0.iter())
    }
}

impl PerRole<String> {
    /// Every role's default GPT partition name.
    pub fn default_names() -> Self {
        PerRole::from_fn(|r| r.name().to_string())
    }
}

/// The init, in the initramfs.
pub const INIT: &str = "/init";
/// boot.toml, in the initramfs (a copy is published in `/run/stele`).
pub const BOOT_TOML: &str = "/etc/stele/boot.toml";
/// The trusted public keys, in the initramfs.
pub const KEYS_DIR: &str = "/etc/stele/keys";
/// The kernel modules, flat, in the initramfs.
pub const MODULES_DIR: &str = "/lib/modules";
/// The initramfs's mke2fs for the factory reset, with its libraries and interpreter
/// beside it (`stele initramfs`, image/src/initramfs_mke2fs.rs).
pub const MKE2FS_DIR: &str = "/lib/stele/mke2fs";
/// The mke2fs program in [`MKE2FS_DIR`].
pub const MKE2FS: &str = "/lib/stele/mke2fs/mke2fs";
/// Its program interpreter (the host's ld-linux), run with `--library-path MKE2FS_DIR`.
pub const MKE2FS_LOADER: &str = "/lib/stele/mke2fs/ld.so";
/// system.toml, inside the slot image's root filesystem.
pub const SYSTEM_TOML: &str = "/etc/stele/system.toml";
/// The fetch client inside a slot image (`stele image build --fetch-client`), run by the
/// device's `stele update install URL` from the verified lower layer.
pub const FETCH_CLIENT: &str = "/usr/lib/stele/stele-fetch";
/// The update channel's public keys inside a slot image (`*.pem`).
pub const CHANNEL_KEYS_DIR: &str = "/etc/stele/channel-keys";
/// The update channels a slot image follows, one name per line
/// (verifier::channel::parse_followed).
pub const CHANNELS_FILE: &str = "/etc/stele/channels";
/// The image's users, read by PID 1 for the services' `user`.
pub const PASSWD: &str = "/etc/passwd";
/// The image's groups, read by PID 1 for the services' `group` and supplementary groups.
pub const GROUP: &str = "/etc/group";

/// The files of the image that PID 1 and the updater trust after switch root: read from the
/// verified lower layer, never through a link out of it (`crate::resolve::check_trusted`;
/// `stele image build` refuses such a link, the device refuses the image).
pub const TRUSTED: [&str; 6] = [
    SYSTEM_TOML,
    PASSWD,
    GROUP,
    CHANNEL_KEYS_DIR,
    CHANNELS_FILE,
    FETCH_CLIENT,
];
/// The directories of [`TRUSTED`] whose every entry is trusted too (the channel keys).
pub const TRUSTED_DIRS: [&str; 1] = [CHANNEL_KEYS_DIR];

/// Where the running device writes or mounts over (the data partition is mounted at /var by
/// default; the tmpfs /run and /tmp; the kernel's /dev, /proc and /sys): no trusted file may
/// be linked into them.
pub const WRITABLE: [&str; 6] = ["/var", "/run", "/tmp", "/dev", "/proc", "/sys"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_has_its_own_row_and_names() {
        for r in [Role::Esp, Role::State, Role::SlotA, Role::SlotB, Role::Data] {
            assert_eq!(r.spec().role, r);
        }
        for key in [
            |r: &RoleSpec| r.name,
            |r: &RoleSpec| r.config_key,
            |r: &RoleSpec| r.devices_key,
        ] {
            let mut v: Vec<&str> = ROLES.iter().map(key).collect();
            v.sort();
            v.dedup();
            assert_eq!(v.len(), ROLES.len(), "{v:?}");
        }
        assert_eq!(Role::slot(Slot::B).name(), "stele-root-b");
        for (i, r) in ROLES.iter().enumerate() {
            assert_eq!(r.role.index(), i, "{r:?}");
        }
        let names = PerRole::default_names();
        assert_eq!(names.get(Role::Data), "stele-data");
        let order: Vec<Role> = names.iter().map(|(r, _)| r).collect();
        assert_eq!(order, ROLES.map(|r| r.role));
        for p in [INIT, BOOT_TOML, KEYS_DIR, MODULES_DIR]
            .iter()
            .chain(&TRUSTED)
        {
            assert!(p.starts_with('/'), "{p}");
        }
    }
}
