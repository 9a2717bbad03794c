//! The summary as docs/benchmarks.md.
use serde_json::Value;

use super::{
    across::ACROSS_HEADER, optional, ratio, targets::Target, times, Summary, DIRECT, PEERS,
};

/// Where a target not met stands, from the profiles behind this report.
const GAPS: &str = "\n## Where the time goes, and what would close the gaps\n\n\
- Per request, the tables above say where. The common HTTP/1.1 request (no upgrade nor \
  expectation, a body absent or of a `Content-Length`, a scope that plans this \
  site alone, a service without resource rules) is served by cheops's own fast path \
  (`proxy/fast/`): its head is parsed once with httparse into a header map, which the same \
  decisions as before read and change (scope carriers, policy, hop-by-hop and peer-marker \
  headers, Host), written to the instance over a connection taken from its thread's pool, \
  and the answer's head parsed once and written as hyper wrote it; bodies are copied by their \
  framing, and large ones moved from socket to socket in the kernel (below). What is left is `http`'s header map (every name hashed as it goes in, looked up and \
  removed: about a fifth), the allocator and memcpy (`libc`), httparse, tokio polling the two \
  sockets, and cheops's own code. Any other request, and the rest of its connection, is served \
  by hyper as before (it parses and writes each head twice).\n\
- Done in this round (instructions per request, callgrind, about, from 52,965 before): one \
  single-threaded runtime per core (`proxy.workers`) instead of one multi-threaded runtime (no \
  work-stealing bookkeeping, no wake-up across threads: -1,000); hop-by-hop and peer-marker \
  headers removed only when present, found by one look at the names rather than a hash and \
  probe per name (-2,900); the request's headers moved into its last attempt instead of copied \
  (-800); the token header's name made once instead of per request (-1,100); the instance \
  exchange boxed so that timeouts move a pointer, not its state (-700). Then, from 46,823 (and \
  7.23 system calls per request): the metrics' histogram handles kept per connection instead of \
  labels made, hashed and looked up per request; the in-flight slot one atomic operation per \
  request instead of a locked hash map; one timer per connection for the header wait and one \
  for the answer, set again per request (a later deadline stays in the timer wheel) instead of \
  two registered and removed per request (-2,200, and -1.2 system calls); a connection's parts \
  shared behind one pointer rather than each cloned per request (-300); whether a request is a \
  gRPC call read once (-200): 44,180 instructions and 6.00 system calls per request (44,256 \
  with the same hour's changes elsewhere merged in). Then the fast path: from 44,262 to about \
  28,000 instructions per request (27,967 and 28,137 in two counts, -37%). Its system calls per \
  request vary with timing, from 5.7 to 6.6 over six counts on this loaded machine (hyper's \
  path: 6.00 each time): the read that follows an answer finds the next request when it has \
  come already, else it is one call more. Clearing the readiness after a short read, as tokio's \
  own reads do, gave 6.00 each time but 1,500 more instructions (the task then always waits for \
  the poller): not kept.\n\
- What would close the rest: the fast path acting on the head's fields as they lie in its \
  buffer instead of a header map (the decisions read a few names: the scope carriers, the \
  hop-by-hop headers, Host), writing the unchanged fields' bytes on as they came, as nginx does \
  (most of `http`'s share and of the allocations); it needs the carriers and the policy to read \
  fields rather than a map.\n\
- Timed, per request: with the fast path, cheops's CPU per request at 1,000 requests/s is \
  nginx's (1.00x) and below HAProxy's (0.74x), where the last report had it at 1.59x; the \
  0.8x target is not met. Requests per CPU-second at saturation (0.95x nginx) are the noisiest \
  figure here: in this run cheops behind the NAT rule did more per CPU-second than behind \
  eBPF, which only the machine explains. Added latency, the median of the interleaved \
  rounds, is 1.35x nginx's and 0.87x HAProxy's at p50, while cheops's own rounds spread from \
  17 to 90 µs. What would close them is what closes the count of instructions (above), the \
  figure that load does not move.\n\
- The 300 MiB download: its direct baseline of the report of 2 December (139 MiB/s, against \
  1661 through cheops) was the page cache being filled while direct, the first path, was \
  timed; the file is now read through before any path is. Past the answer's head, the fast \
  path now moves a body of a known length (more than 64 KiB still to come) and one that ends \
  with the connection from the instance's socket to the client's with `splice(2)` through a \
  1 MiB pipe, never through user space. Quick runs alternating the two builds on a loaded \
  machine (`cheops-bench --only bodies --quick`, 6 each, medians): cheops's share of its core \
  from 0.28 to 0.18, 0.48x to 0.50x direct and 2.40x to 2.41x nginx; another 6 each: 0.26 to \
  0.17, 0.50x to 0.64x direct, 2.08x to 2.80x nginx. The proxy's core is now mostly idle: the \
  limit is the shared core, where the client and the origin do what they do direct, plus a \
  wake-up across cores (on these virtual machines, a halted virtual CPU woken) per piece that \
  goes through. Pipes of 64 KiB and 4 MiB, and `SO_RCVLOWAT` (256 KiB, 1 MiB) on the socket \
  read from to wake cheops less often, gave nothing this noise could tell apart.\n\
- The download's memory: the 42 MiB peak of the last report was cheops's start, when it \
  loads its eBPF programs (about 44 MiB for a moment, 10 MiB after), not the download: the peak \
  is now reset just before the download.\n\
- Replicated create over 16 sites, measured (fsyncs counted per agent with perf on the \
  fsync tracepoints): the leader commits 4 + 2N times per create, one after the other (its \
  append, its own apply's intent and result, one settle per replica's answer, the mapping, one \
  settle per answer to the mapping): 36 at 16 sites; each other site commits 3 times. A group \
  commit of the answers that arrive together, with the mapping carried by the next operation, \
  brought the leader to 13 commits at 16 sites and the ratio from 4.1-5.2x to 3.8-4.3x in runs \
  on a loaded machine. Taken out while a soak loss was laid at its door (the instance's own: \
  docs/reliability.md, seed 31), it is back: 11.8 to 12.9 commits per create at the leader at \
  16 sites, 36.0 without it, in runs back to back. The rest is the machine: a 16-site gathered \
  list, which writes nothing, costs 2.45x here, with 16 agents, 16 json-servers and 30 relay \
  processes on 2 cores.\n\
- The 300 MiB upload: the fast path takes a request body of any `Content-Length`. Past \
  64 KiB, what came with the head is sent with it, and the rest goes from the client's socket \
  to the instance's with `splice(2)` while the answer's head is awaited (within \
  `proxy.response_timeout`, as on hyper's path), and on while the answer is relayed when the \
  instance answers first (a client that ends the body early closes the exchange, unanswered, \
  as before; the connection closes after an answer that came before the body's end). In the \
  same quick runs (`--only upload --quick`, 6 each): cheops's share of its core from 0.38 to \
  0.19, 0.35x to 0.39x direct, 1.81x to 1.89x nginx; another 6 each: 0.36 to 0.17, 0.35x to \
  0.41x direct, 1.83x to 2.43x nginx; its memory grows by 0.3 MiB during the upload (1.0 \
  before). As for the download, the shared core where the client and the sink run is the \
  limit, not the proxy: direct, the client's bytes reach the sink on the same core; through \
  any proxy, each piece wakes the proxy's core and then the sink. A sockmap redirect (an \
  `sk_skb` verdict program) would forward in the softirq of the sending side, on that same \
  shared core, adding its work there: not built.\n\
- Idle connections: an idle fast-path connection holds its socket's registration (256 bytes), \
  its header-wait timer (about 200) and a 512-byte task, nothing else (heaptrack, 2,000 idle \
  connections: 960 bytes of heap each, from 12,650). Its read buffer used to stay taken through \
  the wait (8 KiB: the wait began with a read that found nothing); the connection to the \
  instance is now taken from its thread's pool per request and given back once the answer was \
  read whole (`proxy/fast/pool.rs`, as nginx's `keepalive`), so idle clients hold no upstream \
  socket (1.03 open files per connection); the request's state is boxed while it is served and \
  the task no longer holds futures twice (an `async fn`'s arguments), the histograms and the \
  answer timers are kept per thread. Quick runs (2,000 connections, same run each): 10.1 KiB \
  before, 1.48-1.52 KiB after, nginx 0.74-0.80, HAProxy 1.32-1.35; counted per request \
  28,054 and 28,032 instructions before, 27,990 and 27,948 after. What is left above nginx is \
  tokio's per-socket and per-task cells and glibc's overhead on them (about 550 bytes per \
  connection beyond the heap): a smaller task (the sniffing state, 288 bytes, is its largest) \
  and a timer not boxed would come nearer.\n\
- gRPC unary: in this run cheops added 2.06x `grpc_pass`'s latency at p50 and spent 1.86x \
  its CPU per call; the last report, on the build before and a quieter machine, had 0.72x \
  and 1.49x. Back to back here (`cheops-bench --only grpc`, four runs alternating the two \
  builds), this build used 151 and 162 µs of CPU per call and the build before 172 and 179 \
  (nginx 81 to 90): the machine moved between the reports, and this build is cheaper. \
  Counted per call (`cheops-bench --only costs --counted \
  grpc-cheops-nat,grpc-nginx-nat,grpc-origin`), it spent 226,800 instructions, against 36,100 \
  for `grpc_pass` and 43,100 for the gRPC origin alone (one HTTP/2 server): over half was \
  memcpy, tokio copying each call's 11 KiB future whole as hyper spawned a task per stream and \
  ran it. Done: each workload HTTP/2 connection owning an HTTP/2 connection to the instance, \
  shared by its streams, instead of a pool checkout per call (-7,500); the large and rare parts \
  of the call's future boxed (the replicator's work, a peer's exchange, opening a connection) \
  and `within` holding its work once (under 4 KiB), the gRPC call histograms kept per \
  connection instead of labels made and looked up per call (-112,000); hyper's HTTP/2 client \
  running what it spawns per call (sending it, piping its body) inside the instance \
  connection's task instead of tokio tasks of their own, the stream's handler boxed (-4,000): \
  103,300 instructions and 7.62 system calls per call (from 8.25; nginx 11.9). What is left is \
  mostly the two HTTP/2 codecs (h2: 43,800 per call, as much as the origin's whole cost), \
  `http`'s header maps (10,800), memcpy (10,500, mostly h2 moving frames) and tokio (9,900); \
  cheops's own code is 4,700. What would close more: the h2 crate's client used directly, each \
  call sent from its stream's own task (no client dispatch, channel and callback per call).\n\
- Timings on this machine move with the other work on it: the counts above do not, and are \
  the ones to compare builds with.\n";

