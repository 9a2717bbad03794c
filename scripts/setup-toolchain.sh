#!/usr/bin/env bash
# Installs what building and testing Cheops needs on a fresh Debian 12 machine.
# Safe to run again: every step is skipped when already done.
set -euo pipefail

packages=(rustc-web rust-web-src llvm-22-dev libpolly-22-dev bpftool iproute2 nftables curl
          nginx-light haproxy wrk jq procps psmisc etcd-server etcd-client
          # The benchmark counts instructions (valgrind's callgrind) and system calls (perf).
          valgrind linux-perf
          # The container tests: podman with runc (crun refuses hybrid cgroup layouts), and a
          # static busybox to build images from (no image registry is reachable).
          podman runc busybox-static
          # A protocol where the server speaks first, with its own client (ssh-keyscan).
          openssh-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  # The machine's own sshd must not start on install: the tests run theirs in namespaces.
  mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's nginx, haproxy, etcd and ssh start a service on install; the tests and benchmarks run their own.
for svc in nginx haproxy etcd ssh; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || service "$svc" stop >/dev/null 2>&1 || true
done

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  echo "setup: building bpf-linker 0.13 against LLVM 22 (about 3 minutes, once per machine)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker@0.13.0 \
    --no-default-features --features llvm-22
fi

if ! command -v json-server >/dev/null 2>&1; then
  echo "setup: installing json-server from npm"
  npm install -g --silent json-server@0.17.4 >/dev/null
fi
# The gRPC tests' service and client use a real gRPC stack (grpcio), kept in a virtualenv of its
# own so that the machine's Python stays as it was.
venv=/opt/cheops-venv
if ! "$venv/bin/python" -c 'import grpc' >/dev/null 2>&1; then
  echo "setup: installing grpcio into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check grpcio==1.84.0
fi
# json-server 1.x (paged lists answered as objects) for the paged-REST replication test, in its
# own prefix beside the global 0.17 that the other tests use.
js1=/opt/cheops-json-server-1
if [ ! -x "$js1/node_modules/.bin/json-server" ]; then
  echo "setup: installing json-server 1.0.0-beta.15 into $js1"
  mkdir -p "$js1"
  npm install --silent --prefix "$js1" json-server@1.0.0-beta.15 >/dev/null
fi
# OpenStack Glance with the unmodified `openstack` and `glance` clients and gunicorn (Glance 33
# runs only under a WSGI server), for the OpenStack tests and demo: a virtualenv of its own.
glance_venv=/opt/cheops-glance
if ! [ -x "$glance_venv/bin/openstack" ] || ! "$glance_venv/bin/python" -c 'import glance, glanceclient' >/dev/null 2>&1; then
  echo "setup: installing Glance 33, gunicorn and the OpenStack clients into $glance_venv (about a minute)"
  python3 -m venv "$glance_venv"
  "$glance_venv/bin/pip" install --quiet --disable-pip-version-check glance==33.0.0 gunicorn==27.0.1 \
    python-openstackclient==10.5.0 python-glanceclient==4.13.0 keystonemiddleware==13.0.1
fi
# Keystone (identity) for the OpenStack identity test and demo, beside Glance (whose
# keystonemiddleware checks tokens with it): a virtualenv of its own, so that neither
# service's pins move the other's.
keystone_venv=/opt/cheops-keystone
if ! [ -x "$keystone_venv/bin/keystone-manage" ] || ! [ -x "$keystone_venv/bin/gunicorn" ] \
   || ! "$glance_venv/bin/python" -c 'import keystonemiddleware' >/dev/null 2>&1; then
  echo "setup: installing Keystone 30 and gunicorn into $keystone_venv (about a minute)"
  python3 -m venv "$keystone_venv"
  "$keystone_venv/bin/pip" install --quiet --disable-pip-version-check keystone==30.0.0 gunicorn==27.0.1
  "$glance_venv/bin/pip" install --quiet --disable-pip-version-check keystonemiddleware==13.0.1
fi
echo "setup: toolchain ready"
