#!/usr/bin/env bash
# Starts an etcd and three weir nodes on this machine (127.0.0.1), with the
# configs node1.yaml .. node3.yaml, data and logs under ./data-cluster next
# to this script. Ctrl-C stops the nodes cleanly, then etcd.
#
#   examples/cluster/run.sh            # etcd: Debian's if installed, else testetcd
#   ETCD=testetcd examples/cluster/run.sh   # etcd built from this repo
#   ETCD=system examples/cluster/run.sh     # the etcd binary on PATH (apt-get install etcd-server)
#   ETCD_ENDPOINT=10.0.0.5:2379 examples/cluster/run.sh   # an etcd that already runs
#
# Needs Go (it builds bin/weir and testetcd from the repo) and curl (the
# readiness checks).
set -euo pipefail
# Job control puts every process started below in a process group of its
# own, so Ctrl-C reaches only this script, which then stops the nodes first
# and etcd last (a node stopping after etcd cannot deregister).
set -m

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA="$HERE/data-cluster"
ETCD=${ETCD:-auto}
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380

mkdir -p "$DATA/bin" "$DATA/logs"
cd "$HERE" # the configs' data dirs are relative to this directory

echo "building weir..."
(cd "$ROOT" && go build -o "$DATA/bin/weir" ./cmd/weir)

pids=()
stop_all() {
	trap - INT TERM EXIT
	echo
	echo "stopping the nodes..."
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		pid=${pids[$i]}
		kill -TERM "$pid" 2>/dev/null || true
		# A clean stop takes seconds; one that hangs is killed after 60s.
		for _ in $(seq 1 600); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$pid" 2>/dev/null; then
			echo "process $pid did not stop within 60s of SIGTERM; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	echo "stopped; data and logs are in $DATA"
}
trap stop_all INT TERM EXIT

wait_http() { # url, what, pid
	for _ in $(seq 1 300); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then
			return 0
		fi
		if ! kill -0 "$3" 2>/dev/null; then
			echo "$2 exited; its log:" >&2
			tail -n 30 "$4" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "$2 was not ready within 60s; see $4" >&2
	exit 1
}

if [[ -n "${ETCD_ENDPOINT:-}" ]]; then
	export WEIR_ETCD_ENDPOINTS=$ETCD_ENDPOINT
	echo "etcd: using $ETCD_ENDPOINT"
else
	if [[ $ETCD == auto ]]; then
		if command -v etcd >/dev/null; then ETCD=system; else ETCD=testetcd; fi
	fi
	case $ETCD in
	system)
		echo "etcd: $(command -v etcd) on $ETCD_CLIENT"
		etcd --name cluster-example --data-dir "$DATA/etcd" \
			--listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
			--listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
			--initial-cluster "cluster-example=http://$ETCD_PEER" \
			>"$DATA/logs/etcd.log" 2>&1 &
		;;
	testetcd)
		echo "etcd: building internal/cmd/testetcd; serving on $ETCD_CLIENT"
		(cd "$ROOT" && go build -o "$DATA/bin/testetcd" ./internal/cmd/testetcd)
		"$DATA/bin/testetcd" --data-dir "$DATA/etcd" --client-addr "$ETCD_CLIENT" --peer-addr "$ETCD_PEER" \
			>"$DATA/logs/etcd.log" 2>&1 &
		;;
	*)
		echo "ETCD=$ETCD: want auto, system or testetcd" >&2
		exit 2
		;;
	esac
	pids+=($!)
	wait_http "http://$ETCD_CLIENT/health" etcd "${pids[0]}" "$DATA/logs/etcd.log"
fi

for i in 1 2 3; do
	"$DATA/bin/weir" server --config "$HERE/node$i.yaml" >"$DATA/logs/node$i.log" 2>&1 &
	pids+=($!)
done
for i in 1 2 3; do
	http=$(sed -n '/^http:/,/^[a-z]/s/^  listen: *//p' "node$i.yaml")
	wait_http "http://$http/readyz" "node $i" "${pids[-4 + i]}" "$DATA/logs/node$i.log"
done

cat <<EOF

three weir nodes are up:
  node 1: gRPC 127.0.0.1:6570  MQTT 127.0.0.1:1883  HTTP http://127.0.0.1:6571/metrics
  node 2: gRPC 127.0.0.1:6670  MQTT 127.0.0.1:1884  HTTP http://127.0.0.1:6671/metrics
  node 3: gRPC 127.0.0.1:6770  MQTT 127.0.0.1:1885  HTTP http://127.0.0.1:6771/metrics
  etcd:   ${ETCD_ENDPOINT:-$ETCD_CLIENT}
logs in $DATA/logs; try:
  export WEIR_ADDR=hstream://127.0.0.1:6570,127.0.0.1:6670,127.0.0.1:6770
  $DATA/bin/weir stream create sensors --shards 3 --replication-factor 3
  $DATA/bin/weir append sensors --count 10000 --keys 100
Ctrl-C stops everything.
EOF

# Wait until Ctrl-C, or until a process exits on its own.
while true; do
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "process $pid exited; see $DATA/logs" >&2
			exit 1
		fi
	done
	sleep 1
done
