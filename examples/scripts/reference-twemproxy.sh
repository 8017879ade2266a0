#!/usr/bin/env bash
# Reference point for the cluster benchmark: twemproxy (nutcracker) in front of 3 Redis servers,
# on this machine, loopback only, driven by redis-benchmark with 50 requests in flight on one
# connection (-c 1 -P 50), 100-byte values, SET and GET. Needs Debian's redis-server, redis-tools
# and nutcracker (apt-get install -y redis-server redis-tools nutcracker). Everything it starts
# runs from a temp dir and is stopped on exit.
set -euo pipefail
requests=${REQUESTS:-200000}
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

servers=""
redis_ports=()
for i in 1 2 3; do
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no >"$work/redis$i.log" 2>&1 &
  pids+=($!)
  redis_ports+=("$port")
  servers+="    - 127.0.0.1:$port:1 redis$i"$'\n'
done
proxy_port=$(free_port)
cat >"$work/nutcracker.yml" <<YML
dstore_reference:
  listen: 127.0.0.1:$proxy_port
  hash: fnv1a_64
  distribution: ketama
  redis: true
  timeout: 2000
  auto_eject_hosts: false
  servers:
$servers
YML
nutcracker -c "$work/nutcracker.yml" -s "$(free_port)" -o "$work/nutcracker.log" &
pids+=($!)
sleep 1
echo "twemproxy + 3 redis: redis-benchmark -c 1 -P 50 -d 100 -n $requests -r 10000 -t set,get"
redis-benchmark -h 127.0.0.1 -p "$proxy_port" -c 1 -P 50 -d 100 -n "$requests" -r 10000 -t set,get -q 2>&1 | tr "\r" "\n" | grep "requests per second"
echo "direct to one redis (no proxy), same load:"
redis-benchmark -h 127.0.0.1 -p "${redis_ports[0]}" -c 1 -P 50 -d 100 -n "$requests" -r 10000 -t set,get -q 2>&1 | tr "\r" "\n" | grep "requests per second"
