#!/usr/bin/env bash
# The CPU each thread of a cheops agent uses, from /proc/PID/task/*/schedstat: idle (one workload
# process, nothing to serve), or serving 1,000 requests a second on one keep-alive connection
# from a workload process to an nginx origin, every process on CPU 0 as in the benchmark's
# latency runs. As root, from the workspace, after `cargo build --release -p interceptor -p
# cheops-tests --bins`.
#   scripts/agent-thread-cpu.sh idle|load [SECONDS] [CHEOPS_BINARY]
set -euo pipefail
mode=${1:?idle or load}
seconds=${2:-15}
cheops=${3:-$PWD/target/release/cheops}
load_bin=$PWD/target/release/cheops-load
name=ctcpu$$
cgroup2=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$name" 2>/dev/null || true
  rmdir "$cgroup2/$name" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

ip netns add "$name"
ip -n "$name" link set lo up
ip -n "$name" address add 198.18.0.10/32 dev lo
mkdir "$cgroup2/$name"
cat > "$dir/cheops.toml" <<TOML
site = "cpu"
[admin]
control = "$dir/control.sock"
[replication]
store = "$dir/store.redb"
[[service]]
name = "origin"
address = "198.18.0.10:80"
local = "127.0.0.1:8080"
[[workload]]
cgroup = "$name"
TOML
pin=()
[ "$mode" = load ] && pin=(taskset -c 0)

if [ "$mode" = load ]; then
  mkdir -p "$dir/www"
  head -c 1024 /dev/zero | tr '\0' x > "$dir/www/one"
  cat > "$dir/nginx.conf" <<NGINX
daemon off; master_process off; worker_processes 1;
pid $dir/nginx.pid; error_log $dir/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off; keepalive_requests 1000000;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:8080; root $dir/www; }
}
NGINX
  "${pin[@]}" ip netns exec "$name" nginx -p "$dir" -c "$dir/nginx.conf" &
  pids+=($!)
else
  ip netns exec "$name" sleep 3600 &
  pids+=($!)
  echo "$!" > "$cgroup2/$name/cgroup.procs"
fi
"${pin[@]}" nsenter --net="/run/netns/$name" "$cheops" agent --config "$dir/cheops.toml" \
  > "$dir/agent.log" 2>&1 &
agent=$!
pids+=("$agent")
sleep 3
if [ "$mode" = load ]; then
  (
    echo "$BASHPID" > "$cgroup2/$name/cgroup.procs"
    exec "${pin[@]}" ip netns exec "$name" "$load_bin" rate --address 198.18.0.10:80 \
      --path /one --body-bytes 1024 --seconds $((seconds + 3)) --rate 1000 > "$dir/load.json"
  ) &
  pids+=($!)
  sleep 1.5
fi

threads() {
  for task in /proc/"$agent"/task/*; do
    echo "$(basename "$task") $(cat "$task/comm") $(awk '{ print $1, $3 }' "$task/schedstat")"
  done
}
threads > "$dir/before"
sleep "$seconds"
threads > "$dir/after"
echo "cheops agent ($mode, $seconds s): CPU ms and times it was switched in, per thread"
join "$dir/before" "$dir/after" | awk '
  { ms = ($6 - $3) / 1e6; total += ms; printf "  %-16s %8.2f ms %7d\n", $2, ms, $7 - $4 }
  END { printf "  %-16s %8.2f ms\n", "total", total }'
