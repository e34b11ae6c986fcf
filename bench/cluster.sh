#!/usr/bin/env bash
# The socket benchmark (cmd/tandem-bench) against tandem nodes running as
# separate processes, on loopback:
#
#   single-badger      one node on its embedded badger store
#   single-postgres    one node on PostgreSQL
#   cluster3-postgres  three nodes on one PostgreSQL, devices spread over
#                      them (sender i on node i%3, its receiver on (i+1)%3)
#
#   bench/cluster.sh                      all three, one after the other
#   bench/cluster.sh single-postgres      some of them, by name
#   DURATION=60s bench/cluster.sh         a longer measured window
#
# Environment: DURATION (20s), WARMUP (2s), PAIRS (10), WINDOW (tandem-bench's: 32, or 1024 with -rate/-sweep),
# SIZE (100), NODES (3: the cluster's size; its output is then
# cluster<NODES>-postgres), OUT (bench/out), KEEP=1 keeps the temporary
# folder (database, node data and logs), PGSS=1 loads pg_stat_statements
# and adds PostgreSQL's busiest statements of each run to its .txt (a
# diagnostic: it costs the server a little CPU), BENCH_ARGS more
# tandem-bench flags (e.g. "-drain 30s").
#
# The binaries are built into a temporary folder, which also holds the
# database cluster (initdb; run as the user "postgres" when started as
# root; fsync and synchronous_commit on, the defaults), each node's data
# folder and log. Every scenario gets fresh nodes and, on PostgreSQL, a
# fresh database. The bench is its own process; it reports the CPU of the
# nodes and of PostgreSQL (postmaster and backends) over the measured
# window (-cpu-pids). Writes $OUT/<scenario>.json and .txt (the bench's
# output), each node's /metrics after the run ($OUT/<scenario>.node<i>.metrics)
# and prints a table at the end.
#
# The script stops only the processes it started, by PID, and removes its
# temporary folder, also on failure and Ctrl-C. Exit status: 0 if every
# scenario ran with nothing lost, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20s}
WARMUP=${WARMUP:-2s}
PAIRS=${PAIRS:-10}
WINDOW=${WINDOW:-} # empty: tandem-bench's default (32 closed loop, 1024 open loop)
SIZE=${SIZE:-100}
NODES=${NODES:-3}
OUT=${OUT:-bench/out}
cluster_name=cluster${NODES}-postgres

all=(single-badger single-postgres "$cluster_name")
scenarios=("$@")
((${#scenarios[@]})) || scenarios=("${all[@]}")
for s in "${scenarios[@]}"; do
	case " ${all[*]} " in
	*" $s "*) ;;
	*) echo "usage: $0 [${all[*]}]..." >&2; exit 2 ;;
	esac
done

say() { printf '%s\n' "$*" >&2; }
die() { say "bench/cluster.sh: $*"; exit 1; }
# nap sleeps in a way a signal interrupts at once (a trap waits for a
# foreground command to end).
nap() {
	sleep "$1" &
	wait $! || true
}

for tool in go curl jq base64 head; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d -t tandem-bench.XXXXXX)
node_pids=()
bench_pid=
pg_pid=
as_pg=() # prefix that runs a command as the database's owner

