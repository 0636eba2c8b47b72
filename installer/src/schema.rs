//! What the runtime's registration looks like in each containerd config schema, as pure
//! functions over TOML documents: add it in place (1.x), write it as a drop-in plus an `imports`
//! line (2.x), find it, and take it out again.

use toml_edit::{value, Array, DocumentMut, Item, Table};

/// The runtime name ctr, Docker Engine and the CRI handlers use; containerd runs it as
/// `containerd-shim-beta9-sandbox` from its PATH.
pub const RUNTIME_TYPE: &str = "io.beta9.sandbox";
pub const ANNOTATIONS: &str = "io.beta9.sandbox.*";
pub const MAIN_CONFIG: &str = "/etc/containerd/config.toml";
/// Where 2.x gets the registration: a file of its own, imported by the main config.
pub const DROP_IN: &str = "/etc/containerd/conf.d/beta9-sandbox.toml";
pub const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
/// Marks what the installer wrote, so an operator reading config.toml knows where it came from.
pub const MARK: &str =
    "# Added by beta9-sandbox-install; `beta9-sandbox-install uninstall` takes it out.";

/// A CRI runtime handler of ours and the runtime config (policy) it hands the shim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handler {
    pub name: &'static str,
    pub config_path: &'static str,
}

/// `beta9` refuses Docker by policy; `beta9-docker` allows it: a cluster grants Docker (and the
/// `--net-raw` and SYS_ADMIN that come with it) per RuntimeClass.
pub const HANDLERS: [Handler; 2] = [
    Handler {
        name: "beta9",
        config_path: "/etc/containerd/beta9-sandbox.toml",
    },
    Handler {
        name: "beta9-docker",
        config_path: "/etc/containerd/beta9-sandbox-docker.toml",
    },
];

/// A containerd release line, as `containerd --version` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Version {
    /// Parses `1.7`, `v2.1.9`, or the whole `containerd --version` line
    /// (`containerd github.com/containerd/containerd/v2 2.1.9+unknown`).
    pub fn parse(text: &str) -> Option<Version> {
        text.split_whitespace().find_map(|word| {
            let w = word.strip_prefix('v').unwrap_or(word);
            let mut parts = w.split(|c: char| !c.is_ascii_digit());
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            w.contains('.').then_some(Version { major, minor })
        })
    }

    /// Measured with `containerd config dump` (issue 22): a drop-in's CRI section replaces the
    /// main config's whole CRI section on 1.6.20 and loses its registry mirrors on 1.7.24; 2.1.9
    /// merges. So 1.x is edited in place and 2.x gets a drop-in.
    pub fn merges_drop_ins(self) -> bool {
        self.major >= 2
    }

    pub fn supported(self) -> bool {
        self >= Version { major: 1, minor: 6 } && self.major <= 2
    }
}

/// The config schema version a document declares (containerd reads a missing one as 1).
pub fn schema_of(doc: &DocumentMut) -> i64 {
    doc.get("version").and_then(Item::as_integer).unwrap_or(1)
}

/// The keys of the table that holds CRI's runtime settings in a schema.
pub fn cri_runtime_plugin(schema: i64) -> &'static str {
    match schema {
        ..=1 => "cri",
        2 => "io.containerd.grpc.v1.cri",
        _ => "io.containerd.cri.v1.runtime",
    }
}

fn runtimes_path(schema: i64) -> [&'static str; 4] {
    [
        "plugins",
        cri_runtime_plugin(schema),
        "containerd",
        "runtimes",
    ]
}

/// Our runtime table for one handler: the shim, the annotations it may see, its own config.
pub fn runtime_table(h: Handler) -> Table {
    let mut t = Table::new();
    t["runtime_type"] = value(RUNTIME_TYPE);
    t["pod_annotations"] = value(Array::from_iter([ANNOTATIONS]));
    t["container_annotations"] = value(Array::from_iter([ANNOTATIONS]));
    let mut options = Table::new();
    options["ConfigPath"] = value(h.config_path);
    t["options"] = Item::Table(options);
    t
}

