//! The runtime's config file and policy, through `ctr run --runtime-config-path`, with a real
//! containerd and runsc: what it changes, and what it refuses with nothing left behind.

use beta9_e2e::*;

/// `ctr run --rm` with the config; returns what the client saw.
fn run_with(config: &ConfigFile, c: &Container, extra: &[&str], image: &str, args: &[&str]) -> Run {
    let flag = config.flag();
    let mut all: Vec<&str> = flag.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    c.run(image, &all, args, None)
}

#[test]
fn config_file_settings_reach_runsc() {
    let config = ConfigFile::new("[runsc]\nplatform = \"ptrace\"\nextra_flags = [\"--overlay2=root:memory\"]\n");
    let c = Container::new("cfgflags");
    let flag = config.flag();
    c.start(BUSYBOX, &[&flag[0], &flag[1]], &["sleep", "60"]);
    let cmdline = c.sandbox_cmdline().expect("a running sandbox");
    assert!(cmdline.contains("--platform=ptrace"), "{cmdline}");
    assert!(cmdline.contains("--overlay2=root:memory"), "{cmdline}");
    assert!(cmdline.contains("--ignore-cgroups"), "{cmdline}");
}

#[test]
fn policy_forbids_docker_naming_the_policy_key() {
    let config = ConfigFile::new("[policy]\nallow_docker = false\n");
    let c = Container::new("cfgnodocker");
    let r = run_with(&config, &c, &["--annotation", "io.beta9.sandbox.docker=true"], DEBIAN, &["true"]);
    r.assert_refused(&["[policy] allow_docker = false"]);
    assert!(r.stderr.contains(&config.0.display().to_string()), "the file is named: {}", r.stderr);
}

#[test]
fn policy_limits_the_annotations_pod_authors_may_set() {
    let config = ConfigFile::new("[policy]\nallowed_annotations = [\"io.beta9.sandbox.keepalive\"]\n");
    let c = Container::new("cfgallowed");
    let r = run_with(&config, &c, &["--annotation", "io.beta9.sandbox.agent=false"], BUSYBOX, &["true"]);
    r.assert_refused(&["io.beta9.sandbox.agent", "[policy] allowed_annotations"]);
    let ok = Container::new("cfgallowedok");
    let r = run_with(&config, &ok, &["--annotation", "io.beta9.sandbox.keepalive=false"], BUSYBOX, &["echo", "allowed"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "allowed\n"), "{}", r.stderr);
}

#[test]
fn policy_can_forbid_the_host_network() {
    let config = ConfigFile::new("[policy]\nallow_host_network = false\n");
    let c = Container::new("cfgnohost");
    let r = run_with(&config, &c, &["--net-host"], BUSYBOX, &["true"]);
    r.assert_refused(&["[policy] allow_host_network = false"]);
}

#[test]
fn missing_runsc_is_refused_at_create() {
    let config = ConfigFile::new("[runsc]\nbinary = \"/nonexistent/runsc\"\n");
    let c = Container::new("cfgnorunsc");
    let r = run_with(&config, &c, &[], BUSYBOX, &["true"]);
    r.assert_refused(&["runsc binary \"/nonexistent/runsc\" was not found"]);
}

#[test]
fn missing_agent_is_refused_at_create() {
    let config = ConfigFile::new("[agent]\nbinary = \"/nonexistent/agent\"\n");
    let c = Container::new("cfgnoagent");
    let r = run_with(&config, &c, &[], BUSYBOX, &["true"]);
    r.assert_refused(&["the sandbox agent /nonexistent/agent does not exist"]);
}

#[test]
fn missing_or_malformed_config_is_refused_naming_the_file_and_key() {
    let c = Container::new("cfgmissing");
    let r = c.run(BUSYBOX, &["--runtime-config-path", "/nonexistent/beta9.toml"], &["true"], None);
    r.assert_refused(&["/nonexistent/beta9.toml", "cannot read"]);

    // Unreadable: a directory where the file should be.
    let dir = std::env::temp_dir();
    let c = Container::new("cfgunreadable");
    let r = c.run(BUSYBOX, &["--runtime-config-path", &dir.display().to_string()], &["true"], None);
    r.assert_refused(&[&dir.display().to_string(), "cannot read"]);

    let config = ConfigFile::new("[runsc]\nplatfrom = \"ptrace\"\n");
    let c = Container::new("cfgtypo");
    let r = run_with(&config, &c, &[], BUSYBOX, &["true"]);
    r.assert_refused(&[&config.0.display().to_string(), "platfrom"]);
}
