#!/usr/bin/env python3
"""Benchmarks our shim against the peer (containerd-shim-runc-v2 driving the same runsc with the
same flags) and the floor (a raw `runsc run` of the same bundle), interleaved in one run.

Run through hack/bench.sh, which builds, starts the private containerd and imports the images.
Prints a table with ratios and writes the numbers as JSON.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

ADDRESS = os.environ.get("CONTAINERD_ADDRESS", "/run/beta9-dev/containerd.sock")
BIN = os.environ.get("BETA9_DEV", "/run/beta9-dev") + "/bin"
CACHE = os.environ.get("BETA9_CACHE", "/var/cache/beta9")
BUSYBOX = "docker.io/beta9/busybox:latest"
DEBIAN = "docker.io/beta9/debian:latest"
OURS = ["--runtime", "io.beta9.sandbox"]
PEER = ["--runtime", "io.containerd.runc.v2", "--runc-binary", BIN + "/runsc-as-runc"]
RUNSC_FLAGS = ["--network=none", "--ignore-cgroups", "--platform=systrap"]
# The init prints the time, then exits while a thread still sleeps (the case that hung runsc).
OS_EXIT = "import os,threading,time; threading.Thread(target=time.sleep,args=(300,)).start(); print(time.time(), flush=True); os._exit(5)"


def ctr(*args, check=True, timeout=120):
    p = subprocess.run(["ctr", "--address", ADDRESS, *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"ctr {' '.join(args)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def containerd_version():
    """The server's version as the private containerd reports it (hack/bench.sh --containerd)."""
    out = ctr("version").stdout
    return out.split("Server:")[-1].split("Version:")[1].split()[0]


def timed(fn):
    t = time.monotonic()
    out = fn()
    return time.monotonic() - t, out


def remove(cid):
    ctr("task", "kill", "-s", "SIGKILL", cid, check=False)
    if ctr("task", "rm", "-f", cid, check=False).returncode != 0:
        # The peer sometimes cannot kill its sandbox ("sandbox is not running"): end it by hand,
        # so a leftover never skews the rounds after it. Its failed `runsc delete` is not
        # idempotent either ("failed to delete filestore file": gone with the first try), so
        # the file is put back for the next try: the peer's tasks must not outlive the run.
        for pid, args in processes():
            if "runsc" in args[0] and args[-1] == cid:
                subprocess.run(["kill", "-9", str(pid)])
        for attempt in range(5):
            p = ctr("task", "rm", cid, check=False)
            if p.returncode == 0 or "not found" in p.stderr:
                break
            # Often the next try succeeds as it is; if not, the file goes back.
            missing = re.search(r'failed to delete filestore file "([^"]+)"', p.stderr)
            if attempt > 0 and missing and os.path.isdir(os.path.dirname(missing.group(1))):
                open(missing.group(1), "a").close()
        else:
            print(f"bench: the peer's task {cid} could not be removed: {p.stderr.strip()}", file=sys.stderr)
    ctr("containers", "rm", cid, check=False)


def processes():
    out = []
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except (OSError, ValueError):
            continue
        if d.isdigit() and argv:
            out.append((int(d), argv))
    return out