fn str_array(item: Option<&Item>) -> Option<Vec<String>> {
    let a = item?.as_array()?;
    a.iter().map(|v| v.as_str().map(str::to_string)).collect()
}

/// Whether a runtime table says exactly what ours says (other keys the operator added are theirs).
pub fn is_ours(item: &Item, h: Handler) -> bool {
    let Some(t) = item.as_table_like() else {
        return false;
    };
    let want = vec![ANNOTATIONS.to_string()];
    t.get("runtime_type").and_then(Item::as_str) == Some(RUNTIME_TYPE)
        && str_array(t.get("pod_annotations")).as_ref() == Some(&want)
        && str_array(t.get("container_annotations")).as_ref() == Some(&want)
        && t.get("options")
            .and_then(|o| o.as_table_like())
            .and_then(|o| o.get("ConfigPath"))
            .and_then(Item::as_str)
            == Some(h.config_path)
}

/// The table at `keys`, made (as an implicit table, one that prints no header of its own) where missing.
fn table_at<'a>(root: &'a mut Table, keys: &[&str]) -> Result<&'a mut Table, String> {
    let mut t = root;
    for (i, k) in keys.iter().enumerate() {
        let entry = t.entry(k).or_insert_with(|| {
            let mut n = Table::new();
            n.set_implicit(true);
            Item::Table(n)
        });
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{} is not a table", keys[..=i].join(".")))?;
    }
    Ok(t)
}

/// The last header position in a document, so what we add is appended after everything else.
fn last_position(t: &Table) -> isize {
    t.iter()
        .filter_map(|(_, i)| i.as_table())
        .map(|c| c.position().unwrap_or(0).max(last_position(c)))
        .max()
        .unwrap_or(0)
}

fn get_table<'a>(root: &'a Table, keys: &[&str]) -> Option<&'a Table> {
    keys.iter().try_fold(root, |t, k| t.get(k)?.as_table())
}

/// The handlers of ours a document already holds, and any same-named handler that is not ours.
pub fn existing(doc: &DocumentMut) -> (Vec<&'static str>, Vec<&'static str>) {
    let schema = schema_of(doc);
    let runtimes = get_table(doc.as_table(), &runtimes_path(schema));
    let mut ours = Vec::new();
    let mut foreign = Vec::new();
    for h in HANDLERS {
        if let Some(item) = runtimes.and_then(|r| r.get(h.name)) {
            if is_ours(item, h) {
                ours.push(h.name)
            } else {
                foreign.push(h.name)
            }
        }
    }
    (ours, foreign)
}

/// Gives a table (and the tables in it) header positions from `next` on, in order.
fn place(t: &mut Table, next: &mut isize) {
    t.set_position(Some(*next));
    *next += 1;
    for (_, item) in t.iter_mut() {
        if let Some(sub) = item.as_table_mut() {
            place(sub, next);
        }
    }
}

/// Whether a 1.x config holds no CRI runtime of its own. Then containerd 1.x runs its default
/// runtime (runc) from its built-in defaults, and a runtimes table in the file *replaces* that
/// map (measured: `config dump` lost runc): the default runtime must be written out with ours.
pub fn lacks_runtimes(doc: &DocumentMut) -> bool {
    get_table(doc.as_table(), &runtimes_path(schema_of(doc))).is_none_or(|t| t.is_empty())
}

/// The runtime CRI runs by default: the config's default_runtime_name, else containerd's.
pub fn default_runtime_name(doc: &DocumentMut, defaults: &DocumentMut) -> String {
    let named = |d: &DocumentMut, plugin: &str| {
        get_table(d.as_table(), &["plugins", plugin, "containerd"]).and_then(|c| c.get("default_runtime_name")).and_then(Item::as_str).map(str::to_string)
    };
    named(doc, cri_runtime_plugin(schema_of(doc))).or_else(|| named(defaults, cri_runtime_plugin(2))).unwrap_or_else(|| "runc".into())
}

