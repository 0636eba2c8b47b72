//! Snapshot and restore of whole sandboxes (issue 19) through each client path: `ctr c
//! checkpoint --task` and `ctr c restore --live`, `ctr t checkpoint`, and containerd's API as
//! its Go client drives it (Checkpoint with either option type or none, Create with the
//! checkpoint's descriptor or with an image path), on containerd 1.6 and 2.1.

use std::time::{Duration, Instant};

use beta9_e2e::{
    client::{runc_options, Client, OptionField::*, Output, Reader, Stdio, Task},
    *,
};

/// Counts into /tmp/count (the sandbox's memory overlay) twenty times a second.
/// Written aside and renamed: a reader between `>`'s truncation and the write would see "".
const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done";

/// A checkpoint image in containerd (`ctr c checkpoint`), removed with the test.
struct Checkpoint(String);

impl Drop for Checkpoint {
    fn drop(&mut self) {
        // --sync: its content goes now, not at containerd's next collection.
        let _ = run_cmd(ctr().args(["images", "rm", "--sync", &self.0]), None);
    }
}

/// A directory of the test's own, removed with it.
struct Dir(std::path::PathBuf);

impl Dir {
    fn new(prefix: &str) -> Dir {
        let d = std::env::temp_dir().join(unique_id(prefix));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the counter of a running container says.
fn count(c: &Container) -> u64 {
    let r = c.exec(&unique_id("count"), &["cat", "/tmp/count"], None);
    r.stdout.trim().parse().unwrap_or_else(|_| panic!("count of {}: {:?} {}", c.id, r.stdout, r.stderr))
}

fn counting(c: &Container) -> u64 {
    assert!(eventually(Duration::from_secs(10), || c.exec(&unique_id("count"), &["cat", "/tmp/count"], None).code == 0));
    count(c)
}

/// `ctr c restore --live ID REF`: the container `c` comes back from the checkpoint image.
fn restore(c: &Container, image: &str, extra: &[&str]) -> Run {
    let mut cmd = ctr();
    cmd.args(["containers", "restore", "--live"]).args(extra).args([&c.id, image]);
    run_cmd(&mut cmd, None)
}

#[test]
fn a_counter_checkpointed_with_ctr_counts_on_from_its_value_under_a_new_id() {
    let c = Container::new("ckpt");
    c.start(BUSYBOX, &[], &["sh", "-c", COUNTER]);
    assert!(eventually(Duration::from_secs(10), || counting(&c) >= 5));
    let sandbox = c.sandbox_pid();
    let image = Checkpoint(format!("beta9/checkpoint:{}", c.id));
    let r = run_cmd(ctr().args(["containers", "checkpoint", "--task", &c.id, &image.0]), None);
    assert_eq!(r.code, 0, "ctr c checkpoint: {}{}", r.stdout, r.stderr);
    let saved = count(&c);
    // ctr pauses, checkpoints and resumes: the original runs on, in the same sandbox.
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
    assert_eq!(c.sandbox_pid(), sandbox, "the same sandbox process");

    let restored = Container::new("ckptnew");
    let r = restore(&restored, &image.0, &[]);
    assert_eq!(r.code, 0, "ctr c restore: {}{}", r.stdout, r.stderr);
    let first = counting(&restored);
    assert!(first >= saved.saturating_sub(2) && first < saved + 40, "it counts on from {saved}: {first}");
    assert!(eventually(Duration::from_secs(10), || count(&restored) > first), "and goes on counting");
    assert!(count(&c) > saved, "the original counts too");
    // Its own cgroup, not the original's (the checkpoint's spec names /default/<original>).
    let pid = restored.sandbox_pid().unwrap();
    let cgroup = cgroups::of_process(pid, "memory").unwrap();
    assert!(cgroup.ends_with(&restored.id), "{cgroup}");
}

#[test]
fn ctr_t_checkpoint_leaves_the_task_running_unless_asked_to_exit() {
    let c = Container::new("tckpt");
    // Counting, so that the two checkpoints differ (ctr refuses content it already has).
    c.start(BUSYBOX, &[], &["sh", "-c", COUNTER]);
    let sandbox = c.sandbox_pid();
    let r = c.task(&["checkpoint", &c.id]);
    assert_eq!(r.code, 0, "ctr t checkpoint: {}{}", r.stdout, r.stderr);
    let image = Checkpoint(r.stdout.trim().to_string());
    assert!(image.0.starts_with("sha256:") || !image.0.is_empty(), "ctr prints the checkpoint: {}", r.stdout);
    assert_eq!((c.status().as_deref(), c.sandbox_pid()), (Some("RUNNING"), sandbox), "leave-running: the same sandbox");
    // 1.6's ctr sends no options to a runtime not named io.containerd.runc*, so --exit is lost
    // on the way; 2.x sends it. (ctr refuses to write the spec's blob a second time.)
    drop(image);
    let r = c.task(&["checkpoint", "--exit", &c.id]);
    assert_eq!(r.code, 0, "ctr t checkpoint --exit: {}{}", r.stdout, r.stderr);
    let _exited = Checkpoint(r.stdout.trim().to_string());
    if containerd_1x() {
        assert_eq!(c.status().as_deref(), Some("RUNNING"));
    } else {
        assert!(eventually(Duration::from_secs(10), || c.status().as_deref() == Some("STOPPED")), "{:?}", c.status());
        assert_eq!(c.wait_exit(), 0, "runsc ends a saved sandbox with 0");
    }
}

/// Checkpoint options as this containerd's Go client sends them: 1.x the linux.runc type
/// (image_path 9), 2.x runc.v1 (image_path 8), with `exit` at 1 in both.
fn checkpoint_options(exit: bool, image_path: Option<&str>) -> prost_types::Any {
    let (type_name, field) =
        if containerd_1x() { ("containerd.linux.runc.CheckpointOptions", 9) } else { ("containerd.runc.v1.CheckpointOptions", 8) };
    let mut fields = vec![Number(1, exit as u64)];
    if let Some(p) = image_path {
        fields.push(Text(field, p));
    }
    runc_options(type_name, &fields)
}

/// Create options that restore from an image path: 1.x sends it in the linux.runc type only
/// (criu_image_path 13), 2.x in runc.v1 (10), and also as the request's checkpoint.
fn restore_options(dir: &str) -> prost_types::Any {
    if containerd_1x() {
        runc_options("containerd.linux.runc.CreateOptions", &[Text(13, dir)])
    } else {
        runc_options("containerd.runc.v1.Options", &[Text(10, dir)])
    }
}

/// A task of the gRPC client that counts, started.
fn counter<'a>(client: &'a Client, prefix: &str) -> Task<'a> {
    let t = Task::container(client, prefix, BUSYBOX, &[], &["sh", "-c", COUNTER]);
    t.create(&Stdio::default(), t.rootfs()).expect("CreateTask");
    t.start("").expect("Start");
    t
}