def pctl(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def shim_pids(ids):
    """Pids of the shim processes serving these container ids."""
    out = {}
    for pid, args in processes():
        if "containerd-shim" in args[0] and "-id" in args[:-1]:
            cid = args[args.index("-id") + 1]
            if cid in ids:
                out[cid] = pid
    return out


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


class Floor:
    """A busybox bundle for raw `runsc run`."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="beta9-bench-floor-")
        self.root = os.path.join(self.dir, "runsc-root")
        os.makedirs(os.path.join(self.dir, "rootfs"))
        os.makedirs(self.root)
        subprocess.run(["tar", "-C", os.path.join(self.dir, "rootfs"), "-xf", CACHE + "/busybox-rootfs.tar"], check=True)
        subprocess.run(["runsc", "spec", "--bundle", self.dir, "--", "echo", "hi"], check=True, capture_output=True)
        path = os.path.join(self.dir, "config.json")
        spec = json.load(open(path))
        spec["process"]["terminal"] = False
        json.dump(spec, open(path, "w"))
        self.n = 0

    def run(self):
        self.n += 1
        p = subprocess.run(
            ["runsc", "--root", self.root, *RUNSC_FLAGS, "run", "--bundle", self.dir, f"floor-{self.n}"],
            capture_output=True, text=True, timeout=60)
        if p.returncode != 0 or p.stdout.strip() != "hi":
            raise RuntimeError(f"runsc run: {p.returncode} {p.stderr.strip()}")

    def close(self):
        subprocess.run(["rm", "-rf", self.dir])


class BenchNetns:
    """A network namespace with a veth to a second one, as a pod's would be; removed on close.
    Also a peer wrapper that gives runsc the namespace (`--network=sandbox`)."""

    def __init__(self, tag):
        self.name, self.other = f"bench-{tag}", f"bench-{tag}-peer"
        for ns in (self.name, self.other):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", "bnch0", "netns", self.name, "type", "veth", "peer", "name", "bnch1", "netns", self.other], check=True)
        for ns, dev, addr in ((self.name, "bnch0", "10.99.250.1/24"), (self.other, "bnch1", "10.99.250.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        self.dir = tempfile.mkdtemp(prefix="beta9-bench-net-")
        self.peer_wrapper = os.path.join(self.dir, "runsc-as-runc-netns")
        with open(self.peer_wrapper, "w") as f:
            f.write("#!/bin/sh\nexec runsc --network=sandbox --ignore-cgroups --platform=systrap \"$@\"\n")
        os.chmod(self.peer_wrapper, 0o755)

    def flags(self):
        return ["--with-ns", f"network:/var/run/netns/{self.name}"]

    def close(self):
        for ns in (self.name, self.other):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", self.dir])


def peer_in_netns(net, cid):
    """The peer with runsc on the namespace's network: None if it ran, else runsc's words."""
    rt = ["--runtime", "io.containerd.runc.v2", "--runc-binary", net.peer_wrapper]
    p = ctr("run", "--rm", *rt, *net.flags(), BUSYBOX, cid, "echo", "hi", check=False, timeout=60)
    remove(cid)
    if p.returncode == 0 and p.stdout.strip() == "hi":
        return None
    words = (p.stderr.strip() or p.stdout.strip()).splitlines()
    return words[-1] if words else f"exit status {p.returncode}"


def cold_start(rt, cid, extra=()):
    p = ctr("run", "--rm", *rt, *extra, BUSYBOX, cid, "echo", "hi")
    if p.stdout.strip() != "hi":
        raise RuntimeError(f"cold start {cid}: {p.stdout!r} {p.stderr!r}")


def exit_detection(rt, cid):
    """Seconds from the init's os._exit to `ctr run --rm` returning."""
    p = ctr("run", "--rm", *rt, DEBIAN, cid, "python3", "-c", OS_EXIT, check=False)
    end = time.time()
    try:
        return end - float(p.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"os._exit run {cid}: {p.stdout!r} {p.stderr.strip()}")


def docker_ready(cid):
    """Seconds from `ctr run -d` to its return, whether docker answered right after, and the
    agent's own account: (ms preparing the sandbox, ms from dockerd's launch to its answer)."""
    t, _ = timed(lambda: ctr("run", "-d", *OURS, "--annotation", "io.beta9.sandbox.docker=true", DEBIAN, cid))
    ok = ctr("task", "exec", "--exec-id", "v", cid, "docker", "version", check=False).returncode == 0
    log = ctr("task", "exec", "--exec-id", "l", cid, "cat", "/var/log/beta9/dockerd.log", check=False).stdout
    remove(cid)
    return t, ok, agent_docker_phases(log)


def duration_ms(text):
    """A Rust Duration's Debug form (`640.12ms`, `1.2s`, `950µs`) in ms."""
    m = re.fullmatch(r"([\d.]+)(ns|µs|ms|s)", text)
    return float(m.group(1)) * {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def agent_docker_phases(log):
    """From the agent's note in dockerd's log: the prepare and the launch-to-ready phases, in ms."""
    m = re.search(r"is ready after (\S+) \((\S+) since the agent began preparing", log)
    if not m:
        raise RuntimeError(f"the agent's readiness note is missing from dockerd's log: {log[-500:]!r}")
    launch, total = duration_ms(m.group(1)), duration_ms(m.group(2))
    return {"  of which the agent preparing the sandbox": total - launch, "  of which dockerd from launch to answering": launch}


TIMELINE = re.compile(r'timeline of (\S+) (create|start|exit|delete): ([^"]*)')


def timelines(ids):
    """The shim's phases of each task in `ids` (shim/src/timeline.rs), from containerd's log:
    {id: {phase: ms}}. Every id must have its create, start and exit lines: a phase gone missing
    is a failure. Delete's phases (a task still running has none yet) are named `delete: ...`."""
    found = {}
    for line in open(os.path.join(os.environ.get("BETA9_DEV", "/run/beta9-dev"), "containerd.log"), errors="replace"):
        m = TIMELINE.search(line)
        if m and m.group(1) in ids:
            steps = found.setdefault(m.group(1), {})
            steps[m.group(2)] = {p: float(ms) for p, ms, _ in (part.rsplit(" ", 2) for part in m.group(3).split(", "))}
    for cid in ids:
        missing = {"create", "start", "exit"} - set(found.get(cid, {}))
        if missing:
            raise RuntimeError(f"the shim logged no timeline {sorted(missing)} for {cid}")
    steps = ("create", "start", "exit", "delete")
    return {cid: {(f"delete: {p}" if step == "delete" else p): ms for step in steps for p, ms in found[cid].get(step, {}).items()}
            for cid in ids}


def phases_p50(per_task):
    """p50 of each phase over tasks, in the order the phases happened."""
    order = []
    for phases in per_task:
        order += [p for p in phases if p not in order]
    return {p: round(pctl([t[p] for t in per_task if p in t], 0.5), 1) for p in order}


def density(limit, tag):
    """Starts busybox sandboxes until `limit` or a failure; counts those RUNNING afterwards."""
    before = mem_available_kb()
    ids, failure = [], None
    for i in range(limit):
        cid = f"bench-{tag}-dense-{i}"
        try:
            ctr("run", "-d", *OURS, BUSYBOX, cid, "sleep", "3600")
            ids.append(cid)
        except RuntimeError as e:
            failure = str(e)
            remove(cid)
            break
    ls = ctr("task", "ls").stdout
    running = sum(1 for line in ls.splitlines() if line.split()[:1] and line.split()[0] in ids and "RUNNING" in line)
    used = before - mem_available_kb()
    for cid in ids:
        remove(cid)
    return {"started": len(ids), "running": running, "limit": limit, "failure": failure,
            "host_kb_per_sandbox": round(used / max(len(ids), 1))}


def shim_memory(n, tag):
    """RSS of one shim, and of n shims, each serving one running sandbox: ours, then the peer."""
    out = {}
    for name, rt in (("ours", OURS), ("peer", PEER)):
        # Same width: the peer's runsc resolves ids by prefix in its one root (x-1 vs x-10).
        ids = [f"bench-{tag}-mem-{name}-{i:03d}" for i in range(n)]
        try:
            for cid in ids:
                ctr("run", "-d", *rt, BUSYBOX, cid, "sleep", "3600")
            pids = shim_pids(set(ids))
            rss = [rss_kb(pids[c]) for c in ids if c in pids]
            out[name] = {"one_kb": rss[0] if rss else None, "total_kb": sum(rss), "count": len(rss)}
        finally:
            for cid in ids:
                remove(cid)
    return out


def cgroup_cost(rounds, tag):
    """What the sandbox's cgroup costs a cold start (issue 11): ours as shipped (the shim makes
    the cgroup and starts runsc's sandbox in it), with limits to write as well, and with
    [cgroups] enforce = false from a runtime config file; interleaved."""
    with tempfile.NamedTemporaryFile("w", suffix=".toml", prefix="beta9-bench-", delete=False) as f:
        f.write("[cgroups]\nenforce = false\n")
    variants = {
        "cgroup": OURS,
        "cgroup_limits": OURS + ["--memory-limit", str(256 << 20), "--cpus", "1"],
        "no_cgroup": OURS + ["--runtime-config-path", f.name],
    }
    samples = {k: [] for k in variants}
    try:
        for r in range(rounds):
            for name, rt in variants.items():
                samples[name].append(timed(lambda: cold_start(rt, f"bench-{tag}-cg-{name}-{r}"))[0])
    finally:
        os.unlink(f.name)
    ms = lambda x: None if x is None else round(x * 1000, 1)
    out = {k: {"p50": ms(pctl(v, 0.5)), "p95": ms(pctl(v, 0.95))} for k, v in samples.items()}
    ratio = lambda a, b: None if not a or not b else round(a / b, 2)
    out["ratio_p50_cgroup_over_no_cgroup"] = ratio(out["cgroup"]["p50"], out["no_cgroup"]["p50"])
    out["ratio_p50_limits_over_no_cgroup"] = ratio(out["cgroup_limits"]["p50"], out["no_cgroup"]["p50"])
    # Where the difference is: the shim's own cgroup work is in plan and limits; runsc's processes
    # running in the cgroup show in runsc create, runsc start and run.
    out["phases_p50_ms"] = {name: phases_p50(list(timelines([f"bench-{tag}-cg-{name}-{r}" for r in range(rounds)]).values()))
                            for name in variants}
    return out


def bundle_of(cid):
    """The bundle containerd made for a ctr container (hack/containerd.sh's state directory)."""
    v = os.environ.get("BETA9_CONTAINERD", "1.6")
    state = "state" if v == "1.6" else f"state-{v}"
    return os.path.join(os.path.dirname(ADDRESS), state, "io.containerd.runtime.v2.task", "default", cid)


def floor_restore(ref, source, tag):
    """Seconds of a raw `runsc restore` of the checkpoint `ref` (its files, out of containerd) in
    the bundle of the running `source`, under a root and id of its own: what the shim adds nothing to."""
    work = tempfile.mkdtemp(prefix="beta9-bench-ckpt-")
    try:
        digest = next(m["digest"] for m in json.loads(ctr("content", "get", image_digest(ref)).stdout)["manifests"]
                      if m.get("mediaType", "").endswith("checkpoint.criu.tar"))
        blob = subprocess.run(["ctr", "--address", ADDRESS, "content", "get", digest], capture_output=True, check=True).stdout
        image = os.path.join(work, "image")
        os.makedirs(image)
        subprocess.run(["tar", "-C", image, "-xf", "-"], input=blob, check=True)
        root = os.path.join(work, "root")
        os.makedirs(root)
        cid = f"bench-{tag}-floor-restore"
        # The flags the shim gave the source's sandbox that shape what is restored.
        sandbox = next(args for _, args in processes() if args[0].startswith("runsc-sandbox") and args[-1] == source)
        shaping = [a for a in sandbox if a.startswith(("--overlay2", "--net-raw", "--allow-packet-socket-write"))]
        flags = ["--root", root, "--ignore-cgroups", "--platform=systrap", "--network=none", *shaping]
        # Output to a file: the restored sandbox inherits it and would hold a pipe open.
        with open(os.path.join(work, "out"), "w+") as out:
            t, p = timed(lambda: subprocess.run(["runsc", *flags, "restore", "--detach", "--bundle", bundle_of(source),
                                                 "--image-path", image, cid], stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=out, timeout=60))
            subprocess.run(["runsc", *flags, "delete", "--force", cid], stdout=out, stderr=out, timeout=60)
            if p.returncode != 0:
                out.seek(0)
                raise RuntimeError(f"runsc restore: {out.read().strip()[:300]}")
        return t
    finally:
        subprocess.run(["rm", "-rf", work])


def image_digest(ref):
    for line in ctr("images", "ls").stdout.splitlines()[1:]:
        f = line.split()
        if f and f[0] == ref:
            return f[2]
    raise RuntimeError(f"no image {ref}")


def blob_size(ref):
    for m in json.loads(ctr("content", "get", image_digest(ref)).stdout).get("manifests", []):
        if m.get("mediaType", "").endswith("checkpoint.criu.tar"):
            return m["size"]
    return None


def snapshot(rounds, tag):
    """Checkpoint and restore (issue 19), interleaved with busybox cold starts: for a busybox
    sandbox and a Docker sandbox with one imported image, the checkpoint's time and size, the
    restore under a new id (`ctr c restore --live`: returns with the task running, for Docker
    with dockerd answering), and a raw `runsc restore` of the same image as the floor."""
    samples = {k: [] for k in ("cold_busybox", "ckpt_busybox", "restore_busybox", "floor_busybox",
                               "ckpt_docker", "restore_docker", "floor_docker")}
    sizes = {"busybox": None, "docker": None}
    mount = f"type=bind,src={CACHE}/busybox-rootfs.tar,dst=/images/busybox.tar,options=rbind:ro"
    kinds = {
        "busybox": (["run", "-d", *OURS, BUSYBOX], ["sleep", "3600"], None),
        "docker": (["run", "-d", *OURS, "--annotation", "io.beta9.sandbox.docker=true", "--mount", mount, DEBIAN], [],
                   ["docker", "import", "/images/busybox.tar", "nested"]),
    }
    for r in range(rounds):
        samples["cold_busybox"].append(timed(lambda: cold_start(OURS, f"bench-{tag}-sc-{r}"))[0])
        for kind, (run, args, prepare) in kinds.items():
            src, new, ref = f"bench-{tag}-s{kind}-{r}", f"bench-{tag}-r{kind}-{r}", f"beta9/bench-checkpoint:{tag}-{kind}-{r}"
            try:
                ctr(*run, src, *args)
                if prepare:
                    ctr("task", "exec", "--exec-id", "prep", src, *prepare)
                t, _ = timed(lambda: ctr("containers", "checkpoint", "--task", src, ref))
                samples[f"ckpt_{kind}"].append(t)
                sizes[kind] = blob_size(ref)
                t, _ = timed(lambda: ctr("containers", "restore", "--live", new, ref))
                samples[f"restore_{kind}"].append(t)
                if kind == "docker":
                    ctr("task", "exec", "--exec-id", "v", new, "docker", "version")
                samples[f"floor_{kind}"].append(floor_restore(ref, src, tag))
            finally:
                remove(new)
                remove(src)
                ctr("images", "rm", "--sync", ref, check=False)
    ms = lambda x: None if x is None else round(x * 1000, 1)
    out = {k: {"p50": ms(pctl(v, 0.5)), "p95": ms(pctl(v, 0.95))} for k, v in samples.items()}
    out["image_bytes"] = sizes
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--shims", type=int, default=20, help="sandboxes for the shim memory total")
    ap.add_argument("--density", type=int, default=40, help="most sandboxes the density test starts")
    ap.add_argument("--json", default="target/bench/results.json")
    ap.add_argument("--cgroup-rounds", type=int, default=None, help="rounds of the cgroup cost measure (default: --rounds)")
    ap.add_argument("--snapshot-rounds", type=int, default=None, help="rounds of checkpoint/restore (default: --rounds, at most 5)")
    args = ap.parse_args()
    tag = str(os.getpid())

    floor = Floor()
    net = BenchNetns(tag)
    samples = {k: [] for k in ("cold_ours", "cold_peer", "cold_floor", "cold_net_ours", "exec_ours", "exec_peer",
                               "exit_ours", "exit_peer", "docker_ready")}
    docker_failures = 0
    docker_agent = []
    running = {"ours": f"bench-{tag}-exec-ours", "peer": f"bench-{tag}-exec-peer"}
    try:
        peer_net_failure = peer_in_netns(net, f"bench-{tag}-n-peer")
        ctr("run", "-d", *OURS, BUSYBOX, running["ours"], "sleep", "3600")
        ctr("run", "-d", *PEER, BUSYBOX, running["peer"], "sleep", "3600")
        for r in range(args.rounds):
            # Interleaved, so drift on the machine hits every contender alike.
            samples["cold_ours"].append(timed(lambda: cold_start(OURS, f"bench-{tag}-c-ours-{r}"))[0])
            samples["cold_peer"].append(timed(lambda: cold_start(PEER, f"bench-{tag}-c-peer-{r}"))[0])
            samples["cold_floor"].append(timed(floor.run)[0])
            samples["cold_net_ours"].append(timed(lambda: cold_start(OURS, f"bench-{tag}-n-ours-{r}", net.flags()))[0])
            for name in ("ours", "peer"):
                t, p = timed(lambda: ctr("task", "exec", "--exec-id", f"e{r}", running[name], "true"))
                samples[f"exec_{name}"].append(t)
            samples["exit_ours"].append(exit_detection(OURS, f"bench-{tag}-x-ours-{r}"))
            samples["exit_peer"].append(exit_detection(PEER, f"bench-{tag}-x-peer-{r}"))
            t, ok, agent = docker_ready(f"bench-{tag}-d-{r}")
            samples["docker_ready"].append(t)
            docker_agent.append(agent)
            docker_failures += 0 if ok else 1
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for cid in running.values():
            remove(cid)
        floor.close()
        net.close()
    cold_phases = phases_p50(list(timelines([f"bench-{tag}-c-ours-{r}" for r in range(args.rounds)]).values()))
    docker_phases = phases_p50([{**t, **a} for t, a in zip(timelines([f"bench-{tag}-d-{r}" for r in range(args.rounds)]).values(), docker_agent)])
    memory = shim_memory(args.shims, tag)
    dense = density(args.density, tag)
    cgroup = cgroup_cost(args.cgroup_rounds or args.rounds, tag)
    snap = snapshot(args.snapshot_rounds or min(args.rounds, 5), tag)

    ms = lambda x: None if x is None else round(x * 1000, 1)
    res = {
        "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                    "mem_total_kb": int(open("/proc/meminfo").readline().split()[1]),
                    "runsc": subprocess.run(["runsc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
                    "containerd": containerd_version()},
        "rounds": args.rounds,
        "ms": {k: {"p50": ms(pctl(v, 0.5)), "p95": ms(pctl(v, 0.95))} for k, v in samples.items()},
        "docker_failures_right_after_ready": docker_failures,
        "peer_in_a_network_namespace": peer_net_failure or "ran",
        "shim_rss": memory,
        "density": dense,
        "cgroup_cost": cgroup,
        "snapshot": snap,
        "phases_p50_ms": {"cold_start": cold_phases, "docker_ready": docker_phases},
    }
    m = res["ms"]
    ratio = lambda a, b: None if not a or not b else round(a / b, 2)
    res["ratios"] = {
        "cold_p50_ours_over_peer": ratio(m["cold_ours"]["p50"], m["cold_peer"]["p50"]),
        "cold_p50_ours_over_floor": ratio(m["cold_ours"]["p50"], m["cold_floor"]["p50"]),
        "exec_p50_ours_over_peer": ratio(m["exec_ours"]["p50"], m["exec_peer"]["p50"]),
        "exit_p50_ours_over_peer": ratio(m["exit_ours"]["p50"], m["exit_peer"]["p50"]),
        "shim_rss_ours_over_peer": ratio(memory["ours"]["one_kb"], memory["peer"]["one_kb"]),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    json.dump(res, open(args.json, "w"), indent=2)

    r = res["ratios"]
    rows = [
        ("cold start `ctr run --rm` echo, p50", m["cold_ours"]["p50"], m["cold_peer"]["p50"], m["cold_floor"]["p50"], "ms", r["cold_p50_ours_over_peer"]),
        ("cold start, p95", m["cold_ours"]["p95"], m["cold_peer"]["p95"], m["cold_floor"]["p95"], "ms", ratio(m["cold_ours"]["p95"], m["cold_peer"]["p95"])),
        ("networked cold start `ctr run --rm --with-ns network:...`, p50", m["cold_net_ours"]["p50"], None, None, "ms", None),
        ("networked cold start, p95", m["cold_net_ours"]["p95"], None, None, "ms", None),
        ("exec `true` into a running sandbox, p50", m["exec_ours"]["p50"], m["exec_peer"]["p50"], None, "ms", r["exec_p50_ours_over_peer"]),
        ("exit detection after os._exit, p50", m["exit_ours"]["p50"], m["exit_peer"]["p50"], None, "ms", r["exit_p50_ours_over_peer"]),
        ("shim RSS, one sandbox", memory["ours"]["one_kb"], memory["peer"]["one_kb"], None, "KiB", r["shim_rss_ours_over_peer"]),
        (f"shim RSS, {args.shims} sandboxes", memory["ours"]["total_kb"], memory["peer"]["total_kb"], None, "KiB", ratio(memory["ours"]["total_kb"], memory["peer"]["total_kb"])),
        ("Docker ready: `ctr run -d` docker=true, p50", m["docker_ready"]["p50"], None, None, "ms", None),
        ("Docker ready, p95", m["docker_ready"]["p95"], None, None, "ms", None),
    ]
    fmt = lambda v: "-" if v is None else f"{v:g}"
    print("| measure | ours | peer (runc-v2 + runsc) | floor (runsc run) | unit | ours / peer |")
    print("|---|---|---|---|---|---|")
    for name, a, b, c, unit, q in rows:
        print(f"| {name} | {fmt(a)} | {fmt(b)} | {fmt(c)} | {unit} | {fmt(q)} |")
    print(f"\ncold start ours / floor: {fmt(r['cold_p50_ours_over_floor'])}; "
          f"docker answered right after every ready return: {docker_failures == 0}; "
          f"density: {dense['running']} of {dense['started']} started sandboxes RUNNING (limit {dense['limit']}), "
          f"{dense['host_kb_per_sandbox']} KiB host memory each"
          + (f"; stopped by: {dense['failure']}" if dense["failure"] else ""))
    print(f"networked cold start ours / cold start ours: {fmt(ratio(m['cold_net_ours']['p50'], m['cold_ours']['p50']))}; "
          f"the peer with runsc --network=sandbox in the same namespace: "
          + (f"fails: {peer_net_failure}" if peer_net_failure else "ran"))
    print(f"cgroup setup on cold start (p50/p95 ms): with the sandbox's cgroup {fmt(cgroup['cgroup']['p50'])}/{fmt(cgroup['cgroup']['p95'])}, "
          f"plus limits {fmt(cgroup['cgroup_limits']['p50'])}/{fmt(cgroup['cgroup_limits']['p95'])}, "
          f"[cgroups] enforce = false {fmt(cgroup['no_cgroup']['p50'])}/{fmt(cgroup['no_cgroup']['p95'])}; "
          f"with / without: {fmt(cgroup['ratio_p50_cgroup_over_no_cgroup'])} (limits: {fmt(cgroup['ratio_p50_limits_over_no_cgroup'])})")
    cg = cgroup["phases_p50_ms"]
    print("phases with the cgroup / without (p50 ms): " + ", ".join(
        f"{p} {fmt(cg['cgroup'].get(p))} / {fmt(cg['no_cgroup'].get(p))}" for p in ("plan", "limits", "runsc create", "runsc start", "run")))
    print("\n| phase (ours, p50 ms; shim/src/timeline.rs) | cold start | Docker ready |")
    print("|---|---|---|")
    for p in list(dict.fromkeys([*cold_phases, *docker_phases])):
        if p in ("run", "exit") or p.startswith("delete: "):
            continue
        print(f"| {p} | {fmt(cold_phases.get(p))} | {fmt(docker_phases.get(p))} |")
    print(f"| then: start to the init's exit (echo) / TaskExit after it | {fmt(cold_phases.get('run'))} / {fmt(cold_phases.get('exit'))} | |")
    deleted = [p for p in cold_phases if p.startswith("delete: ")]
    print(f"| then Delete: {', '.join(p.removeprefix('delete: ') for p in deleted)} | {' / '.join(fmt(cold_phases[p]) for p in deleted)} | |")
    sm = snap
    mb = lambda b: "-" if b is None else f"{b / 1e6:.1f} MB"
    print("\n| checkpoint and restore | busybox | Docker (one image) | unit |")
    print("|---|---|---|---|")
    print(f"| checkpoint (`ctr c checkpoint --task`), p50 | {fmt(sm['ckpt_busybox']['p50'])} | {fmt(sm['ckpt_docker']['p50'])} | ms |")
    print(f"| image (runsc's files) | {mb(sm['image_bytes']['busybox'])} | {mb(sm['image_bytes']['docker'])} | |")
    print(f"| restore (`ctr c restore --live`, to running / dockerd answering), p50 | {fmt(sm['restore_busybox']['p50'])} | {fmt(sm['restore_docker']['p50'])} | ms |")
    print(f"| restore, p95 | {fmt(sm['restore_busybox']['p95'])} | {fmt(sm['restore_docker']['p95'])} | ms |")
    print(f"| floor: raw `runsc restore --detach` of the same image, p50 | {fmt(sm['floor_busybox']['p50'])} | {fmt(sm['floor_docker']['p50'])} | ms |")
    print(f"| busybox cold start `ctr run --rm` in the same rounds, p50 | {fmt(sm['cold_busybox']['p50'])} | | ms |")
    print(f"Docker restore - busybox cold start: {fmt(None if not sm['restore_docker']['p50'] else round(sm['restore_docker']['p50'] - sm['cold_busybox']['p50'], 1))} ms; "
          f"Docker restore / its floor: {fmt(ratio(sm['restore_docker']['p50'], sm['floor_docker']['p50']))}")
    print(f"machine: {res['machine']}; rounds: {args.rounds}; JSON: {args.json}")
    return 0 if docker_failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
