package node

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tandem-im/tandem/api/webhook"
	"github.com/tandem-im/tandem/gateway"
)

// statsCollector exports the gateway's and the store's own counters at
// scrape time (neither package depends on Prometheus).
type statsCollector struct {
	gw     *gateway.Server
	store  func() storeStats
	health storeHealth // nil: no disk guard (PostgreSQL)
}

var (
	descSessions   = prometheus.NewDesc("tandem_gateway_sessions", "Open WebSocket sessions on this node.", nil, nil)
	descLoggedIn   = prometheus.NewDesc("tandem_gateway_logged_in_sessions", "Sessions past Login.", nil, nil)
	descAccepted   = prometheus.NewDesc("tandem_gateway_accepted_total", "TCP connections accepted.", nil, nil)
	descUpgraded   = prometheus.NewDesc("tandem_gateway_upgraded_total", "WebSocket upgrades completed.", nil, nil)
	descInHandshk  = prometheus.NewDesc("tandem_gateway_handshakes", "Connections in their TLS and WebSocket handshake now (at --max-handshakes, new ones wait in the listen backlog).", nil, nil)
	descHandshake  = prometheus.NewDesc("tandem_gateway_handshake_failures_total", "Failed TLS and WebSocket handshakes (refused, garbage, timed out).", nil, nil)
	descFramesIn   = prometheus.NewDesc("tandem_gateway_frames_in_total", "Frames read from clients.", nil, nil)
	descFramesOut  = prometheus.NewDesc("tandem_gateway_frames_out_total", "Frames written to clients.", nil, nil)
	descSlow       = prometheus.NewDesc("tandem_gateway_slow_consumers_total", "Sessions closed because their write queue stayed full.", nil, nil)
	descWriteErr   = prometheus.NewDesc("tandem_gateway_write_errors_total", "Socket write failures.", nil, nil)
	descProtoErr   = prometheus.NewDesc("tandem_gateway_protocol_errors_total", "WebSocket protocol violations by clients.", nil, nil)
	descErrors     = prometheus.NewDesc("tandem_gateway_error_frames_total", "Error frames sent, by catalogue name.", []string{"name"}, nil)
	descCloses     = prometheus.NewDesc("tandem_gateway_closes_total", "Sessions closed, by WebSocket close code.", []string{"code"}, nil)
	descInflight   = prometheus.NewDesc("tandem_gateway_sends_in_flight", "Sends handed to the actors and not answered yet (bounded: --max-node-sends).", nil, nil)
	descInBytes    = prometheus.NewDesc("tandem_gateway_send_bytes_in_flight", "Payload bytes of the sends in flight (bounded: --max-node-send-bytes).", nil, nil)
	descRefused    = prometheus.NewDesc("tandem_gateway_sends_refused_total", "Sends answered RATE_LIMITED because the session, the node or the heap was at its bound.", nil, nil)
	descFrameRate  = prometheus.NewDesc("tandem_gateway_frames_rate_limited_total", "Client messages over their session's frame rate (--max-frame-rate): data answered RATE_LIMITED, pings ignored.", nil, nil)
	descPressure   = prometheus.NewDesc("tandem_gateway_memory_pressure", "1 while the live heap is above 70 % of GOMEMLIMIT (new sends are refused).", nil, nil)
	descCommits    = prometheus.NewDesc("tandem_store_commits_total", "Store transactions committed (one fsync each).", nil, nil)
	descOps        = prometheus.NewDesc("tandem_store_ops_total", "Appends and activations made durable.", nil, nil)
	descEntries    = prometheus.NewDesc("tandem_store_entries_total", "Sync-log entries made durable.", nil, nil)
	descFailed     = prometheus.NewDesc("tandem_store_failed_total", "Appends and activations that failed.", nil, nil)
	descQueued     = prometheus.NewDesc("tandem_store_queued", "Appends waiting for the committer.", nil, nil)
	descLastCommit = prometheus.NewDesc("tandem_store_last_commit_ops", "Appends in the latest group commit.", nil, nil)
	descCommitFail = prometheus.NewDesc("tandem_store_commit_failures_total", "Store commits that failed (a write or fsync error); the first one fails the store and stops the node.", nil, nil)
	descDiskFree   = prometheus.NewDesc("tandem_store_disk_free_bytes", "Free bytes on the data dir's file system (as an unprivileged writer sees them), as of the disk guard's last look (every 250 ms at most).", nil, nil)
	descDiskTotal  = prometheus.NewDesc("tandem_store_disk_total_bytes", "Size of the data dir's file system.", nil, nil)
	descDiskResv   = prometheus.NewDesc("tandem_store_disk_reserve_bytes", "Free bytes the store keeps (--disk-reserve): below them it refuses writes.", nil, nil)
	descDiskFull   = prometheus.NewDesc("tandem_store_disk_full_refusals_total", "Appends and activations the store refused because the disk was below the reserve.", nil, nil)
	descStoreState = prometheus.NewDesc("tandem_store_state", "1 for the store's current state: ok, disk_full (writes refused until space is freed) or failed (a write or sync failed; the node stops).", []string{"state"}, nil)
)