/// What a task's counter says, through an exec of the gRPC client.
fn task_count(t: &Task) -> Option<u64> {
    let id = unique_id("c");
    let out = t.fifo(&format!("{id}.out"));
    let stdio = Stdio { stdout: out.to_string_lossy().into(), ..Default::default() };
    let said = Output::read(&out, Reader::Fast);
    t.exec(&id, &t.process(&["cat", "/tmp/count"], false), &stdio).ok()?;
    t.start(&id).ok()?;
    let code = t.wait(&id).ok()?;
    let _ = t.delete_process(&id);
    (code == 0).then(|| String::from_utf8_lossy(&said.all()).trim().parse().ok()).flatten()
}

#[test]
fn the_go_clients_checkpoint_and_restore_with_a_descriptor_and_with_an_image_path() {
    let client = Client::connect();
    let mut t = counter(&client, "gockpt");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some_and(|n| n >= 5)));

    // container.Checkpoint(WithCheckpointTask): runc.v1's type, exit false, on both versions.
    let descriptor = t.checkpoint(Some(runc_options("containerd.runc.v1.CheckpointOptions", &[Number(5, 1)]))).expect("Checkpoint");
    assert!(descriptor.is_some(), "containerd stored the checkpoint");
    let saved = task_count(&t).unwrap();
    let from_descriptor = Task::container(&client, "gorestore", BUSYBOX, &[], &["sh", "-c", COUNTER]);
    from_descriptor.create_from(&Stdio::default(), from_descriptor.rootfs(), None, descriptor).expect("Create from the checkpoint");
    from_descriptor.start("").expect("Start of a restored task");
    let n = task_count(&from_descriptor).expect("the restored counter");
    assert!(n >= saved.saturating_sub(2) && n < saved + 40, "{n} from {saved}");

    // task.Checkpoint(WithCheckpointImagePath): the files land in the client's directory. (Of
    // another task: containerd refuses to store the same spec blob twice while the first is held.)
    let mut t2 = counter(&client, "gockpt2");
    assert!(eventually(Duration::from_secs(10), || task_count(&t2).is_some()));
    let dir = Dir::new("ckimg");
    t2.checkpoint(Some(checkpoint_options(false, Some(dir.path())))).expect("Checkpoint to an image path");
    let files: Vec<String> = std::fs::read_dir(&dir.0).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(files.contains(&"checkpoint.img".to_string()) && files.contains(&"beta9-checkpoint.json".to_string()), "{files:?}");
    // NewTask(WithRestoreImagePath) into a container of the image's default spec.
    let from_path = Task::container(&client, "gopath", BUSYBOX, &[], &["true"]);
    from_path.create_with(&Stdio::default(), from_path.rootfs(), Some(restore_options(dir.path()))).expect("Create from an image path");
    from_path.start("").expect("Start");
    assert!(task_count(&from_path).is_some(), "the restored counter runs, not the spec's `true`");
}

