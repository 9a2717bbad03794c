//! The summary as docs/benchmarks.md.
use serde_json::Value;

use super::{
    across::ACROSS_HEADER, optional, ratio, targets::Target, times, Summary, DIRECT, PEERS,
};

/// The cheops whose instructions are counted: behind the nftables rule, as the other proxies.
const COUNTED_CHEOPS: &str = "cheops-nat";

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
- Done in the last round, instructions per request (`cheops-bench --only costs --counted \
  cheops-nat --quick`): release builds are optimised across crates (`lto = \"fat\"` and one \
  codegen unit, in Cargo.toml): 15,431 before and 13,937 after, back to back (-9.7%), most of \
  it tokio's and the standard library's code inlined into ours (tokio 3,105 to 2,410 per \
  request, std 1,510 to 977); the release build takes about 5 minutes rather than 2 on this \
  machine, and tests and the demo build debug. This run: 13,983, 0.64x nginx and 0.41x HAProxy \
  (13,896 and 13,954 in this round's other full runs, 13,977 in the last report, 15,433 in the \
  one before, 44,262 before the fast path). Three rounds ago, 16,303-16,542 to 15,139-15,194: \
  the request's state made in a block its thread keeps for the next request \
  (`fast/kept_box.rs`) rather than allocated per request, an answer's `Connection: keep-alive` \
  told without splitting its value, the values of `connection` and `te` read by their place \
  among the hop-by-hop names, known names compared with a table made once; and hyper's \
  connections borrow the client's stream rather than a `dup` of its socket.\n\
- What is left, per request: the answer's head (httparse about 1,600, its fields indexed \
  about 700, written about 1,300: nginx's names are written again in lower case and its \
  `Connection` dropped, so it cannot go on as it came), tokio's park (about 1,600 at 1.6 parks \
  per request: epoll, the timer wheel and its clock arithmetic) and its busy-time counters and \
  clock reads (about 350, which our code cannot turn off), the sockets' readiness and reads \
  (about 1,800), the request's metrics (about 190). System calls per request: 6.64 in this \
  run, 6.83 and 6.07 in this round's other runs and 6.68 in the last report (nginx 7.00); they \
  vary between 5.2 and 7.0 from run to run with how often the read tried after an answer finds \
  the client's next request already there, which saves the runtime a whole park and wake \
  (about 1,400 instructions): reading only on readiness gave exactly 6.00 system calls but \
  16,714 instructions, so it stays.\n\
- Timed, this run: CPU per request 0.95x nginx's and 0.74x HAProxy's (19.0 µs against 20.0 \
  and 25.9), requests per CPU-second 1.12x and 1.20x, added latency at p50 0.70x and 0.61x \
  (met), at p99 1.21x and 2.16x (not met). Three full runs of this round's code; this one is \
  the last, the only one that started on a quiet machine (load 0.48 before: `cargo xtask \
  bench` now waits for the load its own build leaves to settle), committed whatever it showed. \
  The two before it started just after their builds (load 1.14 and 1.22): CPU per request \
  0.98x and 0.79x (met in the second), requests per CPU-second 1.04x and 1.18x, added p50 \
  0.54x and 0.70x, p99 0.31x and 1.55x. At 1,000 requests a second cheops's CPU over the run \
  is 0.35-0.7 s counted in 10 ms ticks, so one burst of other work moves it by a tenth, and \
  the tails move most; the counts do not move. Where the CPU goes is now sampled in every run, \
  for the three proxies one after another (the perf section above): 79% of cheops's samples \
  are in the kernel and 51% at switching it back in (`finish_task_switch`), against nginx's \
  76% and 47% and HAProxy's 73% and 42%; cheops's own code is 21% of its samples (nginx 24%, \
  HAProxy 27%), and sampled per request cheops costs 35.7 µs against nginx's 37.5 and \
  HAProxy's 42.8 (0.95x and 0.83x; 0.86x and 0.83x in the first run, 0.93x and 0.86x in the \
  second). So cheops's own code already costs less than the others' (0.64x nginx's \
  instructions), and the rest is the kernel's work for any proxy on this path: each request \
  wakes the proxy twice (the request, then the origin's answer), as it does nginx and HAProxy, \
  and on these virtual machines a switch in and out is half the CPU. What would close the gap \
  for good is fewer switches per request, which would need the origin's answer to be there \
  when cheops has sent the request: waiting for it without sleeping would spin on the core the \
  origin needs to answer. The agent's CPU when nothing is served (finding new network \
  namespaces) was brought down in the last round: the kernel's tracepoints say when to look \
  (`intercept/namespace_events.rs`), and the scan's thread used 25.4 ms and 10 wake-ups per 20 \
  s idle, against 119.9 ms and 62 wake-ups per 15 s with the 250 ms timer before \
  (`scripts/agent-thread-cpu.sh`).\n\
- The 300 MiB download: the fast path now relays the answer's body through user space (reads \
  of 256 KiB, each written as it lies in the read buffer), as HAProxy does with its 16 KiB \
  buffers (it does not splice here). Moved from socket to socket in the kernel instead \
  (`splice(2)` through a 1 MiB pipe, until the last round), the body cost more on the core the \
  client and the origin share, which is the limit: the client spent 75-92 ms of CPU on the 300 \
  MiB against 39-47 ms with the copies (HAProxy's 56-68, direct 21-48), while the proxy's own \
  core, the one with room, did a little more (0.10-0.12 s against 0.08-0.09). Each path in \
  turn 6-8 times in three runs on a machine shared with builds (medians, MiB/s): 1,199, 1,186 \
  and 994 with the copies against 1,094, 1,085 and 877 with the pipe (HAProxy 1,176, 1,224 and \
  848; direct 2,083, 1,913 and 1,989); reads of 64 KiB were no faster than the pipe, and \
  `SO_RCVLOWAT`, `SPLICE_F_MORE`, splicing again until `EAGAIN` and pipes of 64 or 256 KiB \
  moved nothing. This run: 0.86x direct (met), 0.87x nginx, HAProxy 1.07x direct (this round's \
  other runs: 0.82x and 0.70x direct, 0.98x and 0.97x nginx; the last report: 0.77x and \
  0.94x). 2x nginx is out of reach on this machine: nginx itself gets 0.72x to 0.99x direct in \
  these runs, so 2x nginx would be 1.4x to 2x direct.\n\
- The 300 MiB upload: past 64 KiB, what came with the head is sent with it and the rest goes \
  from the client's socket to the instance's with `splice(2)` while the answer's head is \
  awaited, and on while the answer is relayed when the instance answers first (the connection \
  then closes after the answer). This run: 0.62x direct and 1.10x nginx, HAProxy 0.59x direct \
  (this round's other runs: 0.65x and 0.59x direct, 1.25x and 1.17x nginx; the last report: \
  0.66x and 1.14x): this figure moves more between runs than any other. Tried in the last \
  round, each against the pipe within one run: `SO_RCVLOWAT`, `SPLICE_F_MORE`, splicing until \
  `EAGAIN`, a 256 KiB pipe, and copies through user space of 64 KiB, 256 KiB and 1 MiB: all \
  equal within the noise. Through any proxy, HAProxy included, the client uses about 60-70 ms \
  of CPU against about 25 direct, on the core it shares with the sink; a sockmap redirect \
  (`sk_skb`) would forward in the softirq of the sending side, on that same shared core: not \
  built.\n\
- Idle connections: met. 0.42x nginx's memory per connection (0.2 KiB against 0.6, HAProxy \
  1.2; 0.44x and 0.42x in this round's other runs, 0.37x in the last report). What an idle \
  connection held had become tokio's alone: its task (512 bytes, aligned to 128) and its \
  socket's registration (256), with glibc's fragments about 1 KiB, which no trimming of the \
  task brings under nginx's. Done three rounds ago: parking (`proxy/park.rs`). An HTTP/1.1 \
  connection that the fast path served, idle for `proxy.park_idle_after` (1 s by default) with \
  nothing of its next request read, leaves its task and tokio's poller: its socket waits in \
  one epoll set per worker thread, and what resumes it (its workload's parts, its connection \
  slot) in a map by descriptor, about 200 bytes. Once it is readable or hung up, the parker \
  registers it again and spawns its task, which goes on waiting for the head until the \
  deadline its last answer set; past that deadline the parker closes it, as its task would \
  have. The memory the freed tasks leave is given back with glibc's `malloc_trim` a second \
  after connections parked, at most once a second per thread (1.6 ms for 2,000 connections): \
  without it the RSS does not move (1.85 KiB per connection in a quick run). A connection \
  whose requests come faster than that is never parked, and pays nothing for it (instructions \
  and system calls per request unchanged). The memory is now read once the connections have \
  been idle three seconds, not one (method above).\n\
- Replicated create over 16 sites: 2.57x (2.51x and 2.53x in this round's other runs, 2.46x \
  in the last report; nothing in this round was meant to move it). Done two rounds ago: (1) a \
  replica records the mappings an operation carries in the same transaction as the operation's \
  intent (`replication/store/intents.rs`), so a create that carries the last one's mapping \
  commits twice at each replica, not three times; no change the across bench can see (2 sites \
  1.30-1.33x against 1.31-1.32x, 16 sites 2.30-2.35x against 2.28-2.39x, two quick runs each): \
  a commit costs little on the create's path here. (2) Peer connections that cheops accepts \
  now have `TCP_NODELAY`, as the ones it dials had: an answer in several writes (HTTP/2 frames \
  in TLS records) waited, with Nagle's algorithm, for the peer's delayed acknowledgement, 40 \
  ms. That, and the same in the bench's WAN relay, is why the last full runs had some rows' \
  creates and lists at about 70 ms, three round trips (4 sites 3.01x in the run before this \
  one): with both fixed, quick runs give create p90s of 31.5, 33.3 and 39.7 ms at 2, 4 and 8 \
  sites, against 74.9, 33.7 and 84.0 without the fix in cheops. At 16 sites the gathered list, \
  which commits nothing, takes 2.32x (2.02x and 2.00x in the other runs), so what holds the \
  create is the fan-out on this machine: 16 agents, 16 json-servers and 16 nginx on 2 cores, \
  each create's request decrypted, served and answered at 15 sites. What could still go: the \
  leader's settle of the last answers and its appending the mapping, in one transaction rather \
  than two; the leader answering once the replicas' answers are in and settling after (a \
  replay after a crash asks the replicas again, and they answer \"applied already\"), which \
  needs its own proof against loss and a soak.\n\
- gRPC unary: 88,257 instructions per call, against 36,154 for `grpc_pass` and 35,560 for \
  the gRPC origin alone (one HTTP/2 server); 88,601 in the last report, 100,636 in the one \
  before the cross-crate optimisation, and 101,501 and 104,352 in the ones before, which three \
  rounds ago brought down: the instance connection's task polls hyper's client dispatch only \
  when that was woken, a lone `te: trailers` stays in place, the carriers are skipped at once \
  when none of their headers is present, and header names are told apart by their length \
  first. A proxy made of the h2 crate's server and client cannot come under 0.8x nginx by \
  trimming: about 44,000 per call is the h2 crate itself (frames copied through its queues, \
  HPACK, its header checks; `memcpy` alone is about 10,700 per call, and every call of it \
  comes from inside h2: `Deque::pop_front`, `Prioritize::pop_frame`, its slab's `insert_at`), \
  1,500 hyper's client handing each call to the connection, 1,100 the task for each incoming \
  stream. What would close it: frames relayed as they are, with only HEADERS decoded and \
  encoded again (an HTTP/2 relay of our own, as nginx has): not started. Timed, this run: \
  added latency at p50 1.55x and at p99 3.98x what `grpc_pass` adds, CPU per call 1.70x (this \
  round's other runs: 1.10x and 1.22x at p50, 2.15x and not measurable at p99, 1.48x and 1.62x \
  CPU; the last report: 0.61x, 0.54x and 0.87x): the timed figures move far more from run to \
  run than the count, which is 2.44x nginx's.\n\
- scope-lang: 407 ns in this run against the serde_json map's 181 ns: met (391 ns in the \
  last report). Done four rounds ago (docs/scope-lang.md, \"Cost\"): 7,851 to 6,484 \
  instructions and 8 to 5 allocations per parse + resolve (callgrind and dhat): the round-trip \
  table in sorted vectors walked by length first, names kept as spans of the text until \
  stored, durations read as bytes, entries added in place, a plan's site held as a `Name` \
  (inline up to 24 bytes) rather than a `String`. What is left: one stall per name in \
  `compact_str`'s copy, and the scope's text, entries and chain vectors (5 allocations).\n\
- Tried in this round and not kept, as the issue allowed (\"only if it wins in the \
  benchmark\"): cheops's answers put into the workload's socket by the kernel, past TCP. An \
  `sk_msg` program ran on each send of the sockets cheops accepts from eBPF-redirected \
  workloads (filed in a SOCKHASH when accepted) and redirected the message to the workload's \
  socket (filed by `sock_ops` when its connection was established, keyed by namespace and \
  address) with `BPF_F_INGRESS`, so the loopback delivery of the answer was skipped. It \
  worked: the interception tests passed, and the kernel counted the answers it delivered. It \
  did not win: at 1,000 requests a second (`scripts/agent-thread-cpu.sh load 10`, eight runs \
  alternating the two builds), cheops's CPU had a median of 225.9 ms per 10 s with it against \
  221.7 without (1.02x), and a quick `cheops-bench` gave the same requests per CPU-second \
  against cheops behind nftables with and without it (1.09x and 1.10x). The profile above says \
  why: half of each proxy's samples are the switches in and out, which the redirect leaves as \
  they are (the client is woken and cheops waits twice per request all the same), and the \
  loopback delivery it skips is a few percent. And it costs two guarantees TCP gives: bytes \
  redirected and not yet read are freed with the workload socket's link to the map, which goes \
  when cheops exits, so an answer written just before a restart could be lost where TCP keeps \
  it in the client's socket; and the receiving socket's queue is not bounded by its buffer \
  size, so a slow reader of a large answer holds it all in kernel memory.\n\
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
        let profile = &raw["costs"][COUNTED_CHEOPS];
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
        md + &self.cpu_profiles_markdown()
    }

    /// perf's samples of each proxy, and cheops's functions with the most.
    fn cpu_profiles_markdown(&self) -> String {
        let profiled: Vec<_> = self
            .costs
            .iter()
            .filter_map(|cost| Some((cost, cost.cpu_profile.as_ref()?)))
            .collect();
        let Some((_, first)) = profiled.first() else {
            return String::new();
        };
        let mut md = format!(
            "\n## Where the CPU goes: perf's samples, the kernel's and the proxy's own\n\nEach \
             proxy, running as usual, served {:.0} more requests on its connection, every process \
             on one core, while `perf record -e cpu-clock -F {:.0} -p PID` sampled its threads. \
             What the kernel does on the proxy's behalf is sampled as the proxy's: its system \
             calls, the loopback delivery its sends do, switching it out and in. These virtual \
             machines have no hardware counters, and the cpu-clock timer cannot interrupt code \
             running with interrupts off: that time shows where they are turned back on, so \
             `finish_task_switch`, which switches a task back in, holds most of a switch's cost. \
             Timed, so the machine's load moves it; the proxies were sampled one after another \
             in the same run.\n\n| proxy | samples | CPU µs per request, sampled | in the \
             kernel | at switching it in | in its own code |\n|---|---:|---:|---:|---:|---:|\n",
            first.requests, first.frequency,
        );
        for (cost, profile) in &profiled {
            md += &format!(
                "| {} | {:.0} | {:.1} | {:.0}% | {:.0}% | {:.0}% |\n",
                self.title(&cost.name),
                profile.samples,
                profile.sampled_us_per_request(),
                profile.kernel_share * 100.0,
                profile.switch_in_share * 100.0,
                (1.0 - profile.kernel_share) * 100.0,
            );
        }
        if let Some((cost, profile)) = profiled.iter().find(|(c, _)| c.name == COUNTED_CHEOPS) {
            md += &format!(
                "\nThe functions with the most samples, {}:\n\n{}",
                self.title(&cost.name),
                profile.top_markdown()
            );
        }
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
