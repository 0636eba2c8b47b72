//! containerd's runtime options, decoded from whichever type a client sent. For a runtime not
//! named `io.containerd.runc*`, containerd 1.6's client sends runc's `containerd.linux.runc.
//! CreateOptions`, newer clients `containerd.runc.v1.Options`, CRI `runtimeoptions.v1.Options`
//! (its ConfigPath), and `ctr c restore` an empty value; the shim's `start` gets the container's
//! runtime options on stdin. Field numbers differ between the two runc types, so each is read
//! by its own table. What runsc can honour is kept; what it cannot is refused by name.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// What the shim honours of the options a request carried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// The runtime's config file (`ConfigPath`).
    pub config_path: Option<PathBuf>,
    /// The cgroup the shim itself runs in (`ShimCgroup`), joined at `start`.
    pub shim_cgroup: Option<String>,
    /// The owner of the pipes that carry a process's stdio (`IoUid`, `IoGid`), so that a non-root
    /// process can reopen them: gVisor itself hands every process stdio it owns (runsc sets the
    /// host pipes' owner for the sandbox), so nothing is left for the shim to do with it.
    pub io_owner: Option<(u32, u32)>,
    /// The OCI runtime binary (`BinaryName`): here, the runsc to run.
    pub binary_name: Option<PathBuf>,
    /// Where runtime state goes (`Root`): the parent of the per-sandbox runsc roots.
    pub root: Option<PathBuf>,
    /// `linux.cgroupsPath` is in systemd's `slice:prefix:name` form (`SystemdCgroup`).
    pub systemd_cgroup: bool,
    /// A checkpoint to restore from (`CriuImagePath`), when Create names none.
    pub image_path: Option<PathBuf>,
}

/// A field's value: a varint, or length-delimited bytes.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

/// The fields of a protobuf message, in order; unknown wire types end the message as malformed.
fn fields(mut b: &[u8]) -> Result<Vec<(u32, Value<'_>)>> {
    let bad = || Error::InvalidArgument("runtime options: not a protobuf message".into());
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b).ok_or_else(bad)?;
        let field = (tag >> 3) as u32;
        match tag & 7 {
            0 => out.push((field, Value::Varint(varint(&mut b).ok_or_else(bad)?))),
            2 => {
                let len = varint(&mut b).ok_or_else(bad)? as usize;
                if len > b.len() {
                    return Err(bad());
                }
                let (v, rest) = b.split_at(len);
                out.push((field, Value::Bytes(v)));
                b = rest;
            }
            1 => b = b.get(8..).ok_or_else(bad)?,
            5 => b = b.get(4..).ok_or_else(bad)?,
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// The meaning of one field number in one option type.
#[derive(Clone, Copy)]
enum Field {
    ConfigPath,
    ShimCgroup,
    IoUid,
    IoGid,
    BinaryName,
    Root,
    SystemdCgroup,
    ImagePath,
    /// A runc option runsc has no counterpart for: refused when set.
    Unsupported(&'static str, &'static str),
    /// CRIU's checkpoint knobs and the like: nothing to do for a Create.
    Ignored,
}

const NO_PIVOT_ROOT: Field = Field::Unsupported("NoPivotRoot", "gVisor always pivots into the sandbox's own root");
const NO_NEW_KEYRING: Field = Field::Unsupported("NoNewKeyring", "gVisor has no session keyrings to leave out");
const CRIU_PATH: Field = Field::Unsupported("CriuPath", "runsc checkpoints and restores without CRIU");

/// `containerd.runc.v1.Options` (runtime/v2/runc/options/oci.proto).
fn runc_v1(field: u32) -> Field {
    match field {
        1 => NO_PIVOT_ROOT,
        2 => NO_NEW_KEYRING,
        3 => Field::ShimCgroup,
        4 => Field::IoUid,
        5 => Field::IoGid,
        6 => Field::BinaryName,
        7 => Field::Root,
        8 => CRIU_PATH,
        9 => Field::SystemdCgroup,
        10 => Field::ImagePath,
        _ => Field::Ignored,
    }
}

/// `containerd.linux.runc.CreateOptions` (runtime/linux/runctypes/runc.proto).
fn linux_runc_create(field: u32) -> Field {
    match field {
        1 => NO_PIVOT_ROOT,
        8 => NO_NEW_KEYRING,
        9 => Field::ShimCgroup,
        10 => Field::IoUid,
        11 => Field::IoGid,
        13 => Field::ImagePath,
        _ => Field::Ignored,
    }
}

/// `runtimeoptions.v1.Options` (CRI's, with the runtime's ConfigPath).
fn runtime_options(field: u32) -> Field {
    match field {
        2 => Field::ConfigPath,
        _ => Field::Ignored,
    }
}

impl RuntimeOptions {
    /// Decodes the options of a request (`type_url`, `value` of its Any). An empty value, or a
    /// type the shim does not know, carries nothing for it.
    pub fn decode(type_url: &str, value: &[u8]) -> Result<RuntimeOptions> {
        Self::decode_as(type_url, value, true)
    }

    /// `strict`: an option runsc cannot honour is an error (Create's), else it is left to Create.
    fn decode_as(type_url: &str, value: &[u8], strict: bool) -> Result<RuntimeOptions> {
        let name = type_url.rsplit('/').next().unwrap_or_default();
        let table: fn(u32) -> Field = match name {
            "containerd.runc.v1.Options" => runc_v1,
            "containerd.linux.runc.CreateOptions" => linux_runc_create,
            "runtimeoptions.v1.Options" => runtime_options,
            _ => {
                if !value.is_empty() {
                    log::info!("runtime options of type {type_url:?} carry nothing for this runtime");
                }
                return Ok(RuntimeOptions::default());
            }
        };
        let mut o = RuntimeOptions::default();
        let (mut uid, mut gid) = (0, 0);
        for (number, v) in fields(value)? {
            let text = || match &v {
                Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()).filter(|s| !s.is_empty()),
                Value::Varint(_) => None,
            };
            let number_of = || match v {
                Value::Varint(n) => n,
                Value::Bytes(_) => 0,
            };
            match table(number) {
                Field::ConfigPath => o.config_path = text().map(PathBuf::from),
                Field::ShimCgroup => o.shim_cgroup = text(),
                Field::IoUid => uid = number_of() as u32,
                Field::IoGid => gid = number_of() as u32,
                Field::BinaryName => o.binary_name = text().map(PathBuf::from),
                Field::Root => o.root = text().map(PathBuf::from),
                Field::SystemdCgroup => o.systemd_cgroup = number_of() != 0,
                Field::ImagePath => o.image_path = text().map(PathBuf::from),
                Field::Unsupported(option, why) => {
                    if strict && (number_of() != 0 || text().is_some()) {
                        return Err(Error::InvalidArgument(format!("runtime option {option} is not supported by runsc: {why}")));
                    }
                }
                Field::Ignored => {}
            }
        }
        if (uid, gid) != (0, 0) {
            o.io_owner = Some((uid, gid));
        }
        Ok(o)
    }

    /// The options containerd writes to the shim's stdin at `start`: a serialized Any (the task's
    /// options, else the container's runtime options; nothing without either). What runsc cannot
    /// honour is Create's to refuse, with its code.
    pub fn decode_any(bytes: &[u8]) -> Result<RuntimeOptions> {
        let (mut type_url, mut value) = (String::new(), &[][..]);
        for (number, v) in fields(bytes)? {
            match (number, v) {
                (1, Value::Bytes(b)) => type_url = String::from_utf8_lossy(b).into_owned(),
                (2, Value::Bytes(b)) => value = b,
                _ => {}
            }
        }
        RuntimeOptions::decode_as(&type_url, value, false)
    }
}