func (c statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descLoggedIn, descAccepted, descUpgraded, descInHandshk, descHandshake,
		descFramesIn, descFramesOut, descSlow, descWriteErr, descProtoErr, descErrors, descCloses,
		descInflight, descInBytes, descRefused, descFrameRate, descPressure,
		descCommits, descOps, descEntries, descFailed, descQueued, descLastCommit,
		descCommitFail, descDiskFree, descDiskTotal, descDiskResv, descDiskFull, descStoreState} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	g := c.gw.Stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descSessions, float64(g.Sessions))
	gauge(descLoggedIn, float64(g.LoggedIn))
	counter(descAccepted, g.Accepted)
	counter(descUpgraded, g.Upgraded)
	gauge(descInHandshk, float64(g.Handshakes))
	counter(descHandshake, g.HandshakeFailures)
	counter(descFramesIn, g.FramesIn)
	counter(descFramesOut, g.FramesOut)
	counter(descSlow, g.SlowConsumers)
	counter(descWriteErr, g.WriteErrors)
	counter(descProtoErr, g.ProtocolErrors)
	gauge(descInflight, float64(g.SendsInFlight))
	gauge(descInBytes, float64(g.SendBytesInFlight))
	counter(descRefused, g.SendsRefused)
	counter(descFrameRate, g.FramesRateLimited)
	pressure := 0.0
	if g.MemoryPressure {
		pressure = 1
	}
	gauge(descPressure, pressure)
	for code, n := range g.Errors {
		counter(descErrors, n, code.Name())
	}
	for code, n := range g.Closes {
		counter(descCloses, n, strconv.Itoa(code))
	}
	s := c.store()
	counter(descCommits, s.Commits)
	counter(descOps, s.Ops)
	counter(descEntries, s.Entries)
	counter(descFailed, s.Failed)
	gauge(descQueued, float64(s.Queued))
	gauge(descLastCommit, float64(s.LastCommitOps))
	if c.health == nil {
		return
	}
	counter(descCommitFail, s.CommitFailures)
	d := c.health.Disk()
	gauge(descDiskFree, float64(d.Free))
	gauge(descDiskTotal, float64(d.Total))
	gauge(descDiskResv, float64(d.Reserve))
	counter(descDiskFull, d.Refused)
	state := "ok"
	switch {
	case c.health.Err() != nil:
		state = "failed"
	case d.Full:
		state = "disk_full"
	}
	for _, st := range []string{"ok", "disk_full", "failed"} {
		v := 0.0
		if st == state {
			v = 1
		}
		gauge(descStoreState, v, st)
	}
}

func registerHookMetrics(reg *prometheus.Registry, h *webhook.Sender) {
	for _, m := range []struct {
		name, help string
		get        func(webhook.Stats) uint64
	}{
		{"tandem_webhook_published_total", "Webhook events accepted for delivery.", func(s webhook.Stats) uint64 { return s.Published }},
		{"tandem_webhook_delivered_total", "Webhook events the app backend acknowledged.", func(s webhook.Stats) uint64 { return s.Delivered }},
		{"tandem_webhook_retried_total", "Webhook delivery retries.", func(s webhook.Stats) uint64 { return s.Retried }},
		{"tandem_webhook_dropped_total", "Webhook events dropped because the queue was full.", func(s webhook.Stats) uint64 { return s.Dropped }},
		{"tandem_webhook_failed_total", "Webhook events given up after every attempt or refused (4xx).", func(s webhook.Stats) uint64 { return s.Failed + s.Rejected }},
	} {
		get := m.get
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help}, func() float64 { return float64(get(h.Stats())) }))
	}
}