/// Copies the default runtime's table from `containerd config default` (schema 2) into a 1.x
/// config that has no runtimes, so its effective runtimes stay what they were. Returns its name.
pub fn keep_default_runtime(doc: &mut DocumentMut, defaults: &DocumentMut) -> Result<Option<String>, String> {
    if !lacks_runtimes(doc) {
        return Ok(None);
    }
    let schema = schema_of(doc);
    let name = default_runtime_name(doc, defaults);
    let Some(default) = get_table(defaults.as_table(), &runtimes_path(2)).and_then(|r| r.get(&name)).and_then(Item::as_table) else {
        return Err(format!("containerd's defaults have no runtime {name:?} to keep"));
    };
    let mut copy = default.clone();
    let mut next = last_position(doc.as_table()) + 1;
    place(&mut copy, &mut next);
    copy.decor_mut().set_prefix(format!("\n{MARK}\n# containerd's default runtime, as `containerd config default` gives it: a runtimes table here replaces containerd's own.\n"));
    table_at(doc.as_table_mut(), &runtimes_path(schema))?.insert(&name, Item::Table(copy));
    Ok(Some(name))
}

/// Adds our handlers to a 1.x main config in place. `replace` lets a handler of a previous
/// install of ours be rewritten; otherwise a same-named handler is refused, not overwritten.
/// `restrict_oom` sets CRI's restrict_oom_score_adj (see `Oom`). Returns whether anything changed.
pub fn add_in_place(
    doc: &mut DocumentMut,
    replace: bool,
    restrict_oom: bool,
) -> Result<bool, String> {
    let schema = schema_of(doc);
    let before = doc.to_string();
    let mut next = last_position(doc.as_table()) + 1;
    let (_, foreign) = existing(doc);
    if !foreign.is_empty() && !replace {
        return Err(format!(
            "a runtime handler named {} already exists and is not the one this installer writes: remove it, or rename it",
            foreign.join(" and ")
        ));
    }
    if restrict_oom {
        let cri = table_at(doc.as_table_mut(), &["plugins", cri_runtime_plugin(schema)])?;
        if cri.get("restrict_oom_score_adj").is_none() {
            cri.set_implicit(false);
            cri["restrict_oom_score_adj"] = value(true);
        }
    }
    let runtimes = table_at(doc.as_table_mut(), &runtimes_path(schema))?;
    let mut first = true;
    for h in HANDLERS {
        if runtimes.get(h.name).is_some_and(|i| is_ours(i, h)) {
            continue;
        }
        let mut t = runtime_table(h);
        t.set_position(Some(next));
        if let Some(o) = t.get_mut("options").and_then(Item::as_table_mut) {
            o.set_position(Some(next + 1));
        }
        next += 2;
        if first {
            t.decor_mut().set_prefix(format!("\n{MARK}\n"));
            first = false;
        }
        runtimes.insert(h.name, Item::Table(t));
    }
    Ok(doc.to_string() != before)
}

/// Takes our handlers out of a config again (the way back when the operator changed the file
/// since the install, so its original can no longer be put back whole), with the default
/// runtime install wrote out (`keep_default_runtime`), if it did.
pub fn remove(doc: &mut DocumentMut, restrict_oom: bool, default_runtime: Option<&str>) -> bool {
    let schema = schema_of(doc);
    let before = doc.to_string();
    let mut t = doc.as_table_mut();
    for k in runtimes_path(schema) {
        match t.get_mut(k).and_then(Item::as_table_mut) {
            Some(next) => t = next,
            None => return false,
        }
    }
    for h in HANDLERS {
        if t.get(h.name).is_some_and(|i| is_ours(i, h)) {
            t.remove(h.name);
        }
    }
    if let Some(name) = default_runtime {
        t.remove(name);
    }
    if restrict_oom {
        if let Some(cri) = doc
            .get_mut("plugins")
            .and_then(|p| p.get_mut(cri_runtime_plugin(schema)))
            .and_then(Item::as_table_mut)
        {
            if cri.get("restrict_oom_score_adj").and_then(Item::as_bool) == Some(true) {
                cri.remove("restrict_oom_score_adj");
            }
        }
    }
    doc.to_string() != before
}

