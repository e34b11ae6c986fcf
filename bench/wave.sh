#!/usr/bin/env bash
# The reconnect wave after a node loss (issue 12): `tandem-bench actors
# -scenario reconnect-wave` joined to a cluster of NODES tandem processes
# on one PostgreSQL, on loopback. The tool logs its users in, runs the
# chat, and KILLS node NODES-1 (SIGKILL, by the PID this script started)
# KILL_AFTER into it; the devices whose users lived there are kicked
# (4017), log in again with their cursors and resend what was unacked;
# the ledger then reads every recipient's log from PostgreSQL.
#
#   bench/wave.sh                       3 nodes, the scenario's 3,000 users at 0.2 msg/s
#   USERS=10000 bench/wave.sh           more users
#   BENCH_ARGS="-duration 60s" bench/wave.sh
#   SCENARIO=steady-chat KILL=0 USERS=100000 bench/wave.sh
#                                       another scenario on the cluster, no node lost
#
# Environment: NODES (3), USERS (the scenario's), SCENARIO (reconnect-wave;
# any of tandem-bench actors' ready-made ones), KILL (1; 0: no node is
# killed), KILL_AFTER (10s), OUT
# (bench/out: wave.json, wave.html, wave.txt), KEEP=1 keeps the temporary
# folder (database, node data and logs), NODE_ARGS more flags for every
# node (e.g. "--gossip-profile wan"), BENCH_ARGS more tandem-bench
# actors flags.
#
# The binaries are built into a temporary folder, which also holds the
# database cluster (initdb; run as the user "postgres" when started as
# root; fsync and synchronous_commit on) and each node's data and log.
# The script stops only the processes it started, by PID, and removes its
# temporary folder, also on failure and Ctrl-C. Exit status: the tool's
# (0: a sound run, nothing lost).
set -euo pipefail
cd "$(dirname "$0")/.."

NODES=${NODES:-3}
KILL_AFTER=${KILL_AFTER:-10s}
OUT=${OUT:-bench/out}
((NODES >= 2)) || { echo "bench/wave.sh: NODES must be at least 2 (one is killed)" >&2; exit 2; }

say() { printf '%s\n' "$*" >&2; }
die() { say "bench/wave.sh: $*"; exit 1; }

work=$(mktemp -d -t tandem-wave.XXXXXX)
node_pids=()
bench_pid=
pg_pid=
as_pg=()