#[test]
fn a_checkpoint_is_refused_while_an_exec_runs_and_taken_once_it_ended() {
    let client = Client::connect();
    let mut t = counter(&client, "ckexec");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some()));
    let id = unique_id("x");
    t.exec(&id, &t.process(&["sleep", "300"], false), &Stdio::default()).expect("Exec");
    t.start(&id).expect("Start of the exec");
    // runsc would write an image that its restore refuses ("no host FD available for :host:2").
    let e = t.checkpoint(None).expect_err("Checkpoint while an exec runs");
    assert!(e.message().contains(&id) && e.message().contains("no host FD available"), "{e:?}");
    t.kill(&id, libc::SIGKILL as u32).expect("Kill of the exec");
    t.wait(&id).expect("Wait for the exec");
    let _ = t.delete_process(&id);
    let descriptor = t.checkpoint(None).expect("Checkpoint once the exec ended");
    let restored = Task::container(&client, "ckexecnew", BUSYBOX, &[], &["sh", "-c", COUNTER]);
    restored.create_from(&Stdio::default(), restored.rootfs(), None, descriptor).expect("Create from the checkpoint");
    restored.start("").expect("Start of the restored task");
    assert!(task_count(&restored).is_some(), "the restored counter runs");
}

#[test]
fn checkpoint_with_exit_ends_the_task_with_its_exit_published() {
    let client = Client::connect();
    let mut t = counter(&client, "ckexit");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some()));
    t.checkpoint(Some(checkpoint_options(true, None))).expect("Checkpoint with exit");
    assert_eq!(t.wait("").expect("Wait"), 0);
}

#[test]
fn a_paused_task_stays_paused_through_its_checkpoint() {
    // containerd's task status: CREATED 1, RUNNING 2, STOPPED 3, PAUSED 4.
    const PAUSED: i32 = 4;
    let client = Client::connect();
    let mut t = counter(&client, "ckpaused");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some()));
    t.pause().expect("Pause");
    t.checkpoint(None).expect("Checkpoint while paused");
    assert_eq!(t.status().unwrap(), PAUSED);
    t.resume().expect("Resume");
    let n = task_count(&t).expect("running again");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some_and(|m| m > n)));
}