/// The 2.x drop-in: our handlers, merged by containerd into the operator's settings. Its schema
/// is the main config's (measured on 2.1.9: a schema 3 drop-in under Debian's schema 2
/// config.toml changed CNI's bin_dirs in `config dump`; a schema 2 one changed nothing but ours).
pub fn drop_in(schema: i64, restrict_oom: bool) -> String {
    let mut doc = DocumentMut::new();
    doc.decor_mut().set_prefix(format!(
        "{MARK}\n# The beta9 sandbox runtime (gVisor) as CRI handlers; ctr and Docker Engine use it as {RUNTIME_TYPE}.\n"
    ));
    doc["version"] = value(schema);
    let runtimes = table_at(doc.as_table_mut(), &runtimes_path(schema)).expect("a new document");
    for h in HANDLERS {
        runtimes.insert(h.name, Item::Table(runtime_table(h)));
    }
    if restrict_oom {
        let cri = table_at(doc.as_table_mut(), &["plugins", cri_runtime_plugin(schema)]).expect("a new document");
        cri.set_implicit(false);
        cri.set_position(Some(1));
        cri["restrict_oom_score_adj"] = value(true);
    }
    doc.to_string()
}

/// A 2.x main config where there was none: containerd's defaults, plus the import of ours.
pub fn new_main_v3() -> String {
    format!("{MARK}\nversion = 3\nimports = [\"{DROP_IN}\"]\n")
}

/// containerd resolves a relative import against the main config's directory, and expands globs.
pub fn import_covers(pattern: &str, main_dir: &str, path: &str) -> bool {
    let full = if pattern.starts_with('/') {
        pattern.to_string()
    } else {
        format!("{}/{}", main_dir.trim_end_matches('/'), pattern)
    };
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    glob::Pattern::new(&full).is_ok_and(|p| p.matches_with(path, opts))
}

/// The config's `imports`, as written.
pub fn imports(doc: &DocumentMut) -> Vec<String> {
    str_array(doc.get("imports")).unwrap_or_default()
}

/// Adds `path` to the main config's `imports` unless an import already covers it. Returns whether it changed.
pub fn ensure_import(doc: &mut DocumentMut, main_dir: &str, path: &str) -> Result<bool, String> {
    if imports(doc)
        .iter()
        .any(|p| import_covers(p, main_dir, path))
    {
        return Ok(false);
    }
    match doc.get_mut("imports") {
        Some(item) => item
            .as_array_mut()
            .ok_or("imports is not an array of strings")?
            .push(path),
        None => {
            let mut key_first = Array::from_iter([path]);
            key_first.set_trailing("");
            doc.insert("imports", value(key_first));
        }
    }
    Ok(true)
}

/// Takes `path` out of `imports` again; an `imports` that held only it goes too.
pub fn remove_import(doc: &mut DocumentMut, path: &str) -> bool {
    let Some(arr) = doc.get_mut("imports").and_then(Item::as_array_mut) else {
        return false;
    };
    let before = arr.len();
    arr.retain(|v| v.as_str() != Some(path));
    let changed = arr.len() != before;
    if arr.is_empty() {
        doc.remove("imports");
    }
    changed
}

/// Whether a config sets CRI's plugin table (in its own schema).
pub fn sets_cri(doc: &DocumentMut) -> bool {
    doc.get("plugins").and_then(|p| p.get(cri_runtime_plugin(schema_of(doc)))).is_some()
}

/// On 1.x an imported file's CRI section replaces the main config's whole: a registration in
/// config.toml would then be silently lost. The first such import, if any.
pub fn cri_overridden_by(imported: &[(String, DocumentMut)]) -> Option<&str> {
    imported.iter().find(|(_, d)| sets_cri(d)).map(|(p, _)| p.as_str())
}