/// What a Checkpoint request asks for, from either of runc's checkpoint option types (fields
/// 8 and 9 are swapped between them) or none (`ctr t checkpoint` on 1.6, Docker Engine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointOptions {
    /// End the task once saved (`ctr t checkpoint --exit`, `WithCheckpointTaskExit`); else it
    /// goes on running, as runc's shim leaves it without the option.
    pub exit: bool,
    /// Where the client wants the image (`WithCheckpointImagePath`), besides containerd's path.
    pub image_path: Option<PathBuf>,
}

impl CheckpointOptions {
    pub fn decode(type_url: &str, value: &[u8]) -> Result<CheckpointOptions> {
        let image_path_field = match type_url.rsplit('/').next().unwrap_or_default() {
            "containerd.runc.v1.CheckpointOptions" => 8,
            "containerd.linux.runc.CheckpointOptions" => 9,
            _ => return Ok(CheckpointOptions::default()),
        };
        let mut o = CheckpointOptions::default();
        for (number, v) in fields(value)? {
            match (number, v) {
                (1, Value::Varint(n)) => o.exit = n != 0,
                (n, Value::Bytes(b)) if n == image_path_field && !b.is_empty() => {
                    o.image_path = Some(PathBuf::from(String::from_utf8_lossy(b).into_owned()))
                }
                _ => {}
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A length-delimited field.
    fn string(field: u8, s: &str) -> Vec<u8> {
        [vec![field << 3 | 2, s.len() as u8], s.as_bytes().to_vec()].concat()
    }

    fn varint(field: u8, v: u8) -> Vec<u8> {
        vec![field << 3, v]
    }

    #[test]
    fn runc_v1_options_are_read_by_their_numbers() {
        let v = [
            string(3, "/shims"),
            varint(4, 100),
            varint(5, 101),
            string(6, "/opt/runsc"),
            string(7, "/run/b9"),
            varint(9, 1),
            string(10, "/ckpt"),
            varint(13, 2),
        ]
        .concat();
        let o = RuntimeOptions::decode("containerd.runc.v1.Options", &v).unwrap();
        assert_eq!(
            o,
            RuntimeOptions {
                config_path: None,
                shim_cgroup: Some("/shims".into()),
                io_owner: Some((100, 101)),
                binary_name: Some("/opt/runsc".into()),
                root: Some("/run/b9".into()),
                systemd_cgroup: true,
                image_path: Some("/ckpt".into()),
            }
        );
        // The same through a type URL with its prefix.
        assert_eq!(RuntimeOptions::decode("types.googleapis.com/containerd.runc.v1.Options", &v).unwrap(), o);
    }

    #[test]
    fn linux_runc_create_options_have_numbers_of_their_own() {
        // 9 is ShimCgroup here (SystemdCgroup in runc.v1), 10/11 the io owner, 13 the image path.
        let v = [varint(5, 1), string(9, "/shims"), varint(10, 7), varint(11, 8), string(13, "/ckpt")].concat();
        let o = RuntimeOptions::decode("containerd.linux.runc.CreateOptions", &v).unwrap();
        assert_eq!((o.shim_cgroup.as_deref(), o.io_owner, o.image_path), (Some("/shims"), Some((7, 8)), Some("/ckpt".into())));
        assert!(!o.systemd_cgroup);
    }

    #[test]
    fn what_runsc_cannot_do_is_refused_by_name() {
        for (t, v, name) in [
            ("containerd.runc.v1.Options", varint(1, 1), "NoPivotRoot"),
            ("containerd.runc.v1.Options", varint(2, 1), "NoNewKeyring"),
            ("containerd.runc.v1.Options", string(8, "/usr/sbin/criu"), "CriuPath"),
            ("containerd.linux.runc.CreateOptions", varint(1, 1), "NoPivotRoot"),
            ("containerd.linux.runc.CreateOptions", varint(8, 1), "NoNewKeyring"),
        ] {
            let e = RuntimeOptions::decode(t, &v).unwrap_err().to_string();
            assert!(e.contains(name) && e.contains("not supported by runsc"), "{t} {name}: {e}");
        }
        // Set to false, as clients send every field, they are nothing.
        assert_eq!(RuntimeOptions::decode("containerd.runc.v1.Options", &varint(1, 0)).unwrap(), RuntimeOptions::default());
    }

    #[test]
    fn config_path_unknown_types_empty_values_and_garbage() {
        let v = [string(1, "x"), string(2, "/etc/b.toml")].concat();
        assert_eq!(RuntimeOptions::decode("runtimeoptions.v1.Options", &v).unwrap().config_path, Some("/etc/b.toml".into()));
        assert_eq!(RuntimeOptions::decode("io.example.Other", &v).unwrap(), RuntimeOptions::default());
        assert_eq!(RuntimeOptions::decode("", &[]).unwrap(), RuntimeOptions::default());
        assert!(RuntimeOptions::decode("containerd.runc.v1.Options", &[0x1a, 0x7f]).is_err(), "a length past the end");
    }

    #[test]
    fn checkpoint_options_of_both_types_and_none() {
        let v1 = [varint(1, 1), string(8, "/images/a"), string(9, "/work")].concat();
        let o = CheckpointOptions::decode("containerd.runc.v1.CheckpointOptions", &v1).unwrap();
        assert_eq!(o, CheckpointOptions { exit: true, image_path: Some("/images/a".into()) });
        // The linux.runc type has work_path at 8 and image_path at 9.
        let linux = [string(8, "/work"), string(9, "/images/b")].concat();
        let o = CheckpointOptions::decode("containerd.linux.runc.CheckpointOptions", &linux).unwrap();
        assert_eq!(o, CheckpointOptions { exit: false, image_path: Some("/images/b".into()) });
        assert_eq!(CheckpointOptions::decode("", &[]).unwrap(), CheckpointOptions::default());
    }

    #[test]
    fn start_reads_an_any_from_stdin() {
        let inner = string(3, "/shims");
        let any = [string(1, "containerd.runc.v1.Options"), vec![2 << 3 | 2, inner.len() as u8], inner].concat();
        assert_eq!(RuntimeOptions::decode_any(&any).unwrap().shim_cgroup.as_deref(), Some("/shims"));
        assert_eq!(RuntimeOptions::decode_any(&[]).unwrap(), RuntimeOptions::default());
        let refused = varint(1, 1);
        let any = [string(1, "containerd.runc.v1.Options"), vec![2 << 3 | 2, refused.len() as u8], refused].concat();
        assert!(RuntimeOptions::decode_any(&any).is_ok(), "left to Create, which refuses it with its code");
    }
}