#[test]
fn a_terminal_task_comes_back_on_a_new_terminal() {
    let client = Client::connect();
    let mut t = Task::container(&client, "cktty", BUSYBOX, &[], &["sh", "-c", "read a; echo z${a}z; read b; echo y${b}y"]);
    let stdin = t.fifo("in");
    let out = t.fifo("out");
    let stdio = Stdio { stdin: stdin.to_string_lossy().into(), stdout: out.to_string_lossy().into(), terminal: true, ..Default::default() };
    let said = Output::read(&out, Reader::Fast);
    t.create(&stdio, t.rootfs()).expect("CreateTask");
    t.start("").expect("Start");
    let mut w = std::fs::OpenOptions::new().write(true).open(&stdin).unwrap();
    std::io::Write::write_all(&mut w, b"one\n").unwrap();
    // The terminal echoes "one", then the shell's "zonez".
    assert!(eventually(Duration::from_secs(10), || said.so_far() >= "one\r\nzonez\r\n".len()));
    let descriptor = t.checkpoint(None).expect("Checkpoint");
    assert!(descriptor.is_some(), "containerd stored the checkpoint");

    let r = Task::container(&client, "cktty2", BUSYBOX, &[], &["true"]);
    let (stdin2, out2) = (r.fifo("in"), r.fifo("out"));
    let stdio2 = Stdio { stdin: stdin2.to_string_lossy().into(), stdout: out2.to_string_lossy().into(), terminal: true, ..Default::default() };
    let said2 = Output::read(&out2, Reader::Fast);
    r.create_from(&stdio2, r.rootfs(), None, descriptor).expect("Create from the checkpoint");
    r.start("").expect("Start");
    let mut w2 = std::fs::OpenOptions::new().write(true).open(&stdin2).unwrap();
    std::io::Write::write_all(&mut w2, b"two\n").unwrap();
    assert_eq!(r.wait("").expect("Wait"), 0);
    assert!(String::from_utf8_lossy(&said2.all()).contains("ytwoy"), "the restored shell reads the new terminal");
}

#[test]
fn bad_checkpoints_are_refused_in_words_and_leave_nothing() {
    let client = Client::connect();
    let mut t = counter(&client, "ckbad");
    assert!(eventually(Duration::from_secs(10), || task_count(&t).is_some()));
    let good = Dir::new("ckgood");
    t.checkpoint(Some(checkpoint_options(false, Some(good.path())))).expect("Checkpoint");
    // A variant of the good image: `change` edits its copy.
    let variant = |change: &dyn Fn(&std::path::Path)| {
        let d = Dir::new("ckvar");
        for e in std::fs::read_dir(&good.0).unwrap().flatten() {
            std::fs::copy(e.path(), d.0.join(e.file_name())).unwrap();
        }
        change(&d.0);
        d
    };
    let refused = |image: &str, image_of: &str, words: &[&str]| {
        let r = Task::container(&client, "ckbadr", image_of, &[], &["true"]);
        let started = Instant::now();
        let e = r.create_with(&Stdio::default(), r.rootfs(), Some(restore_options(image))).expect_err("a bad checkpoint");
        assert!(started.elapsed() < Duration::from_secs(30));
        for w in words {
            assert!(e.message().contains(w), "the error says {w:?}: {}", e.message());
        }
        assert!(!e.message().contains("goroutine"), "runsc's first words, not its stack: {}", e.message());
        // Dropping the task checks that no runsc state, process, mount or cgroup is left.
    };
    let truncated = variant(&|d| {
        let f = d.join("checkpoint.img");
        let len = std::fs::metadata(&f).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&f).unwrap().set_len(len / 2).unwrap();
    });
    // runsc's words vary with where the image ends: "EOF", "unexpected EOF", "hash mismatch".
    refused(truncated.path(), BUSYBOX, &["restoring container"]);
    let garbage = variant(&|d| std::fs::write(d.join("checkpoint.img"), vec![7u8; 4096]).unwrap());
    refused(garbage.path(), BUSYBOX, &["bad magic header"]);
    let other_runsc = variant(&|d| {
        let record = std::fs::read_to_string(d.join("beta9-checkpoint.json")).unwrap();
        std::fs::write(d.join("beta9-checkpoint.json"), record.replace("20240729", "20221219")).unwrap();
    });
    refused(other_runsc.path(), BUSYBOX, &["20221219", "only that runsc"]);
    let missing = format!("{}/nowhere", good.path());
    refused(&missing, BUSYBOX, &["nowhere", "checkpoint.img is missing"]);
    refused(good.path(), DEBIAN, &["another image"]);

    // A task that was created but never started has nothing to save.
    let mut created = Task::container(&client, "ckcreated", BUSYBOX, &[], &["true"]);
    created.create(&Stdio::default(), created.rootfs()).expect("CreateTask");
    let e = created.checkpoint(None).expect_err("Checkpoint of a created task");
    assert!(e.message().contains("not started"), "{e:?}");
    // Nor one whose command has ended: its sandbox ended with it.
    let mut stopped = Task::container(&client, "ckstopped", BUSYBOX, &[], &["true"]);
    stopped.create(&Stdio::default(), stopped.rootfs()).expect("CreateTask");
    stopped.start("").expect("Start");
    assert_eq!(stopped.wait("").expect("Wait"), 0);
    let e = stopped.checkpoint(None).expect_err("Checkpoint of a stopped task");
    assert!(e.message().contains("is not running"), "{e:?}");
}

