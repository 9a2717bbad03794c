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
- Done in this round, instructions per request (`cheops-bench --only costs --counted \
  cheops-nat --quick`, two runs each): 23,138-23,179 before, 18,841-18,881 after. The four \
  buffers of a request (the client's bytes, the two heads, the answer's read) are taken from a \
  few kept per thread and given back, so a request allocates none and an idle connection still \
  holds none (`fast/buffers.rs`; the allocator's share 3,581 to 1,810); the names the fast \
  path looks for (hop-by-hop, `Content-Length`, `Host`...) are classed once when the head is \
  indexed and found by their place, names are compared and put in lower case four or eight \
  letters at a time (`fast/names.rs`), a name's values read by an iterator of their own, \
  `Content-Length` read digit by digit, and a request with no scope is planned for this site \
  without a copy of the site's name. This run: 18,609, 0.85x nginx and 0.54x HAProxy, from \
  22,795 (1.04x nginx) in the last report and 44,262 before the fast path.\n\
- What is left, per request: tokio's polling and timers (about 3,500: two timer resets, \
  seven clock reads), httparse (about 2,000, mostly the answer's fields), writing the answer's \
  head (about 1,650), the metrics of the request's line (about 620), its `Uri` for the log \
  line (about 370), the boxed request state (about 230 and an allocation). Copying runs of \
  untouched fields in one memcpy was tried: 250 instructions more than line by line, as \
  putting names in lower case dominates. What would close the rest: one clock read and one \
  timer per request, the log line's target kept as the bytes it came as, the answer's head \
  passed on as it came when it needs no change. System calls per request: 6.57 (nginx 7.00).\n\
- Timed, this run: CPU per request 1.20x nginx's and 0.98x HAProxy's, requests per \
  CPU-second 1.08x and 1.16x, added latency at p50 0.93x and 0.75x, at p99 1.45x and 0.68x. \
  Two full runs of the same code earlier the same afternoon (load average 1.6 and 2.0 when \
  they began, against 0.16 for this one) gave, against the worse of the two, 0.95x and 1.33x \
  for CPU per request, 1.11x and 1.07x for requests per CPU-second, 0.86x and 0.88x at p50, \
  and at p99 no ratio (nginx added nothing measurable) and 1.21x: at 1,000 requests a second, \
  cheops's CPU is about 0.5 s over the run, counted in 10 ms ticks, and one burst of other \
  work moves it by a tenth. The count of instructions, which load does not move, is what these \
  follow; a good part of the rest is the kernel's (loopback TCP, epoll: about 30% of cheops's \
  CPU in a perf profile), which every proxy pays too.\n\
- The 300 MiB download: past the answer's head, the fast path moves a body of a known length \
  (more than 64 KiB still to come), or one that ends with the connection, from the instance's \
  socket to the client's with `splice(2)` through a 1 MiB pipe, never through user space. This \
  run: 0.92x direct (met) and 0.82x nginx (0.81x and 0.84x direct in the two runs before). On \
  this machine nginx and HAProxy came near or above direct (1.12x and 1.31x): the direct path \
  is the client and the origin on one core, where a proxy on its own core takes part of the \
  work off it, so 2x nginx cannot be reached by any proxy here. The proxy is not the limit: \
  the shared core is, where the client and the origin do what they do direct, plus a wake-up \
  across cores per piece that goes through. Pipes of 64 KiB and 4 MiB and `SO_RCVLOWAT` gave \
  nothing measurable. Answers the instance sends chunked are still copied through user space.\n\
- The 300 MiB upload: past 64 KiB, what came with the head is sent with it and the rest goes \
  from the client's socket to the instance's with `splice(2)` while the answer's head is \
  awaited, and on while the answer is relayed when the instance answers first (the connection \
  then closes after the answer). This run: 1.18x nginx, 0.64x direct. As for the download, the \
  shared core is the limit: direct, the client's bytes reach the sink on the same core; \
  through any proxy, each piece wakes the proxy's core and then the sink's (HAProxy 0.62x \
  direct, nginx 0.54x; the two runs before: 0.60x and 0.59x direct for cheops). A sockmap \
  redirect (`sk_skb`) would forward in the softirq of the sending side, on that same shared \
  core: not built.\n\
- Idle connections: 1.2 KiB per connection, nginx 0.6, HAProxy 1.2 (1.2, 0.6 and 1.2 in the \
  last report). Done in this round: the wait for each head uses one timer inside the \
  connection's task, reset for each wait (it was a timer of its own, three allocations), the \
  protocol sniffing (288 bytes, the task's largest state, over once the first bytes came) is \
  boxed, and the socket is registered with its worker's poller by the accepting thread, so the \
  task is the connection's future alone (384 bytes, from 464). What an idle connection holds \
  is now tokio's: its task (512 bytes, aligned to 128) and its socket's registration (256, \
  aligned to 128), and glibc gives each 128-aligned block a 112-byte fragment in front that \
  only small allocations reuse: about 1,024 bytes of heap. mimalloc gave 0.002 KiB per \
  connection, but only by reusing what start-up had freed, with 57 MiB before any connection \
  instead of 11: not kept. What would close it: one head timer per thread for all its idle \
  connections (every head wait lasts as long: a queue of deadlines in arrival order), so that \
  the task fits tokio's next smaller size. Each worker thread now also closes, every 10 s, the \
  kept instance connections that the instance closed or that were idle past 90 s, instead of \
  holding them in CLOSE_WAIT until the next request.\n\
- Replicated create over 16 sites: 2.49x (3.06x for the gathered list, which commits \
  nothing; 2.49x and 2.64x in the two runs before). The 2-site row's round trip is now read \
  three heartbeat intervals after the mesh is up: the median S1 reports is the upper one of \
  its latest heartbeats, and with only two it was the first, which paid for the TLS set-up (65 \
  ms for a 20 ms link, a create at 0.52x); it is 24.5 ms here. The leader commits about 12 \
  times per create at 16 sites (a group commit of the replicas' answers; 36 without it), each \
  replica 3 times, and a commit (fdatasync) takes about 2.3 ms on this disk; the rest is the \
  machine: 16 agents, 16 json-servers and 16 nginx on 2 cores. At 2 sites (1.53x), the commits \
  on the critical path are the leader's append, the replica's intent and result, and the \
  leader's settle, each about 2.3 ms beyond the round trip. What could still go: the replica \
  recording a carried mapping in the intent's transaction; the leader answering once the \
  replicas' answers are in and settling after (a replay after a crash asks the replicas again, \
  and they answer \"applied already\"), which needs its own proof against loss and a soak.\n\
- gRPC unary: 105,002 instructions per call, against 36,172 for `grpc_pass` and 43,241 for \
  the gRPC origin alone (one HTTP/2 server): a proxy made of the h2 crate's server and client \
  cannot come under 0.8x nginx by trimming. What is left is mostly the two HTTP/2 codecs (h2: \
  about 43,800 per call), header maps (10,800), memcpy and tokio. What would close it: frames \
  relayed as they are, with only HEADERS decoded and encoded again (an HTTP/2 relay of our \
  own, as nginx has): not started.\n\
- scope-lang: 397 ns in this run against the serde_json map's 193 ns (2.1x): met (403 and \
  410 ns in the two runs before). Done in this round (docs/scope-lang.md, \"Cost\"): 7,851 to \
  6,484 instructions and 8 to 5 allocations per parse + resolve (callgrind and dhat): the \
  round-trip table in sorted vectors walked by length first, names kept as spans of the text \
  until stored, durations read as bytes, entries added in place, a plan's site held as a \
  `Name` (inline up to 24 bytes) rather than a `String`. What is left: one stall per name in \
  `compact_str`'s copy, and the scope's text, entries and chain vectors (5 allocations).\n\
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
