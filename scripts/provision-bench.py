#!/usr/bin/env python3
"""terraform apply (this provider) vs `nvflare provision` on the same projects,
and a Markdown report.

Usage (make bench runs it, with the venv python that has nvflare and psutil):

  provision-bench.py --terraform PATH --tfrc FILE --main-tf examples/quickstart/main.tf \
      --go-bench GO_BENCH_OUTPUT --out bench/results.md [--sizes 10,100,1000] \
      [--parallelism 4] [--sweep-size 100 --sweep 2,4,10,20]

For each N (participants: 1 server, 1 admin, N-2 clients) it writes the
quickstart with var.clients as Terraform input and the equivalent project.yml
(api_version 3, the builders of NVFlare's dummy_project.yml), then times, in
one run on one machine: terraform plan + apply from empty vs nvflare provision,
then one more client (terraform apply vs provisioning again), plus the plan and
refresh phases of the Terraform run. Wall time, peak RSS and CPU time of each
command's process tree are measured here (psutil sampling + wait4 rusage).
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import version
from pathlib import Path

import psutil

ORG = "nvidia"


# --------------------------------------------------------------------------
# Measuring one command


class Result:
    def __init__(self, argv, wall, rc, maxrss_kb, tree_peak_kb, cpu, cpu_by_name, machine_cpu=None):
        self.argv = argv
        self.wall = wall
        self.rc = rc
        self.maxrss_kb = maxrss_kb  # largest single process (wait4 ru_maxrss over the waited tree)
        self.tree_peak_kb = tree_peak_kb  # peak of the sum over the process tree (sampled)
        self.cpu = cpu  # user+sys seconds of the whole tree (wait4)
        self.cpu_by_name = cpu_by_name  # user+sys seconds per process name (last sample of each pid)
        # CPU seconds the whole machine used meanwhile (/proc/stat), so that
        # what other processes used is machine_cpu - cpu
        self.machine_cpu = machine_cpu

    def other_cores(self):
        """Average number of cores other processes kept busy during the command."""
        if self.machine_cpu is None or self.wall <= 0:
            return None
        return max(0.0, self.machine_cpu - self.cpu) / self.wall


def machine_busy_seconds():
    """CPU seconds all processes have used since boot (user, nice, system, irq, softirq, steal of /proc/stat)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(argv, cwd, log, env=None, interval=0.05):
    """Runs argv to completion; returns a Result. Output goes to log."""
    with open(log, "ab") as out:
        out.write(f"\n$ {' '.join(map(str, argv))}\n".encode())
        out.flush()
        t0 = time.perf_counter()
        busy0 = machine_busy_seconds()
        p = subprocess.Popen([str(a) for a in argv], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env)
    peak = [0]
    cpu_seen = {}  # pid -> (name, cpu seconds)
    stop = threading.Event()

    def sample():
        try:
            root = psutil.Process(p.pid)
        except psutil.Error:
            return
        while not stop.is_set():
            total = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break  # the command itself has exited
            except psutil.Error:
                stop.wait(interval)  # a child vanished mid-listing: try again
                continue
            for q in procs:
                try:
                    with q.oneshot():
                        total += q.memory_info().rss
                        t = q.cpu_times()
                        cpu_seen[q.pid] = (q.name(), t.user + t.system)
                except psutil.Error:
                    pass
            peak[0] = max(peak[0], total)
            stop.wait(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    busy1 = machine_busy_seconds()
    stop.set()
    th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    by_name = {}
    for name, cpu in cpu_seen.values():
        by_name[name] = by_name.get(name, 0.0) + cpu
    machine = busy1 - busy0 if busy0 is not None and busy1 is not None else None
    return Result(argv, wall, p.returncode, ru.ru_maxrss, peak[0] // 1024, ru.ru_utime + ru.ru_stime, by_name, machine)


def check(r: Result, log):
    if r.rc != 0:
        sys.stderr.write(Path(log).read_text()[-4000:])
        raise SystemExit(f"command failed ({r.rc}): {' '.join(map(str, r.argv))}; log: {log}")
    return r


# --------------------------------------------------------------------------
# The two descriptions of one project


def client_names(n_participants):
    return [f"site-{i:04d}" for i in range(1, n_participants - 1)]


PROJECT_YML_HEAD = """\
api_version: 3
name: quickstart
description: NVFlare quickstart federation
participants:
  - {name: server1, type: server, org: nvidia, fed_learn_port: 8002, admin_port: 8003, default_host: localhost}
  - {name: admin@nvidia.com, type: admin, org: nvidia, role: project_admin}
"""
PROJECT_YML_BUILDERS = """\
builders:
  - path: nvflare.lighter.impl.workspace.WorkspaceBuilder
    args:
      template_file: [master_template.yml, aws_template.yml, azure_template.yml]
  - path: nvflare.lighter.impl.static_file.StaticFileBuilder
    args:
      config_folder: config
  - path: nvflare.lighter.impl.cert.CertBuilder
  - path: nvflare.lighter.impl.signature.SignatureBuilder
"""


def write_project_yml(path: Path, clients):
    body = "".join(f"  - {{name: {c}, type: client, org: {ORG}}}\n" for c in clients)
    path.write_text(PROJECT_YML_HEAD + body + PROJECT_YML_BUILDERS)


# The layout examples/quickstart had before flare_clients: one flare_client and
# one flare_startup_kit per site (for_each). Kept here to show how Terraform's
# cost grows with the number of resource instances.
PER_RESOURCE_TF = """\
terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
}
provider "flare" {}
variable "clients" { type = list(string) }
variable "server_host" { type = string }
resource "flare_project" "quickstart" {
  name = "quickstart"
  ca   = { dir = ".flare-ca" }
}
resource "flare_server" "server1" {
  project_id   = flare_project.quickstart.id
  name         = "server1"
  org          = "nvidia"
  default_host = var.server_host
}
resource "flare_admin" "admin" {
  project_id = flare_project.quickstart.id
  name       = "admin@nvidia.com"
  org        = "nvidia"
  role       = "project_admin"
}
resource "flare_client" "site" {
  for_each   = toset(var.clients)
  project_id = flare_project.quickstart.id
  name       = each.key
  org        = "nvidia"
}
resource "flare_startup_kit" "server" {
  participant = flare_server.server1.descriptor
  output_dir  = "kits"
}
resource "flare_startup_kit" "admin" {
  participant = flare_admin.admin.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}
resource "flare_startup_kit" "site" {
  for_each    = flare_client.site
  participant = each.value.descriptor
  server      = flare_server.server1.descriptor
  output_dir  = "kits"
}
"""


def state_info(tfdir: Path):
    """(resource instances, bytes) of terraform.tfstate."""
    path = tfdir / "terraform.tfstate"
    st = json.loads(path.read_text())
    return sum(len(r.get("instances", [])) for r in st.get("resources", [])), path.stat().st_size


def write_tfvars(path: Path, clients):
    path.write_text(json.dumps({"clients": clients, "server_host": "localhost"}, indent=1))


REPO = Path(__file__).resolve().parent.parent

# Distributed provisioning: the server is named after its host, as kits made
# by `nvflare package` expect.
APPROVALS_TF = """
terraform {
  required_providers {
    flare = { source = "flarekit/flare" }
  }
}

resource "flare_project" "p" {
  name = "quickstart"
}

resource "flare_server" "server" {
  project_id = flare_project.p.id
  name       = "localhost"
  org        = "nvidia"
}

resource "flare_request_approvals" "sites" {
  project_id   = flare_project.p.id
  server       = flare_server.server.descriptor
  request_zips = [for f in fileset("${path.module}/requests", "*.request.zip") : "${path.module}/requests/${f}"]
  output_dir   = "${path.module}/approvals"
}
"""

# --------------------------------------------------------------------------
# One size


class Bench:
    def __init__(self, args, work: Path):
        self.a = args
        self.work = work
        self.env = dict(os.environ, TF_CLI_CONFIG_FILE=str(Path(args.tfrc).resolve()), TF_IN_AUTOMATION="1")
        self.env.pop("TF_LOG", None)
        self.nvflare = str(Path(sys.executable).parent / "nvflare")
        # 2.9 asks before provisioning into a workspace that exists; --force
        # answers (older lines have no such question, and no flag).
        help_text = subprocess.run([self.nvflare, "provision", "-h"], capture_output=True, text=True).stdout
        self.nv_force = ["--force"] if "--force" in help_text else []

    def tf(self, *args):
        return [self.a.terraform, *args]

    def size(self, n, parallelism, full=True):
        d = self.work / f"{'n' if full else 'sweep-n'}{n}-p{parallelism}"
        tfd, nvd = d / "terraform", d / "nvflare"
        tfd.mkdir(parents=True)
        nvd.mkdir(parents=True)
        shutil.copy(self.a.main_tf, tfd / "main.tf")
        clients = client_names(n)
        write_tfvars(tfd / "terraform.tfvars.json", clients)
        write_project_yml(nvd / "project.yml", clients)
        log = d / "commands.log"
        par = f"-parallelism={parallelism}"
        r = {"n": n, "parallelism": parallelism}
        tfa = ["-input=false", "-no-color"]

        print(f"[bench] N={n} parallelism={parallelism}: terraform", flush=True)
        if full:
            r["tf_plan_empty"] = check(run_measured(self.tf("plan", *tfa, par, "-out=plan.bin"), tfd, log,
                                                    self.env), log)
            os.remove(tfd / "plan.bin")
        r["tf_apply"] = check(run_measured(self.tf("apply", "-auto-approve", *tfa, par), tfd, log, self.env), log)
        kits = sorted(p.name for p in (tfd / "kits").iterdir())
        assert len(kits) == n, f"terraform wrote {len(kits)} kits, want {n}"
        if not full:
            return r

        r["tf_plan_noop"] = check(run_measured(self.tf("plan", *tfa, par, "-detailed-exitcode"), tfd, log,
                                               self.env), log)
        r["tf_plan_norefresh"] = check(run_measured(self.tf("plan", *tfa, par, "-refresh=false"), tfd, log,
                                                    self.env), log)
        write_tfvars(tfd / "terraform.tfvars.json", clients + ["site-new"])
        r["tf_add"] = check(run_measured(self.tf("apply", "-auto-approve", *tfa, par), tfd, log, self.env), log)
        write_tfvars(tfd / "terraform.tfvars.json", clients + ["site-new", "site-new2"])
        r["tf_add_norefresh"] = check(run_measured(self.tf("apply", "-auto-approve", *tfa, par,
                                                           "-refresh=false"), tfd, log, self.env), log)
        r["resources"], r["state_bytes"] = state_info(tfd)

        print(f"[bench] N={n}: nvflare provision", flush=True)
        r["nv_provision"] = check(run_measured([self.nvflare, "provision", "-p", "project.yml", "-w", "ws", *self.nv_force], nvd, log),
                                  log)
        prod = nvd / "ws" / "quickstart" / "prod_00"
        assert len([p for p in prod.iterdir() if p.is_dir()]) == n, "nvflare provision wrote the wrong number of kits"
        write_project_yml(nvd / "project.yml", clients + ["site-new"])
        r["nv_add"] = check(run_measured([self.nvflare, "provision", "-p", "project.yml", "-w", "ws", *self.nv_force], nvd, log), log)
        assert (nvd / "ws" / "quickstart" / "prod_01" / "site-new").is_dir()
        return r

    def approvals(self, n, parallelism):
        """Distributed provisioning: n sites' request zips (made beforehand by
        bench/makerequests, the sites' side, not measured) approved by one
        flare_request_approvals, then one more request. Signing only: the
        sites keep their keys."""
        d = self.work / f"approvals-n{n}"
        reqs, spare = d / "requests", d / "spare"
        d.mkdir(parents=True)
        print(f"[bench] approvals N={n}: making {n + 1} request zips (the sites' side)", flush=True)
        make = ["go", "run", "./bench/makerequests", "-project", "quickstart"]
        subprocess.run(make + ["-n", str(n), "-out", str(reqs)], check=True, cwd=REPO)
        subprocess.run(make + ["-n", "1", "-first", str(n + 1), "-out", str(spare)], check=True, cwd=REPO)
        (d / "main.tf").write_text(APPROVALS_TF)
        log = d / "commands.log"
        tfa = ["-auto-approve", "-input=false", "-no-color", f"-parallelism={parallelism}"]
        r = {"n": n}
        print(f"[bench] approvals N={n}: terraform", flush=True)
        r["tf_apply"] = check(run_measured(self.tf("apply", *tfa), d, log, self.env), log)
        assert len(list((d / "approvals").glob("*.signed.zip"))) == n, "wrong number of signed zips"
        r["tf_plan_noop"] = check(run_measured(self.tf("plan", "-input=false", "-no-color", "-detailed-exitcode"),
                                               d, log, self.env), log)
        for z in spare.iterdir():
            shutil.copy(z, reqs / z.name)
        r["tf_add"] = check(run_measured(self.tf("apply", *tfa), d, log, self.env), log)
        assert len(list((d / "approvals").glob("*.signed.zip"))) == n + 1, "the added request was not approved"
        return r

    def per_resource(self, n, parallelism, trace=False):
        """The per-resource layout (PER_RESOURCE_TF): apply from empty, then one
        more client. With trace, the first apply runs with TF_LOG=trace and its
        log is summarized by trace_stats."""
        d = self.work / f"per-resource-n{n}"
        d.mkdir(parents=True)
        (d / "main.tf").write_text(PER_RESOURCE_TF)
        clients = client_names(n)
        write_tfvars(d / "terraform.tfvars.json", clients)
        log = d / "commands.log"
        env = dict(self.env, TF_LOG="trace", TF_LOG_PATH=str(d / "trace.log")) if trace else self.env
        tfa = ["-auto-approve", "-input=false", "-no-color", f"-parallelism={parallelism}"]
        print(f"[bench] N={n}: per-resource layout{' with TF_LOG=trace' if trace else ''}", flush=True)
        r = {"n": n, "trace": None}
        r["tf_apply"] = check(run_measured(self.tf("apply", *tfa), d, log, env), log)
        if trace:
            r["trace"] = trace_stats(d / "trace.log")
            os.remove(d / "trace.log")
        r["resources"], r["state_bytes"] = state_info(d)
        write_tfvars(d / "terraform.tfvars.json", clients + ["site-new"])
        r["tf_add"] = check(run_measured(self.tf("apply", *tfa), d, log, self.env), log)
        return r


# --------------------------------------------------------------------------
# A TF_LOG=trace log: its lines carry millisecond timestamps, so the graph
# walks, the graph transforms and every state snapshot write can be timed.

TS_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z")


def trace_stats(path):
    def ts(line):
        m = TS_RE.match(line)
        return datetime.datetime.fromisoformat(m.group(1)).timestamp() if m else None

    st = {"writes": 0, "write_s": 0.0, "transform_s": 0.0, "walks": {}}
    write_start = None
    transform_start = {}
    first = last = None
    with open(path, errors="replace") as f:
        for line in f:
            t = ts(line)
            if t is None:
                continue
            first = first if first is not None else t
            last = t
            if "statemgr.Filesystem: writing snapshot at" in line:
                write_start = t
            elif write_start is not None and "declined to persist a state snapshot" in line:
                st["write_s"] += t - write_start
                st["writes"] += 1
                write_start = None
            elif "Executing graph transform " in line:
                transform_start[line.split("Executing graph transform ", 1)[1].split()[0]] = t
            elif "Completed graph transform " in line:
                name = line.split("Completed graph transform ", 1)[1].split()[0]
                if name in transform_start:
                    st["transform_s"] += t - transform_start.pop(name)
            elif "Starting graph walk: " in line:
                st["walks"][line.split("Starting graph walk: ", 1)[1].strip()] = t
    st["span"] = (last or 0) - (first or 0)
    walks = sorted(st["walks"].items(), key=lambda kv: kv[1])
    bounds = [t for _, t in walks] + [last]
    st["walk_s"] = {name: bounds[i + 1] - t for i, (name, t) in enumerate(walks)}
    return st


# --------------------------------------------------------------------------
# Report


def go_bench(path):
    """name -> ns/op from `go test -bench` output, and name + ":cpu" -> CPU ns/op where the
    benchmark reports cpu-ms/op."""
    out = {}
    for line in Path(path).read_text().splitlines():
        m = re.match(r"^(Benchmark\S+?)(-\d+)?\s+\d+\s+([\d.]+) ns/op", line)
        if m:
            out[m.group(1)] = float(m.group(3))
            c = re.search(r"\s([\d.]+) cpu-ms/op", line)
            if c:
                out[m.group(1) + ":cpu"] = float(c.group(1)) * 1e6
    return out


def s(x):
    return f"{x:.1f} s" if x >= 10 else f"{x:.2f} s"


def mb(kb):
    return f"{kb / 1024:.0f} MiB"


def cpu_model():
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    extra = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        fam = re.search(r"CPU family:\s+(\d+)", lscpu)
        mod = re.search(r"Model:\s+(\d+)", lscpu)
        hyp = re.search(r"Hypervisor vendor:\s+(\S+)", lscpu)
        if fam and mod:
            extra = f" (family {fam.group(1)}, model {mod.group(1)}{', ' + hyp.group(1) + ' guest' if hyp else ''})"
    except OSError:
        pass
    return f"{model}{extra}, {os.cpu_count()} CPUs"


def tool_versions(terraform):
    tv = subprocess.run([terraform, "version"], capture_output=True, text=True).stdout.splitlines()[0]
    gv = subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip()
    return f"{tv}; nvflare {version('nvflare')} (Python {platform.python_version()}, cryptography " \
           f"{version('cryptography')}); {gv}"


def discard_note(path):
    """A sentence when the file system of path is mounted with discard."""
    best, opts = "", ""
    try:
        target = str(Path(path).resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            f = line.split()
            if len(f) > 3 and (target + "/").startswith(f[1].rstrip("/") + "/") and len(f[1]) >= len(best):
                best, opts = f[1], f[3]
    except OSError:
        return ""
    if "discard" not in opts.split(","):
        return ""
    return (f" The file system ({best}) is mounted with `discard`: creating files soon after many were deleted "
            "costs several times the kernel CPU, so the driver deletes nothing until the end.")


def report(args, results, sweep, gob, per_resource, out: Path, approvals=None):
    L = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    L.append("# Provisioning: terraform apply (terraform-provider-flare) vs `nvflare provision`\n")
    L.append(f"Generated by `make bench` on {now}. CPU: {cpu_model()}. {tool_versions(args.terraform)}.\n")
    L.append("Each project has N participants: 1 server, 1 admin (project_admin) and N-2 clients. Terraform applies "
             "examples/quickstart/main.tf as it is in the tree, with `var.clients` (the provider from build/bin via "
             "dev_overrides, local CA backend); NVFlare provisions the equivalent project.yml (api_version 3, the "
             "builders of `dummy_project.yml`: Workspace, StaticFile, Cert, Signature). Both write every kit with "
             "RSA-2048 keys, certificates and signature.json for startup/ and local/, into the same file system, "
             "one after the other in the same run. "
             f"Terraform runs with `-parallelism={args.parallelism}`. The machine is a shared "
             "VM: other jobs may have run at the same time (see *other load*); expect some noise."
             f"{discard_note(tempfile.gettempdir())}\n")
    L.append("*Wall*: elapsed time of the command. *Peak RSS*: the largest sum of resident memory over the "
             "command's process tree (terraform + the provider plugin; nvflare is one process), sampled every 50 ms. "
             "*CPU*: user+system seconds of the whole tree. *Ratio*: terraform / nvflare wall time "
             "(above 1 = terraform slower). *Other load*: how many cores, on average, processes outside the "
             "measured command kept busy while it ran (all CPU time of the machine from /proc/stat, minus the "
             "command's own); on this 2-CPU machine anything above 0 takes cores from the 2-core terraform "
             "apply more than from the 1-core nvflare.\n")
    L.append("## From empty, and adding one client\n")
    L.append("| N | terraform apply (from empty) | nvflare provision | ratio | terraform peak RSS | nvflare peak RSS "
             "| terraform CPU | nvflare CPU | other load (terraform / nvflare) | + 1 client: terraform apply "
             "| + 1 client: terraform CPU | + 1 client: nvflare provision again | ratio |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

    def load(r):
        c = r.other_cores()
        return "-" if c is None else f"{c:.2f}"

    for r in results:
        ta, nv, tadd, nadd = r["tf_apply"], r["nv_provision"], r["tf_add"], r["nv_add"]
        L.append(f"| {r['n']} | {s(ta.wall)} | {s(nv.wall)} | {ta.wall / nv.wall:.2f} | {mb(ta.tree_peak_kb)} | "
                 f"{mb(nv.tree_peak_kb)} | {s(ta.cpu)} | {s(nv.cpu)} | {load(ta)} / {load(nv)} | {s(tadd.wall)} | "
                 f"{s(tadd.cpu)} | {s(nadd.wall)} | {tadd.wall / nadd.wall:.2f} |")
    L.append("")
    L.append("`nvflare provision` has no incremental mode: adding a client means provisioning again (certificates "
             "are reused from state/cert.json, but every kit is rendered, signed and written again into a new "
             "prod_NN). Terraform creates one certificate and one kit, after refreshing what is in state.\n")

    L.append("## Terraform phases\n")
    L.append("| N | resource instances | plan from empty | apply from empty | plan, no changes (refresh + plan) "
             "| plan -refresh=false | refresh (difference) | + 1 client | + 1 client, -refresh=false | state file "
             "| largest process RSS (apply) |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        refresh = r["tf_plan_noop"].wall - r["tf_plan_norefresh"].wall
        L.append(f"| {r['n']} | {r['resources']} | {s(r['tf_plan_empty'].wall)} | {s(r['tf_apply'].wall)} | "
                 f"{s(r['tf_plan_noop'].wall)} | {s(r['tf_plan_norefresh'].wall)} | {s(refresh)} | "
                 f"{s(r['tf_add'].wall)} | {s(r['tf_add_norefresh'].wall)} | {r['state_bytes'] / 1e6:.2f} MB | "
                 f"{mb(r['tf_apply'].maxrss_kb)} |")
    L.append("")

    if per_resource:
        L.append("## One resource per client (the layout before flare_clients)\n")
        L.append("The same federations with one `flare_client` and one `flare_startup_kit` per site "
                 "(`for_each`), as examples/quickstart was written before `flare_clients`. "
                 "Same `-parallelism`.\n")
        L.append("| N | resource instances | apply from empty | + 1 client | CPU (apply) | peak RSS (apply) | state file "
                 "| flare_clients apply, same N | nvflare provision, same N |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        by_n = {r["n"]: r for r in results}
        for r in per_resource:
            other = by_n.get(r["n"])
            note = " (TF_LOG=trace)" if r["trace"] else ""
            L.append(f"| {r['n']} | {r['resources']} | {s(r['tf_apply'].wall)}{note} | {s(r['tf_add'].wall)} | "
                     f"{s(r['tf_apply'].cpu)} | {mb(r['tf_apply'].tree_peak_kb)} | {r['state_bytes'] / 1e6:.1f} MB | "
                     f"{s(other['tf_apply'].wall) if other else '-'} | {s(other['nv_provision'].wall) if other else '-'} |")
        L.append("")

    if not per_resource or not sweep:
        skipped = [what for what, ran in (("the one-resource-per-client layout", per_resource),
                                           ("the -parallelism sweep", sweep)) if not ran]
        L.append(f"Not run this time: {' and '.join(skipped)} (`BENCH_PER_RESOURCE_SIZES`, `BENCH_SWEEP`); the "
                 "last run of each is in the git history of this file.\n")

    if sweep:
        L.append(f"## -parallelism, N={sweep[0]['n']}\n")
        L.append("| -parallelism | terraform apply from empty | CPU | peak RSS |")
        L.append("|---:|---:|---:|---:|")
        for r in sweep:
            ta = r["tf_apply"]
            L.append(f"| {r['parallelism']} | {s(ta.wall)} | {s(ta.cpu)} | {mb(ta.tree_peak_kb)} |")
        L.append("")

    if approvals:
        a = approvals
        sign_ms = gob.get("BenchmarkApprove", 0) / 1e6
        L.append(f"## Distributed provisioning: {a['n']} request approvals\n")
        L.append("Sites keep their keys (`nvflare cert request`); the provider only checks each request and signs "
                 "(`flare_request_approvals`, one resource for all requests, server named after its host). The "
                 f"request zips are made beforehand (bench/makerequests, not timed). Same `-parallelism`. Per "
                 f"approval, `BenchmarkApprove` (parse, check, issue, sign signed.json, zip): {sign_ms:.2f} ms.\n")
        L.append("| N | apply from empty | CPU | peak RSS | plan, nothing changed | + 1 request: apply | + 1: CPU |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|")
        L.append(f"| {a['n']} | {s(a['tf_apply'].wall)} | {s(a['tf_apply'].cpu)} | {mb(a['tf_apply'].tree_peak_kb)} | "
                 f"{s(a['tf_plan_noop'].wall)} | {s(a['tf_add'].wall)} | {s(a['tf_add'].cpu)} |")
        L.append("")

    L.append("## Go benchmarks\n")
    L.append(f"`go test -p 1 -run '^$' -bench . -benchmem` over `{args.go_pkgs}` (output below, unedited; packages "
             "without benchmarks print only ok). RSA-2048 key generation as nvflare does it (OpenSSL through "
             f"`cryptography`), timed by the driver: {gob.get('openssl_keygen_ms', 0):.0f} ms per key.\n")
    L.append("```")
    L.append(Path(args.go_bench).read_text().rstrip())
    L.append("```\n")

    L.append("## Where the time goes\n")
    L.extend(where_time_goes(results, gob, per_resource))
    write_between_markers(out, "\n".join(L) + "\n")


BEGIN, END = "<!-- provision-bench: begin (generated by make bench) -->", "<!-- provision-bench: end -->"


def write_between_markers(out: Path, text: str):
    """Replaces the generated part of out and keeps what others wrote around
    it (other benchmarks append their own sections to bench/results.md)."""
    before, after = "", ""
    if out.exists():
        old = out.read_text()
        if BEGIN in old and END in old:
            before, rest = old.split(BEGIN, 1)
            after = rest.split(END, 1)[1]
    out.write_text(f"{before}{BEGIN}\n{text}{END}{after if after else chr(10)}")


def where_time_goes(results, gob, per_resource):
    L = []
    big = results[-1]
    n = big["n"]
    cores = os.cpu_count() or 1
    def cpu_of(name):  # CPU seconds per op where reported, else wall
        return gob.get(name + ":cpu", gob.get(name, 0)) / 1e9

    keygen = cpu_of("BenchmarkGenerateKey")
    keygen_par = gob.get("BenchmarkGenerateKeyParallel", 0) / 1e9
    issue = gob.get("BenchmarkIssue", 0) / 1e9
    build_all = gob.get("BenchmarkBuild/client", 0) / 1e9
    build = gob.get("BenchmarkBuild/client-cached", 0) / 1e9 or build_all
    write = gob.get("BenchmarkWrite/new", 0) / 1e9
    digest = gob.get("BenchmarkDigestDir", 0) / 1e9
    sign = gob.get("BenchmarkSignContent", 0) / 1e9
    per = keygen + issue + build + write
    ta, nv = big["tf_apply"], big["nv_provision"]

    def split(r):
        prov = sum(v for k, v in r.cpu_by_name.items() if k.startswith("terraform-provi"))
        core = sum(v for k, v in r.cpu_by_name.items() if k == "terraform")
        return prov, core

    def load(r):
        c = r.other_cores()
        return "an unknown number of" if c is None else f"{c:.2f}"

    prov_cpu, core_cpu = split(ta)
    L.append(f"At N={n}, `terraform apply` from empty takes {ta.wall:.1f} s against {nv.wall:.1f} s for "
             f"`nvflare provision` (ratio {ta.wall / nv.wall:.2f}). Of the apply's {ta.cpu:.1f} s of CPU the "
             f"provider process used {prov_cpu:.1f} s and Terraform core {core_cpu:.1f} s (per-process CPU sampled "
             f"every 50 ms); nvflare used {nv.cpu:.1f} s on one core. Other processes kept {load(ta)} cores busy "
             f"during the apply and {load(nv)} during nvflare's run.\n")
    L.append(f"- **Cryptography, the floor for both tools.** One client costs the provider about "
             f"{per * 1e3:.0f} ms of CPU: its RSA-2048 key {keygen * 1e3:.0f} ms (crypto/rsa.GenerateKey and a "
             f"pairwise sign/verify check; {keygen_par * 1e3:.0f} ms per key of wall time with all {cores} cores "
             f"generating; OpenSSL, which nvflare uses, {gob.get('openssl_keygen_ms', 0):.0f} ms here), its certificate {issue * 1e3:.1f} ms, its kit in "
             f"memory {build * 1e3:.1f} ms (11 signature.json entries, RSA-PSS with the root key at "
             f"{sign * 1e3:.1f} ms each; 7 are files every client kit has, signed once per apply, so 4 are signed "
             f"per kit; {build_all * 1e3:.1f} ms when all 11 are), writing it {write * 1e3:.1f} ms. For {n} "
             f"participants: {per * n:.0f} s of CPU, at best {per * n / cores:.0f} s of wall time on {cores} cores. "
             f"Key generation is {keygen / per * 100:.0f}% of it. nvflare does the same work on one core "
             f"({nv.cpu / n * 1e3:.0f} ms per participant in total).")
    L.append(f"- **Terraform core** with flare_clients holds {big['resources']} resource instances whatever N is, "
             f"so its share is planning one large object and writing a {big['state_bytes'] / 1e6:.2f} MB state: "
             f"a plan from empty takes {big['tf_plan_empty'].wall:.1f} s, a no-change plan "
             f"{big['tf_plan_noop'].wall:.1f} s ({big['tf_plan_norefresh'].wall:.1f} s without refresh).")
    add_prov, add_core = split(big["tf_add"])
    L.append(f"- **Adding one client** costs {big['tf_add'].wall:.1f} s and {big['tf_add'].cpu:.1f} s of CPU "
             f"({big['tf_add_norefresh'].wall:.1f} s with `-refresh=false`; refresh hashes every kit on disk for "
             f"drift at {digest * 1e3:.2f} ms per kit and checks every key file against its certificate, on all "
             f"cores). Only the new kit is written, and its key and kit take about {per * 1e3:.0f} ms; the provider "
             f"used {add_prov:.1f} s of CPU and Terraform core {add_core:.1f} s, most of it per-entry work over the "
             f"{n - 2}-entry `clients`, `kit_sha256` and `kit_dirs` maps: the plugin framework's walks over every "
             f"value (validation, PlanResourceChange at plan time and again at apply, ApplyResourceChange), "
             f"decoding them in ModifyPlan, Read and Update, and Terraform diffing the maps. Without any TF_LOG* "
             f"variable the provider turns the plugin SDK's own trace logging off (Terraform discards it then; "
             f"measured at N=1000 while it was on, it was 40% of the provider's CPU for this step). nvflare needs "
             f"{big['nv_add'].wall:.0f} s to provision everything again.")
    if per_resource:
        pr = per_resource[-1]
        t = pr["trace"]
        L.append(f"- **One resource per client does not scale.** With one `flare_client` and one "
                 f"`flare_startup_kit` per site, N={pr['n']} is {pr['resources']} resource instances: apply from "
                 f"empty {pr['tf_apply'].wall:.0f} s, {pr['tf_apply'].cpu:.0f} s of CPU, peak RSS "
                 f"{mb(pr['tf_apply'].tree_peak_kb)}, state {pr['state_bytes'] / 1e6:.1f} MB, adding a client "
                 f"{pr['tf_add'].wall:.0f} s. The cryptography is the same; the rest is Terraform core, and it grows "
                 f"faster than N:")
        if t:
            walks = t["walk_s"]
            L.append(f"  - the TF_LOG=trace run spent {walks.get('walkPlan', 0):.0f} s in the plan walk and "
                     f"{walks.get('walkApply', 0):.0f} s in the apply walk (trace logging itself slows the walks);")
            L.append(f"  - with the local backend Terraform writes the whole state file after every resource instance "
                     f"it creates: {t['writes']} writes, {t['write_s']:.0f} s in total, each larger than the last "
                     f"(the state ends at {pr['state_bytes'] / 1e6:.1f} MB; each client's certificate is stored three "
                     f"times, as cert_pem, in its descriptor and in its kit's copy of the descriptor, and every kit "
                     f"also holds the server's descriptor);")
            L.append(f"  - building the graphs, including the per-instance subgraphs of the two `for_each`, took "
                     f"{t['transform_s']:.0f} s;")
        L.append("  - every `flare_startup_kit.site` instance evaluates `each.value` of "
                 "`for_each = flare_client.site`, which builds the object of all client instances: O(N) per kit, "
                 "O(N^2) in total, in the plan walk and again in the apply walk.")
    L.append("- **-parallelism**: the work is CPU-bound on a 2-core machine; flare_clients generates keys on all "
             "cores by itself, whatever -parallelism is.")
    L.append(f"- **Memory**: nvflare peaks at {mb(max(r['nv_provision'].tree_peak_kb for r in results))}; "
             f"Terraform's process tree at {mb(ta.tree_peak_kb)} at N={n}.")
    return L


def openssl_keygen_ms(n=20):
    """RSA-2048 key generation as nvflare does it (cryptography / OpenSSL), ms per key."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    t0 = time.perf_counter()
    for _ in range(n):
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (time.perf_counter() - t0) / n * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--terraform", required=True)
    ap.add_argument("--tfrc", required=True)
    ap.add_argument("--main-tf", required=True)
    ap.add_argument("--go-bench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--go-pkgs", default="./internal/...", help="for the report: the packages go test benchmarked")
    ap.add_argument("--parallelism", type=int, default=4)
    ap.add_argument("--sweep-size", type=int, default=100)
    ap.add_argument("--sweep", default="2,4,10,20", help="parallelism values to compare at --sweep-size; '' to skip")
    ap.add_argument("--per-resource-sizes", default="100,1000",
                    help="sizes for the per-resource layout ('' to skip); the largest runs with TF_LOG=trace")
    ap.add_argument("--approvals", type=int, default=1000,
                    help="request zips approved by flare_request_approvals (0 skips)")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="flare-bench."))
    print(f"[bench] work dir {work}", flush=True)
    try:
        # Nothing is deleted until the end: on a file system mounted with
        # `discard`, creating files soon after a large deletion costs several
        # times the kernel CPU, which would land on whichever command ran next.
        b = Bench(args, work)
        sweep = [b.size(args.sweep_size, p, full=False) for p in map(int, filter(None, args.sweep.split(",")))]
        sizes = list(map(int, args.sizes.split(",")))
        results = [b.size(n, args.parallelism) for n in sizes]
        pr_sizes = sorted(map(int, filter(None, args.per_resource_sizes.split(","))))
        per_resource = [b.per_resource(n, args.parallelism, trace=(n == pr_sizes[-1])) for n in pr_sizes]
        approvals = b.approvals(args.approvals, args.parallelism) if args.approvals else None
        gob = go_bench(args.go_bench)
        gob["openssl_keygen_ms"] = openssl_keygen_ms()
        report(args, results, sweep, gob, per_resource, Path(args.out), approvals)
        print(f"[bench] wrote {args.out}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