#[test]
fn restore_into_an_id_that_exists_is_refused() {
    let c = Container::new("ckdup");
    c.start(BUSYBOX, &[], &["sleep", "300"]);
    let image = Checkpoint(format!("beta9/checkpoint:{}", c.id));
    let r = run_cmd(ctr().args(["containers", "checkpoint", "--task", &c.id, &image.0]), None);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = restore(&c, &image.0, &[]);
    r.assert_refused(&["already exists"]);
    assert_eq!(c.status().as_deref(), Some("RUNNING"), "the running one is untouched");
}

#[test]
fn a_pod_is_not_checkpointed_and_says_why() {
    let cri = cri::Cri::connect();
    let mut pod = cri.run_pod("ckpod", &[], true).expect("RunPodSandbox");
    let app = pod.run(&cri::Spec { name: "c", image: BUSYBOX, command: &["sleep", "300"], ..Default::default() });
    let checkpoint = |id: &str| {
        let mut cmd = ctr();
        cmd.args(["-n", "k8s.io", "task", "checkpoint", id]);
        run_cmd(&mut cmd, None)
    };
    // ctr pauses first: an app container is refused there, the pod's sandbox at the checkpoint.
    checkpoint(&app).assert_refused(&["pod sandbox", "as a whole"]);
    checkpoint(&pod.id).assert_refused(&["pod sandbox", "one at a time"]);
    assert_eq!(pod.state(&app), k8s_cri::v1::ContainerState::ContainerRunning, "resumed and running");
}

#[test]
fn a_docker_sandbox_comes_back_with_its_images_and_runs_a_nested_container() {
    let tar = nested_busybox_tar();
    let mount = format!("type=bind,src={},dst=/images/busybox.tar,options=rbind:ro", tar.display());
    let c = Container::new("ckdocker");
    c.start(DEBIAN, &["--annotation", "io.beta9.sandbox.docker=true", "--mount", &mount], &["true"]);
    let r = c.exec("import", &["docker", "import", "/images/busybox.tar", "beta9/nested"], None);
    assert_eq!(r.code, 0, "docker import: {}", r.stderr);
    let image = Checkpoint(format!("beta9/checkpoint:{}", c.id));
    let r = run_cmd(ctr().args(["containers", "checkpoint", "--task", &c.id, &image.0]), None);
    assert_eq!(r.code, 0, "ctr c checkpoint: {}{}", r.stdout, r.stderr);

    let restored = Container::new("ckdockernew");
    let r = restore(&restored, &image.0, &[]);
    assert_eq!(r.code, 0, "ctr c restore: {}{}", r.stdout, r.stderr);
    // Start returned with dockerd answering, started again on bridges made anew.
    let images = restored.exec("images", &["docker", "images", "--format", "{{.Repository}}"], None);
    assert_eq!(images.code, 0, "{}", images.stderr);
    assert!(images.stdout.lines().any(|l| l == "beta9/nested"), "the imported image is there: {}", images.stdout);
    let run = restored.exec("run", &["docker", "run", "--rm", "beta9/nested", "echo", "nested after restore"], None);
    assert_eq!((run.code, run.stdout.trim()), (0, "nested after restore"), "{}", run.stderr);
    let status = restored.exec("status", &["/.beta9/agent", "status"], None);
    assert!(status.stdout.starts_with("dockerd: ready"), "{}", status.stdout);
    // The original goes on as it was.
    assert_eq!(c.exec("ping", &["docker", "version", "--format", "{{.Server.Version}}"], None).code, 0);
}