impl Summary {
    pub fn markdown(&self, raw: &Value, command: &str, plot: &str) -> String {
        let plan = &raw["plan"];
        let machine = &raw["machine"];
        let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
        let mut md = String::from("# Benchmarks: what interception costs\n\n");
        md += &format!(
            "Generated by `{command}` (as root, from the workspace); do not edit by hand, run it \
             again.\n\n"
        );
        if self.quick {
            md += "> **Quick run**: short durations, to check the harness. Not for comparing: run \
              `cargo xtask bench` on a quiet machine for the reference numbers.\n\n";
        }
        if let Some(busy) = &self.busy {
            md += &format!("> **Busy machine**: {busy}\n\n");
        }
        md += &format!(
            "## How\n\n- Machine: {} ({} CPUs), Linux {}; {}; {}. Load average (1 min) {} before, \
             {} after: other work on the machine shows as noise.\n- One network namespace. The origin \
             is nginx serving a 1 KiB file at {}. The client (`cheops-load`, tests crate: hyper, \
             one keep-alive HTTP/1.1 connection) dials the service address {}, and each scenario \
             decides where that goes: straight to the origin (direct), to cheops through the eBPF \
             connect hook (client in the workload cgroup), or to cheops, HAProxy or nginx through \
             an nftables REDIRECT rule (how sidecar meshes intercept).\n- **Latency is measured with \
             every process on one core** (CPU {}): {} requests/s, open loop, for {} s after {} s \
             of warm-up; each latency counts from when the request was due, so a late answer also \
             delays those queued behind it. On these virtual machines a wake-up across cores costs \
             more than a proxy does, which is why.\n- **Throughput is measured with the proxy on \
             its own core** (CPU {}), the client ({} connections, closed loop, {} s) and the origin \
             sharing the other. When the proxy used less than all of its core, the client side was \
             the limit, and *requests per proxy CPU-second* is the per-core capacity to compare.\n\
             - CPU per request and memory: the proxy's utime+stime from /proc/PID/stat (10 ms ticks) \
             over the latency run, and its VmRSS at the end of it, at 1,000 requests/s.\n- Same footing \
             for all: no request logs (cheops with RUST_LOG=warn, nginx without access log, HAProxy \
             without log), one worker each, kept-alive connections to the origin. HAProxy and nginx \
             forward to a fixed backend; cheops also looks up which service each connection dialled.\n\
             \n",
            text(&machine["cpu_model"]),
            text(&machine["cpus"]),
            text(&machine["kernel"]),
            text(&machine["nginx"]),
            text(&machine["haproxy"]),
            text(&machine["load_average_before"]),
            text(&raw["load_average_after"]),
            text(&plan["origin"]),
            text(&plan["service"]),
            text(&plan["shared_cpu"]),
            text(&plan["rate"]),
            text(&plan["latency_seconds"]),
            text(&plan["warmup_seconds"]),
            text(&plan["proxy_cpu"]),
            text(&plan["saturation_connections"]),
            text(&plan["saturation_seconds"]),
        );
        let direct = self.find(DIRECT).expect("checked when built").latency;
        md += "## Latency at 1,000 requests/s, everything on one core (µs)\n\n| scenario | p50 | \
          p90 | p99 | max | added p50 | added p99 | p50 / direct | p99 / direct |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n\
          ";
        for row in &self.rows {
            let added = self.added(row);
            md += &format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |\n",
                row.title,
                row.latency[0],
                row.latency[1],
                row.latency[2],
                row.latency[3],
                added[0],
                added[2],
                times(ratio(row.latency[0], direct[0])),
                times(ratio(row.latency[2], direct[2])),
            );
        }
        md += &format!("\n![latency distributions]({plot})\n\n");
        md += &self.rounds_markdown(plan);
        md += "## Throughput, the proxy on its own core; CPU and memory at 1,000 requests/s\n\n| \
          scenario | requests/s | proxy's share of its core | requests per proxy CPU-second | proxy \
          CPU µs per request | proxy memory (MiB) |\n|---|---:|---:|---:|---:|---:|\n";
        for row in &self.rows {
            let proxy = row.proxy.as_ref();
            md += &format!(
                "| {} | {:.0} | {} | {} | {} | {} |\n",
                row.title,
                row.throughput,
                proxy.map_or("-".to_owned(), |p| format!(
                    "{:.0}%",
                    p.saturation_cpu_share * 100.0
                )),
                optional(proxy.and_then(|p| p.requests_per_cpu_second), 0),
                optional(proxy.map(|p| p.cpu_us_per_request), 1),
                optional(proxy.map(|p| p.rss_mib), 1),
            );
        }
        md += "\n## cheops with eBPF, as a ratio of the others (same run)\n\nBelow 1 is better for \
          latency, CPU and memory; above 1 is better for requests per CPU-second.\n\n| against | \
          added p50 | added p99 | requests per CPU-second | CPU per request | memory |\n|---|---:|---:|---:|---:|---:|\n\
          ";
        for other in ["cheops-nat"].iter().chain(&PEERS) {
            if let (Some(r), Some(row)) = (self.ratios(other), self.find(other)) {
                md += &format!(
                    "| {} | {} | {} | {} | {} | {} |\n",
                    row.title,
                    times(r[0]),
                    times(r[1]),
                    times(r[2]),
                    times(r[3]),
                    times(r[4])
                );
            }
        }
        if !self.across.is_empty() {
            let across = &raw["across_sites"];
            md += &format!(
                "\n## Across sites: replicated create and gathered list\n\nA mesh of N sites (network \
                 namespaces joined by a hub; cheops, json-server as the `catalog` service whose `/pods` \
                 are replicated resources). S1 reaches every other site, and every other site reaches \
                 S1, through a relay in the hub that adds {} ms to each round trip (a thread of the \
                 bench itself, since the kernel has no netem); the round trip below is the one S1's \
                 heartbeats measured. From S1's workload, curl times {} creates \
                 scoped over all N sites (`X-Scope: {{catalog: S1 & ... & SN}}`, S1 leading; every \
                 one answers 201 after all replicas) after {} warm-up creates, then {} lists of `/pods` \
                 gathered from all N. If the fan-out is parallel a create costs about one round trip \
                 whatever N.\n\n| {} |\n|{}\n",
                text(&across["emulated_round_trip_ms"]),
                text(&across["creates"]),
                text(&across["warmup_creates"]),
                text(&across["lists"]),
                ACROSS_HEADER.join(" | "),
                "---:|".repeat(ACROSS_HEADER.len()),
            );
            for a in &self.across {
                md += &format!("| {} |\n", a.cells().join(" | "));
            }
        }
        md += &self.bodies_markdown();
        md += &self.idle_markdown();
        md += &self.grpc_markdown(raw);
        md += &self.costs_markdown(raw);
        md += "\n## Targets (issue 14, the data plane)\n\n| target | measured | status |\n|---|---:|---|\n\
          ";
        for Target {
            target,
            measured,
            status,
        } in self.targets()
        {
            md += &format!("| {target} | {measured} | {status} |\n");
        }
        md += &format!(
            "\n## What the connect hook adds to connect() (µs, {} connect+close each)\n\n| connect() \
             | p50 | p99 |\n|---|---:|---:|\n",
            text(&plan["connects"])
        );
        for (what, p50, p99) in &self.connect {
            md += &format!("| {what} | {p50:.1} | {p99:.1} |\n");
        }
        md += &format!("\n{}\n", self.hook_cost());
        md += GAPS;
        md += "\n## Not measured\n\n";
        for gap in raw["not_measured"].as_array().into_iter().flatten() {
            md += &format!("- {}: {}.\n", text(&gap["name"]), text(&gap["why"]));
        }
        md
    }

    /// The instructions and system calls per request, with how they were counted and the
    /// profile of cheops over the same requests.
    /// What each path added over direct in each interleaved round, and the medians that the
    /// ratios and targets use; nothing for results without rounds.
    fn rounds_markdown(&self, plan: &Value) -> String {
        let direct = &self.find(DIRECT).expect("checked when built").rounds;
        if direct.is_empty() {
            return String::new();
        }
        let mut md = format!(
            "## Added latency, compared within interleaved rounds (µs)\n\nAfter the long runs, every \
             path ran again in {} rounds of {} s each, in an order that rotates, so that a burst \
             of other work falls on one round rather than on one path. What a path adds is taken \
             against direct in the same round; the median over the rounds is what the ratios and \
             targets below use.\n\n| scenario | added p50, each round | median | added p99, each \
             round | median |\n|---|---|---:|---|---:|\n",
            direct.len(),
            plan["round_seconds"],
        );
        for row in self.rows.iter().filter(|r| r.name != DIRECT) {
            let each = |i: usize| {
                let added: Vec<String> = (row.rounds.iter().zip(direct))
                    .map(|(r, d)| format!("{:.0}", r[i] - d[i]))
                    .collect();
                added.join(", ")
            };
            let median = self.added_in_rounds(row);
            md += &format!(
                "| {} | {} | {:.0} | {} | {:.0} |\n",
                row.title,
                each(0),
                median[0],
                each(1),
                median[1]
            );
        }
        md + "\n"
    }

    fn costs_markdown(&self, raw: &Value) -> String {
        if self.costs.is_empty() {
            return String::new();
        }
        let [short, long] = self.costs[0].requests;
        let mut md = format!(
            "\n## Counted per request: what the machine's load cannot move\n\nEach proxy serves, \
             on one kept-alive connection, {short} requests and then {long}, after a warm-up; the \
             counts over the two runs are subtracted and divided by the {} requests between them, \
             so start-up, the connection and idle timers cancel. Instructions: the proxy runs under \
             valgrind's callgrind (`callgrind_control --dump` around each run; every thread counted). \
             System calls: the proxy runs as usual and `perf stat -e raw_syscalls:sys_enter -p PID` \
             counts its threads over each run. cheops is counted behind the nftables REDIRECT rule, \
             as the others: its per-request path is the same under eBPF, whose lookup is per connection.\n\
             \n| proxy | instructions per request | system calls per request | instructions / nginx \
             | instructions / HAProxy |\n|---|---:|---:|---:|---:|\n",
            long.saturating_sub(short)
        );
        let of = |name: &str| {
            self.costs
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.instructions)
        };
        for cost in &self.costs {
            let against = |peer: &str| times(of(peer).and_then(|p| ratio(cost.instructions, p)));
            md += &format!(
                "| {} | {:.0} | {:.2} | {} | {} |\n",
                self.title(&cost.name),
                cost.instructions,
                cost.syscalls,
                against(PEERS[0]),
                against(PEERS[1]),
            );
        }
        let profile = &raw["costs"]["cheops-nat"];
        md += &profile_table(
            &profile["profile_by_crate"],
            "Where cheops's instructions go, by crate (callgrind over the longer run: each function's \
             instructions of its own, summed by the crate it belongs to; `libc` is the allocator \
             and memcpy, `std` Rust's standard library), per request",
            "crate",
        );
        md += &profile_table(
            &profile["profile"],
            "The functions with the most instructions of their own, per request",
            "function",
        );
        md
    }
}

/// A profile's entries (`[instructions per request, name]`) as a table under `title`.
fn profile_table(entries: &Value, title: &str, what: &str) -> String {
    let Some(entries) = entries.as_array().filter(|e| !e.is_empty()) else {
        return String::new();
    };
    let mut md = format!("\n{title}:\n\n| instructions per request | {what} |\n|---:|---|\n");
    for entry in entries {
        md += &format!(
            "| {:.0} | `{}` |\n",
            entry[0].as_f64().unwrap_or(0.0),
            entry[1].as_str().unwrap_or("?")
        );
    }
    md
}
