//! The summary as docs/benchmarks.md.
use serde_json::Value;

use super::{
    across::ACROSS_HEADER, optional, ratio, targets::Target, times, Summary, DIRECT, PEERS,
};

/// Where a target not met stands, from the profiles behind this report.
const GAPS: &str = "\n## Where the time goes, and what would close the gaps\n\n\
- Per request, counted: the common HTTP/1.1 request (no upgrade nor expectation, a body \
  absent or of a `Content-Length`, a scope that plans this site alone, a service without \
  resource rules) is served by cheops's own fast path (`proxy/fast/`). Its head is parsed once \
  with httparse and used where it lies in the read buffer (`fast/fields.rs`: the fields in the \
  order a header map would give them, after the same removals); a header map is built only for \
  a request that carries a scope (`X-Scope`, `baggage`, a token), so that carriers, tokens and \
  policy keep one decision path. The request goes to the instance over a connection taken from \
  its thread's pool; the answer's head is parsed once and written as hyper writes it, and its \
  body relayed by its framing (large ones in the kernel, below). Any other request, and the \
  rest of its connection, is served by hyper as before.\n\
- Done in this round, instructions per request (quick counts, `cheops-bench --only costs \
  --counted cheops-nat --quick`): the fields used in place instead of a header map, 28,097 to \
  23,177 (`http`'s share 6,550 to 515, the allocator's about 2,850 to 1,350); a field line \
  already as hyper writes it copied whole and names put in lower case eight letters at a time, \
  22,609; the connection to the instance from a pool (below), about even. This run: 22,795, \
  1.04x nginx and 0.66x HAProxy, from 28,052 (1.28x nginx) in the last report and 44,262 \
  before the fast path.\n\
- What is left, by function (table above): httparse (about 2,000), writing the fields on \
  (`write_field`, 1,165), memcpy (1,011), finding names (`find`, `same_letters`, `Iter::next`: \
  about 1,900), the allocator (about 1,450: six allocations a request, the two heads, the \
  target's copy, the answer's read buffer), tokio polling two sockets, the timers. What would \
  close it: one buffer per connection for both heads (no allocation per request), runs of \
  untouched fields copied in one memcpy, names looked up by a class found once rather than \
  compared.\n\
- System calls per request vary with timing, from 5.7 to 6.7: the read that follows an \
  answer finds the next request when it has come already, else it is one call more (hyper's \
  path: 6.00 each time). Clearing the readiness after a short read, as tokio's own reads do, \
  gave 6.00 each time but 1,500 more instructions: not kept.\n\
- Timed, this run: the machine was slower and noisier than its load average says (direct's \
  own p90 is 1.4 ms; the serde_json baseline of the scope-lang bench took 528 ns, against 328 \
  in the last report). CPU per request 1.09x nginx's and 0.85x HAProxy's, added latency at p50 \
  1.01x and 0.76x, at p99 0.78x and 0.74x (met). A full run 10 minutes earlier, on the same \
  build (load average 2.1 when it began), gave 1.06x and 0.83x for CPU and 0.86x and 0.77x at \
  p50. The count of instructions, which load does not move, is what these follow; a good part \
  of the rest is the kernel's (loopback TCP, epoll: about 30% of cheops's CPU in a perf \
  profile), which every proxy pays too.\n\
- The 300 MiB download: the direct baseline of the last report (139 MiB/s, against 1661 \
  through cheops) was the page cache being filled while direct, the first path, was timed; the \
  file is now read through before any path is. Past the answer's head, the fast path moves a \
  body of a known length (more than 64 KiB still to come), or one that ends with the \
  connection, from the instance's socket to the client's with `splice(2)` through a 1 MiB \
  pipe, never through user space: cheops's share of its core went from 0.28 to 0.18 in quick \
  runs alternating the builds, and is 0.26 in this run, where nginx used 0.97 of its. This \
  run: 0.50x direct and 1.34x nginx; the run 10 minutes earlier: 0.81x direct and 2.45x nginx, \
  both targets met. The proxy is no longer the limit: the shared core is, where the client and \
  the origin do what they do direct, plus a wake-up across cores per piece that goes through. \
  Pipes of 64 KiB and 4 MiB and `SO_RCVLOWAT` gave nothing measurable. Answers the instance \
  sends chunked are still copied through user space.\n\
- The 300 MiB upload: the fast path takes a request body of any `Content-Length`. Past 64 \
  KiB, what came with the head is sent with it and the rest goes from the client's socket to \
  the instance's with `splice(2)` while the answer's head is awaited (within \
  `proxy.response_timeout`, as on hyper's path), and on while the answer is relayed when the \
  instance answers first (the connection then closes after the answer). This run: 2.50x nginx \
  (met; the run before, 2.50x too), 0.41x direct (0.57x the run before), cheops using 0.28 of \
  its core. As for the download, the shared core is the limit: direct, the client's bytes \
  reach the sink on the same core; through any proxy, each piece wakes the proxy's core and \
  then the sink's. A sockmap redirect (`sk_skb`) would forward in the softirq of the sending \
  side, on that same shared core: not built.\n\
- Idle connections: an idle fast-path connection holds its socket's registration (256 \
  bytes), its header-wait timer (about 200) and a 512-byte task, nothing else (heaptrack, \
  2,000 idle connections: 960 bytes of heap each, from 12,650). Its read buffer used to stay \
  taken through the wait; the connection to the instance is now taken from its thread's pool \
  per request and given back once the answer was read whole (`proxy/fast/pool.rs`, as nginx's \
  `keepalive`; one the instance closed is never used), so an idle client holds no upstream \
  socket; the request's state is boxed while it is served. This run: 1.2 KiB and 1.01 open \
  files per connection (10.0 KiB and 2.00 in the last report), nginx 0.6 KiB, HAProxy 1.2. \
  What is left above nginx is tokio's per-socket and per-task cells and glibc's overhead on \
  them: a smaller task (the sniffing state, 288 bytes, is its largest) and a timer not boxed \
  would come nearer.\n\
- Replicated create over 16 sites: the leader commits about 12 times per create at 16 sites \
  (a group commit of the replicas' answers; 36 without it), each replica 3 times, and a commit \
  (fdatasync) takes about 2.3 ms on this disk. The WAN relays between sites were 30 Python \
  processes at 16 sites, on the sites' 2 cores: they are now threads of the bench itself, in \
  Rust, and the meshes heartbeat at cheops's default (every second) rather than the tests' 200 \
  ms (1,200 TLS heartbeats a second at 16 sites). This run: 4.14x, with the gathered list, \
  which commits nothing, at 3.60x; the run 10 minutes earlier: 1.98x and 1.95x. So what is \
  left is mostly the machine (16 agents, 16 json-servers and 16 nginx on 2 cores), then the \
  commits on the critical path: at 2 sites (1.51x here), the leader's append, the replica's \
  intent and result, and the leader's settle, each about 2.3 ms beyond the round trip. What \
  could still go: the replica recording a carried mapping in the intent's transaction; the \
  leader answering once the replicas' answers are in and settling after (a replay after a \
  crash asks the replicas again, and they answer \"applied already\"), which needs its own \
  proof against loss and a soak.\n\
- gRPC unary: counted, 104,092 instructions per call, against 36,151 for `grpc_pass` and \
  43,270 for the gRPC origin alone (one HTTP/2 server): a proxy made of the h2 crate's server \
  and client cannot come under 0.8x nginx by trimming. Done in the round before: the workload \
  connection owns its HTTP/2 connection to the instance, and the call's future is boxed where \
  large and rare (226,789 to 103,698). What is left is mostly the two HTTP/2 codecs (h2: about \
  43,800 per call), header maps (10,800), memcpy and tokio. What would close it: frames \
  relayed as they are, with only HEADERS decoded and encoded again (an HTTP/2 relay of our \
  own, as nginx has): not started.\n\
- scope-lang: 1,217 ns in this run against the serde_json map's 528 ns (2.3x), where the \
  last report had 724 and 328 (2.2x): the machine, not the parser, moved; the 1 µs target \
  holds on the last report's machine.\n\
- Closing: a connection that hyper ends on an error while the client still sends (an \
  oversized head's 431) is now shut down and drained before it is closed, as nginx's \
  `lingering_close`, so that a client that sends its whole request before reading gets its \
  answer instead of a reset.\n\
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