cleanup() {
	local rc=$?
	[[ $BASHPID == "$$" ]] || exit "$rc"
	trap - EXIT INT TERM
	if [[ -n $bench_pid ]]; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	if ((${#node_pids[@]})); then
		kill -TERM "${node_pids[@]}" 2>/dev/null || true
		for _ in $(seq 1 100); do
			alive=false
			for p in "${node_pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=true; done
			$alive || break
			sleep 0.2
		done
		kill -KILL "${node_pids[@]}" 2>/dev/null || true
		wait "${node_pids[@]}" 2>/dev/null || true
	fi
	if [[ -n $pg_pid ]]; then
		"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w -t 30 stop >/dev/null 2>&1 ||
			kill -KILL "$pg_pid" 2>/dev/null || true
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=" "
free_port() {
	local p
	for _ in $(seq 1 100); do
		p=$((20000 + RANDOM % 30000))
		[[ $taken == *" $p "* ]] && continue
		port_busy "$p" && continue
		taken+="$p "
		echo "$p"
		return
	done
	die "no free port found"
}

say "building cmd/tandem and cmd/tandem-bench into $work/bin"
go build -o "$work/bin/" ./cmd/tandem ./cmd/tandem-bench
jwt_secret=$(head -c 32 /dev/urandom | base64)
cluster_key=$(head -c 32 /dev/urandom | base64)
admin_key=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')

# PostgreSQL, durable commits (the defaults).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[[ -n $pg_bin && -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
if [[ $(id -u) == 0 ]]; then
	id postgres >/dev/null 2>&1 || die "running as root needs the user 'postgres' to own the database"
	chown postgres "$work"
	as_pg=(runuser -u postgres --)
else
	as_pg=(env)
fi
pg_port=$(free_port)
"${as_pg[@]}" mkdir -p "$work/pg" "$work/pgsock"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$work/initdb.log" 2>&1 ||
	{ cat "$work/initdb.log" >&2; die "initdb failed"; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/postgres.log" -w -t 30 \
	-o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$work/pgsock -c fsync=on -c synchronous_commit=on -c max_connections=200" \
	start >/dev/null || { cat "$work/postgres.log" >&2; die "PostgreSQL did not start"; }
pg_pid=$(head -1 "$work/pg/postmaster.pid")
psql() { "${as_pg[@]}" "$pg_bin/psql" -h "$work/pgsock" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
psql -c "CREATE ROLE tandem LOGIN" >/dev/null
psql -c "CREATE DATABASE wave OWNER tandem" >/dev/null
store="postgres://tandem@127.0.0.1:$pg_port/wave?sslmode=disable"
say "PostgreSQL $(psql -c 'SHOW server_version') on 127.0.0.1:$pg_port, pid $pg_pid"

# The nodes.
gossip=() api=() ws=() remote=()
for ((i = 0; i < NODES; i++)); do
	gossip+=("$(free_port)") api+=("$(free_port)") ws+=("$(free_port)") remote+=("$(free_port)")
done
# shellcheck disable=SC2086 # NODE_ARGS is a list of flags
for ((i = 0; i < NODES; i++)); do
	seeds=()
	for ((j = 0; j < NODES; j++)); do ((j == i)) || seeds+=("127.0.0.1:${gossip[j]}"); done
	mkdir -p "$work/node$i"
	"$work/bin/tandem" --data-dir "$work/node$i" --ws-addr "127.0.0.1:${ws[i]}" --api-addr "127.0.0.1:${api[i]}" \
		--remote-addr "127.0.0.1:${remote[i]}" --gossip-addr "127.0.0.1:${gossip[i]}" --store "$store" \
		--admin-key "$admin_key" --jwt-secret "$jwt_secret" --cluster-key "$cluster_key" --log-level warn \
		--max-frame-rate -1 --seeds "$(IFS=,; echo "${seeds[*]}")" ${NODE_ARGS:-} >"$work/node$i.log" 2>&1 &
	node_pids+=($!)
done
for ((i = 0; i < NODES; i++)); do
	ok=false
	for _ in $(seq 1 300); do
		kill -0 "${node_pids[i]}" 2>/dev/null || { tail -n 30 "$work/node$i.log" >&2; die "node $i exited"; }
		members=$(curl -fsS "http://127.0.0.1:${api[i]}/metrics" 2>/dev/null | awk '$1 == "tandem_cluster_members" {print $2}' || true)
		if curl -fsS -o /dev/null "http://127.0.0.1:${api[i]}/readyz" 2>/dev/null && [[ ${members:-0} == "$NODES" ]]; then
			ok=true
			break
		fi
		sleep 0.2
	done
	if ! $ok; then
		tail -n 30 "$work/node$i.log" >&2
		die "node $i not ready with $NODES members within 60 s (members: ${members:-?}; its log above)"
	fi
done
victim=${node_pids[NODES - 1]}
mkdir -p "$OUT"
args=(-scenario "${SCENARIO:-reconnect-wave}" -join "127.0.0.1:${gossip[0]},127.0.0.1:${gossip[1]}" -cluster-key "$cluster_key"
	-jwt-secret "$jwt_secret" -store "$store" -json "$OUT/wave.json" -html "$OUT/wave.html")
if [[ ${KILL:-1} == 1 ]]; then
	say "$NODES nodes ready: pids ${node_pids[*]}; node $((NODES - 1)) (pid $victim) is killed $KILL_AFTER into the chat"
	args+=(-kill-pid "$victim" -kill-after "$KILL_AFTER")
else
	say "$NODES nodes ready: pids ${node_pids[*]}; none is killed"
fi
[[ -z ${USERS:-} ]] || args+=(-users "$USERS")
# shellcheck disable=SC2086 # BENCH_ARGS is a list of flags
"$work/bin/tandem-bench" actors "${args[@]}" ${BENCH_ARGS:-} > >(tee "$OUT/wave.txt") 2>"$work/bench.err" &
bench_pid=$!
rc=0
wait "$bench_pid" || rc=$?
bench_pid=
tail -n 20 "$work/bench.err" >&2
say "node logs: $work (KEEP=1 keeps them)"
exit "$rc"