# stop_nodes stops the nodes of the current scenario: SIGTERM, up to 20 s
# for a graceful stop, then SIGKILL.
stop_nodes() {
	local p alive
	((${#node_pids[@]})) || return 0
	kill -TERM "${node_pids[@]}" 2>/dev/null || true
	for _ in $(seq 1 100); do
		alive=false
		for p in "${node_pids[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=true
		done
		$alive || break
		sleep 0.2
	done
	kill -KILL "${node_pids[@]}" 2>/dev/null || true
	wait "${node_pids[@]}" 2>/dev/null || true
	node_pids=()
}

cleanup() {
	local rc=$?
	# A child forked for a node or the bench (before it execs the binary)
	# inherits these traps: only the script itself cleans up.
	[[ $BASHPID == "$$" ]] || exit "$rc"
	trap - EXIT INT TERM
	if [[ -n $bench_pid ]]; then
		kill -TERM "$bench_pid" 2>/dev/null || true
		wait "$bench_pid" 2>/dev/null || true
	fi
	stop_nodes
	if [[ -n $pg_pid ]]; then
		say "stopping PostgreSQL (pid $pg_pid)"
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

# ---------------------------------------------------------------- ports
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=" "
# free_port prints a TCP port on 127.0.0.1 nobody listens on and this
# script has not handed out yet.
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

# ---------------------------------------------------------------- build
say "building cmd/tandem and cmd/tandem-bench into $work/bin"
go build -o "$work/bin/" ./cmd/tandem ./cmd/tandem-bench
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain --untracked-files=no 2>/dev/null | head -c1)
[[ -z $dirty ]] || commit+="+dirty"

admin_key=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
jwt_secret=$(head -c 32 /dev/urandom | base64)
cluster_key=$(head -c 32 /dev/urandom | base64)

# ---------------------------------------------------------------- PostgreSQL
pg_url=  # postgres://tandem@127.0.0.1:<port>/ without the database
pg_port=

start_postgres() {
	[[ -z $pg_url ]] || return 0
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
	if [[ -z $pg_bin ]] && command -v initdb >/dev/null; then
		pg_bin=$(dirname "$(command -v initdb)")
	fi
	[[ -n $pg_bin && -x $pg_bin/initdb ]] || die "PostgreSQL server binaries not found (apt-get install postgresql)"
	if [[ $(id -u) == 0 ]]; then
		# initdb and postgres refuse to run as root.
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
	# Loopback only; durable commits (the defaults, spelled out).
	local opts="-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories=$work/pgsock"
	opts+=" -c fsync=on -c synchronous_commit=on -c max_connections=200 -c track_wal_io_timing=on"
	[[ ${PGSS:-} != 1 ]] || opts+=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
	"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/postgres.log" -w -t 30 -o "$opts" \
		start >/dev/null || { cat "$work/postgres.log" >&2; die "PostgreSQL did not start"; }
	pg_pid=$(head -1 "$work/pg/postmaster.pid")
	pg_url="postgres://tandem@127.0.0.1:$pg_port/"
	psql -c "CREATE ROLE tandem LOGIN" >/dev/null
	say "PostgreSQL $(psql -c 'SHOW server_version') on 127.0.0.1:$pg_port, pid $pg_pid (fsync $(psql -c 'SHOW fsync'), synchronous_commit $(psql -c 'SHOW synchronous_commit'))"
}

psql() {
	"${as_pg[@]}" "$pg_bin/psql" -h "$work/pgsock" -p "$pg_port" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"
}

# new_database prints the store URL of a fresh database.
new_database() {
	psql -c "CREATE DATABASE $1 OWNER tandem" >/dev/null
	[[ ${PGSS:-} != 1 ]] || psql -d "$1" -c "CREATE EXTENSION pg_stat_statements" >/dev/null
	echo "${pg_url}$1?sslmode=disable"
}

# pg_statements prints database $1's busiest statements (PGSS=1).
pg_statements() {
	psql -F ' | ' -d "$1" -c "SELECT calls, round(mean_exec_time::numeric, 3) AS mean_ms,
		round(total_exec_time::numeric) AS total_ms, rows,
		left(regexp_replace(query, '\s+', ' ', 'g'), 100)
		FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
		WHERE d.datname = '$1' ORDER BY total_exec_time DESC LIMIT 10"
}

# pg_counters prints PostgreSQL's counters for database $1: transactions
# committed, WAL syncs (fsyncs), their total time in ms, WAL bytes.
pg_counters() {
	psql -F ' ' -c "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = '$1'),
		wal_sync, round(wal_sync_time), wal_bytes FROM pg_stat_wal"
}

# ---------------------------------------------------------------- nodes
ws_urls=() api_urls=() cpu_pids=()

# start_nodes N STORE starts N nodes on STORE (badger or a URL) and waits
# until each is ready and sees all N members.
start_nodes() {
	local n=$1 store=$2 i j
	local -a gossip=() remote=() ws=() api=()
	ws_urls=() api_urls=() cpu_pids=()
	for ((i = 0; i < n; i++)); do
		ws+=("$(free_port)") api+=("$(free_port)") remote+=("$(free_port)") gossip+=("$(free_port)")
	done
	for ((i = 0; i < n; i++)); do
		local -a args=(
			--data-dir "$work/$scenario/node$i"
			--ws-addr "127.0.0.1:${ws[i]}"
			--api-addr "127.0.0.1:${api[i]}"
			--remote-addr "127.0.0.1:${remote[i]}"
			--gossip-addr "127.0.0.1:${gossip[i]}"
			--store "$store"
			--admin-key "$admin_key"
			--jwt-secret "$jwt_secret"
			--log-level warn
			--max-frame-rate -1 # a bench device sends far more than 1,000 frames/s
		)
		if ((n > 1)); then
			local seeds=()
			for ((j = 0; j < n; j++)); do
				((j == i)) || seeds+=("127.0.0.1:${gossip[j]}")
			done
			args+=(--seeds "$(
				IFS=,
				echo "${seeds[*]}"
			)" --cluster-key "$cluster_key")
		fi
		mkdir -p "$work/$scenario/node$i"
		"$work/bin/tandem" "${args[@]}" >"$work/$scenario/node$i.log" 2>&1 &
		node_pids+=($!)
		ws_urls+=("ws://127.0.0.1:${ws[i]}/ws")
		api_urls+=("http://127.0.0.1:${api[i]}")
		cpu_pids+=("node$i=$!")
	done
	for ((i = 0; i < n; i++)); do
		local ok=false members=
		for _ in $(seq 1 300); do # 60 s
			if ! kill -0 "${node_pids[i]}" 2>/dev/null; then
				tail -n 30 "$work/$scenario/node$i.log" >&2
				die "$scenario: node $i exited (log above)"
			fi
			if curl -fsS -o /dev/null "${api_urls[i]}/readyz" 2>/dev/null; then
				members=$(curl -fsS "${api_urls[i]}/metrics" 2>/dev/null | awk '$1 == "tandem_cluster_members" {print $2}')
				if [[ ${members:-1} == "$n" ]]; then
					ok=true
					break
				fi
			fi
			nap 0.2
		done
		if ! $ok; then
			tail -n 30 "$work/$scenario/node$i.log" >&2
			say "node $i /readyz: $(curl -sS "${api_urls[i]}/readyz" 2>&1); members: ${members:-?}"
			die "$scenario: node $i not ready with $n members within 60 s"
		fi
	done
	say "$scenario: $n node(s) ready: pids ${node_pids[*]}"
}

# node_counters prints counters summed over the nodes: the store's
# commits (group commits, one fsync or one PostgreSQL COMMIT each), ops
# (appends and activations made durable) and failed appends; the
# courier's drops (actor-to-actor messages dropped, re-driven by the
# outbox) and user activations. With a folder, it also saves each node's
# /metrics there.
node_counters() {
	local i
	for ((i = 0; i < ${#api_urls[@]}; i++)); do
		if [[ -n ${1:-} ]]; then
			curl -fsS "${api_urls[i]}/metrics" 2>/dev/null | tee "$1/node$i.metrics" || true
		else
			curl -fsS "${api_urls[i]}/metrics" 2>/dev/null || true
		fi
	done | awk '
		$1 == "tandem_store_commits_total" { c += $2 }
		$1 == "tandem_store_ops_total" { o += $2 }
		$1 == "tandem_store_failed_total" { f += $2 }
		$1 == "tandem_courier_drops_total" { d += $2 }
		$1 == "tandem_user_activations_total" { a += $2 }
		END { printf "%d %d %d %d %d\n", c, o, f, d, a }'
}

# ---------------------------------------------------------------- runs
mkdir -p "$OUT"
failed=()
join() {
	local IFS=,
	echo "$*"
}

for scenario in "${scenarios[@]}"; do
	say ""
	say "=== $scenario (load average $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo ?))"
	mkdir -p "$work/$scenario"
	case $scenario in
	single-badger) start_nodes 1 badger ;;
	single-postgres)
		start_postgres
		start_nodes 1 "$(new_database tandem_single)"
		;;
	cluster*-postgres)
		start_postgres
		start_nodes "$NODES" "$(new_database "tandem_cluster$NODES")"
		;;
	esac
	if [[ $scenario == *postgres ]]; then cpu_pids+=("postgres=$pg_pid"); fi
	db=
	case $scenario in
	single-postgres) db=tandem_single ;;
	cluster*-postgres) db=tandem_cluster$NODES ;;
	esac
	if [[ -n $db ]]; then
		read -r xact0 syncs0 synct0 walb0 < <(pg_counters "$db")
		[[ ${PGSS:-} != 1 ]] || psql -d "$db" -c "SELECT pg_stat_statements_reset()" >/dev/null
	fi
	read -r commits0 ops0 failed0 drops0 act0 < <(node_counters)
	rc=0
	"$work/bin/tandem-bench" -ws "$(join "${ws_urls[@]}")" -api "$(join "${api_urls[@]}")" -admin-key "$admin_key" \
		-pairs "$PAIRS" ${WINDOW:+-window "$WINDOW"} -size "$SIZE" -warmup "$WARMUP" -duration "$DURATION" \
		-cpu-pids "$(join "${cpu_pids[@]}")" -json "$OUT/$scenario.json" ${BENCH_ARGS:-} >"$work/$scenario/bench.out" 2>&1 &
	bench_pid=$!
	wait "$bench_pid" || rc=$?
	bench_pid=
	read -r commits1 ops1 failed1 drops1 act1 < <(node_counters "$work/$scenario")
	commits=$((commits1 - commits0)) ops=$((ops1 - ops0)) store_failed=$((failed1 - failed0))
	courier_drops=$((drops1 - drops0)) activations=$((act1 - act0))
	pg_json=null
	if [[ -n $db ]]; then
		# Backends report their statistics at most once a second, and an
		# idle one within about ten.
		nap 11
		read -r xact1 syncs1 synct1 walb1 < <(pg_counters "$db")
		pg_json=$(jq -n --argjson x $((xact1 - xact0)) --argjson s $((syncs1 - syncs0)) \
			--argjson t $((synct1 - synct0)) --argjson b $((walb1 - walb0)) \
			'{xact_commits: $x, wal_syncs: $s, wal_sync_ms_total: $t, wal_sync_ms_mean: (if $s > 0 then ($t / $s * 1000 | round) / 1000 else null end), wal_bytes: $b}')
	fi
	{
		echo "# bench/cluster.sh $scenario: commit $commit, $(date -u +%FT%TZ)"
		echo "# over the whole bench run, all nodes: store $commits commits, $ops ops, $store_failed failed; courier drops $courier_drops; user activations $activations"
		echo "# PostgreSQL: $(jq -c . <<<"$pg_json")"
		cat "$work/$scenario/bench.out"
		if [[ -n $db && ${PGSS:-} == 1 ]]; then
			echo
			echo "PostgreSQL statements by total time (pg_stat_statements, whole bench run): calls | mean ms | total ms | rows | query"
			pg_statements "$db"
		fi
	} | tee "$OUT/$scenario.txt"
	if [[ -f $OUT/$scenario.json ]]; then
		# The store counters cover the whole bench run (set-up, warm-up,
		# window, drain), summed over the nodes; record them beside the
		# window's figures.
		jq --argjson c "$commits" --argjson o "$ops" --argjson f "$store_failed" --arg commit "$commit" --arg s "$scenario" \
			--argjson pg "$pg_json" --argjson d "$courier_drops" --argjson a "$activations" \
			'.scenario = $s | .server_commit = $commit | .store_whole_run = {commits: $c, ops: $o, failed: $f}
			| .nodes_whole_run = {courier_drops: $d, user_activations: $a} | .postgres_whole_run = $pg' \
			"$OUT/$scenario.json" >"$work/tmp.json" && mv "$work/tmp.json" "$OUT/$scenario.json"
	fi
	for f in "$work/$scenario"/node*.metrics; do
		[[ -f $f ]] && cp "$f" "$OUT/$scenario.$(basename "$f")"
	done
	if ((rc != 0)); then
		failed+=("$scenario (bench exit status $rc)")
		for ((i = 0; i < ${#node_pids[@]}; i++)); do
			say "--- $scenario node $i log (tail)"
			tail -n 20 "$work/$scenario/node$i.log" >&2 || true
		done
	fi
	if grep -qv '^$' "$work/$scenario"/node*.log 2>/dev/null; then
		say "$scenario: the nodes logged warnings or errors:"
		grep -h . "$work/$scenario"/node*.log | cut -c1-300 | sort | uniq -c | sort -rn | head -n 10 >&2
	fi
	stop_nodes
done

# ---------------------------------------------------------------- table
say ""
{
	printf 'scenario\tacked/s\tdelivered/s\tack p50/p99 ms\tdeliver p50/p99 ms\tlost\tunacked\terrors\tdrops/reconn.\tops/commit\tpg fsync ms\tcpu bench/nodes/pg/other\n'
	for scenario in "${scenarios[@]}"; do
		f=$OUT/$scenario.json
		[[ -f $f ]] || { printf '%s\t(no result)\n' "$scenario"; continue; }
		jq -r --arg s "$scenario" '
			def r(n): (. * pow(10; n) | round) / pow(10; n);
			def tree(p): [.cpu.watched[]? | select(.label | startswith(p)) | .cores] | add // 0 | r(2);
			[$s,
			 (.throughput.acked_per_second | round),
			 (.throughput.delivered_per_second | round),
			 "\(.send_to_ack_ms.p50 | r(1)) / \(.send_to_ack_ms.p99 | r(1))",
			 "\(.send_to_deliver_ms.p50 | r(1)) / \(.send_to_deliver_ms.p99 | r(1))",
			 (.measured_messages | if .lost > 0 then "\(.lost) (late \(.late // "?"), missing \(.missing // "?"))" else .lost end),
			 .measured_messages.unacked,
			 (.problems | .send_errors + .client_errors + .kicks + .stopped_clients),
			 (.problems | "\(.reconnect_drops)/\(.reconnects)"),
			 (.store_whole_run | if .commits > 0 then (.ops / .commits | r(1)) else "-" end),
			 (.postgres_whole_run.wal_sync_ms_mean // "-" | if type == "number" then r(2) else . end),
			 "\(.cpu.process_cores | r(2)) / \(tree("node")) / \(tree("postgres")) / \(.cpu.other_cores // 0 | r(2))"
			] | @tsv' "$f"
	done
} | if command -v column >/dev/null; then column -t -s $'\t'; else cat; fi

if ((${#failed[@]})); then
	say ""
	say "failed: ${failed[*]}"
	exit 1
fi