/// containerd's gRPC socket as the config sets it.
pub fn address(doc: &DocumentMut) -> String {
    doc.get("grpc")
        .and_then(|g| g.get("address"))
        .and_then(Item::as_str)
        .unwrap_or(DEFAULT_ADDRESS)
        .to_string()
}

/// Whether the CRI section sets restrict_oom_score_adj at all (the operator's word wins).
pub fn sets_restrict_oom(doc: &DocumentMut) -> bool {
    [1, 2, 3].iter().any(|s| {
        doc.get("plugins")
            .and_then(|p| p.get(cri_runtime_plugin(*s)))
            .and_then(|c| c.get("restrict_oom_score_adj"))
            .is_some()
    })
}

/// CNI's plugin directories and network config directory as the main config sets them, with
/// containerd's defaults.
pub fn cni_dirs(doc: &DocumentMut) -> (Vec<String>, String) {
    let mut bins = Vec::new();
    let mut conf = None;
    for s in [1, 2, 3] {
        let Some(cni) = doc
            .get("plugins")
            .and_then(|p| p.get(cri_runtime_plugin(s)))
            .and_then(|c| c.get("cni"))
        else {
            continue;
        };
        if let Some(b) = cni
            .get("bin_dir")
            .and_then(Item::as_str)
            .filter(|b| !b.is_empty())
        {
            bins.push(b.to_string());
        }
        bins.extend(str_array(cni.get("bin_dirs")).unwrap_or_default());
        conf = conf.or(cni
            .get("conf_dir")
            .and_then(Item::as_str)
            .map(str::to_string));
    }
    if bins.is_empty() {
        bins.push("/opt/cni/bin".into());
    }
    (bins, conf.unwrap_or_else(|| "/etc/cni/net.d".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n";

    fn parsed(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn versions_parse_from_containerd_version_lines() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(
            v("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3"),
            Version { major: 1, minor: 6 }
        );
        assert_eq!(
            v("containerd github.com/containerd/containerd/v2 2.1.9+unknown "),
            Version { major: 2, minor: 1 }
        );
        assert_eq!(v("v1.7"), Version { major: 1, minor: 7 });
        assert_eq!(Version::parse("containerd"), None);
        assert!(
            !v("1.5").supported()
                && v("1.6").supported()
                && v("2.1").supported()
                && !v("3.0").supported()
        );
        assert!(!v("1.7").merges_drop_ins() && v("2.0").merges_drop_ins());
    }

    #[test]
    fn in_place_keeps_every_byte_of_the_operators_file_and_adds_both_handlers() {
        let mut doc: DocumentMut = DEBIAN.parse().unwrap();
        assert!(add_in_place(&mut doc, false, false).unwrap());
        let out = doc.to_string();
        assert!(
            out.starts_with(DEBIAN),
            "the original comes first, unchanged:\n{out}"
        );
        let t = parsed(&out);
        let rt = &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(rt["beta9"]["runtime_type"].as_str(), Some(RUNTIME_TYPE));
        assert_eq!(
            rt["beta9"]["options"]["ConfigPath"].as_str(),
            Some("/etc/containerd/beta9-sandbox.toml")
        );
        assert_eq!(
            rt["beta9-docker"]["options"]["ConfigPath"].as_str(),
            Some("/etc/containerd/beta9-sandbox-docker.toml")
        );
        assert_eq!(
            rt["beta9-docker"]["container_annotations"][0].as_str(),
            Some(ANNOTATIONS)
        );
        assert!(out.contains(MARK));
        // Twice is once.
        let mut again: DocumentMut = out.parse().unwrap();
        assert!(!add_in_place(&mut again, false, false).unwrap());
        assert_eq!(again.to_string(), out);
        // And out again gives the original back.
        assert!(remove(&mut again, false, None));
        assert_eq!(again.to_string().trim_end(), DEBIAN.trim_end());
    }

    #[test]
    fn the_default_runtime_is_kept_where_the_config_has_no_runtimes() {
        let defaults: DocumentMut = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n    runtime_type = \"io.containerd.runc.v2\"\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n      BinaryName = \"\"\n".parse().unwrap();
        let mut doc: DocumentMut = DEBIAN.parse().unwrap();
        assert!(lacks_runtimes(&doc));
        assert_eq!(keep_default_runtime(&mut doc, &defaults).unwrap().as_deref(), Some("runc"));
        add_in_place(&mut doc, false, false).unwrap();
        let out = doc.to_string();
        assert!(out.starts_with(DEBIAN), "{out}");
        let t = parsed(&out);
        let rt = &t["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(rt["runc"]["options"]["BinaryName"].as_str(), Some(""));
        assert!(rt.get("beta9").is_some());
        assert!(!lacks_runtimes(&doc));
        assert_eq!(keep_default_runtime(&mut doc, &defaults).unwrap(), None, "a config with runtimes keeps its own");
        assert!(remove(&mut doc, false, Some("runc")));
        assert_eq!(doc.to_string().trim_end(), DEBIAN.trim_end());
    }

    #[test]
    fn schema_1_uses_the_short_plugin_name() {
        let mut doc: DocumentMut = "[plugins.cri]\n  sandbox_image = \"x\"\n".parse().unwrap();
        add_in_place(&mut doc, false, true).unwrap();
        let t = parsed(&doc.to_string());
        assert_eq!(
            t["plugins"]["cri"]["containerd"]["runtimes"]["beta9"]["runtime_type"].as_str(),
            Some(RUNTIME_TYPE)
        );
        assert_eq!(
            t["plugins"]["cri"]["restrict_oom_score_adj"].as_bool(),
            Some(true)
        );
        assert_eq!(t["plugins"]["cri"]["sandbox_image"].as_str(), Some("x"));
    }

    #[test]
    fn a_foreign_handler_of_the_same_name_is_refused_not_overwritten() {
        let text = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.beta9]\n  runtime_type = \"io.containerd.runc.v2\"\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        let e = add_in_place(&mut doc, false, false).unwrap_err();
        assert!(e.contains("beta9 already exists"), "{e}");
        assert_eq!(doc.to_string(), text);
        assert_eq!(existing(&doc), (vec![], vec!["beta9"]));
    }

    #[test]
    fn restrict_oom_is_set_only_where_the_operator_said_nothing() {
        let mut doc: DocumentMut = DEBIAN.parse().unwrap();
        assert!(!sets_restrict_oom(&doc));
        add_in_place(&mut doc, false, true).unwrap();
        assert!(sets_restrict_oom(&doc));
        let t = parsed(&doc.to_string());
        assert_eq!(
            t["plugins"]["io.containerd.grpc.v1.cri"]["restrict_oom_score_adj"].as_bool(),
            Some(true)
        );
        assert!(remove(&mut doc, true, None));
        assert_eq!(doc.to_string().trim_end(), DEBIAN.trim_end());
        let mut off: DocumentMut = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  restrict_oom_score_adj = false\n".parse().unwrap();
        add_in_place(&mut off, false, true).unwrap();
        assert_eq!(
            parsed(&off.to_string())["plugins"]["io.containerd.grpc.v1.cri"]
                ["restrict_oom_score_adj"]
                .as_bool(),
            Some(false)
        );
    }

    #[test]
    fn the_drop_in_has_both_handlers_in_the_schema_asked() {
        for (schema, plugin) in [(3, "io.containerd.cri.v1.runtime"), (2, "io.containerd.grpc.v1.cri")] {
            let t = parsed(&drop_in(schema, true));
            assert_eq!(t["version"].as_integer(), Some(schema));
            let cri = &t["plugins"][plugin];
            assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
            for h in HANDLERS {
                assert_eq!(cri["containerd"]["runtimes"][h.name]["options"]["ConfigPath"].as_str(), Some(h.config_path));
            }
        }
        let doc: DocumentMut = drop_in(3, false).parse().unwrap();
        assert_eq!(existing(&doc), (vec!["beta9", "beta9-docker"], vec![]));
        assert!(!sets_restrict_oom(&doc));
    }

    #[test]
    fn imports_are_added_once_and_only_where_no_glob_covers_the_drop_in() {
        assert!(import_covers(
            "/etc/containerd/conf.d/*.toml",
            "/etc/containerd",
            DROP_IN
        ));
        assert!(import_covers("conf.d/*.toml", "/etc/containerd", DROP_IN));
        assert!(
            !import_covers("/etc/containerd/*.toml", "/etc/containerd", DROP_IN),
            "* stops at /"
        );
        assert!(!import_covers(
            "/etc/containerd/operator.d/*.toml",
            "/etc/containerd",
            DROP_IN
        ));

        let text =
            "version = 3\nimports = [\"/etc/containerd/operator.d/*.toml\"]  # the operator's\n";
        let mut doc: DocumentMut = text.parse().unwrap();
        assert!(ensure_import(&mut doc, "/etc/containerd", DROP_IN).unwrap());
        assert_eq!(
            imports(&doc),
            vec![
                "/etc/containerd/operator.d/*.toml".to_string(),
                DROP_IN.into()
            ]
        );
        assert!(doc.to_string().contains("# the operator's"));
        assert!(!ensure_import(&mut doc, "/etc/containerd", DROP_IN).unwrap());
        assert!(remove_import(&mut doc, DROP_IN));
        assert_eq!(doc.to_string(), text);

        let mut none: DocumentMut = DEBIAN.parse().unwrap();
        assert!(ensure_import(&mut none, "/etc/containerd", DROP_IN).unwrap());
        assert_eq!(
            parsed(&none.to_string())["imports"][0].as_str(),
            Some(DROP_IN)
        );
        assert!(remove_import(&mut none, DROP_IN));
        assert_eq!(none.to_string(), DEBIAN);

        let covered = "version = 3\nimports = [\"conf.d/*.toml\"]\n";
        let mut doc: DocumentMut = covered.parse().unwrap();
        assert!(!ensure_import(&mut doc, "/etc/containerd", DROP_IN).unwrap());
        assert_eq!(parsed(&new_main_v3())["imports"][0].as_str(), Some(DROP_IN));
    }

    #[test]
    fn an_import_that_sets_cri_is_found() {
        let debug: DocumentMut = "version = 2\n[debug]\nlevel = \"info\"\n".parse().unwrap();
        let cri: DocumentMut = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\nconf_dir = \"/x\"\n".parse().unwrap();
        let v1: DocumentMut = "[plugins.cri]\nsandbox_image = \"x\"\n".parse().unwrap();
        assert_eq!(cri_overridden_by(&[("/a.toml".into(), debug.clone())]), None);
        assert_eq!(cri_overridden_by(&[("/a.toml".into(), debug), ("/b.toml".into(), cri)]), Some("/b.toml"));
        assert_eq!(cri_overridden_by(&[("/c.toml".into(), v1)]), Some("/c.toml"));
    }

    #[test]
    fn cni_dirs_and_the_address_follow_the_config_or_containerds_defaults() {
        let doc: DocumentMut = DEBIAN.parse().unwrap();
        assert_eq!(
            cni_dirs(&doc),
            (
                vec!["/usr/lib/cni".to_string()],
                "/etc/cni/net.d".to_string()
            )
        );
        assert_eq!(address(&doc), DEFAULT_ADDRESS);
        let v3: DocumentMut = "version = 3\n[grpc]\naddress = \"/run/x.sock\"\n[plugins.\"io.containerd.cri.v1.runtime\".cni]\nbin_dirs = [\"/a\", \"/b\"]\nconf_dir = \"/c\"\n".parse().unwrap();
        assert_eq!(
            cni_dirs(&v3),
            (vec!["/a".to_string(), "/b".to_string()], "/c".to_string())
        );
        assert_eq!(address(&v3), "/run/x.sock");
        assert_eq!(
            cni_dirs(&DocumentMut::new()).0,
            vec!["/opt/cni/bin".to_string()]
        );
    }
}
