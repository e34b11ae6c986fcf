package main

import (
	"strings"
	"testing"
)

// The report draws what the result holds: one polyline point per second
// of progress for each line, the percentile bars of the latencies that
// were measured, the ledger's verdict, and problems escaped.
func TestActorsHTMLReport(t *testing.T) {
	r := &ActorsResult{}
	r.Config.Users, r.Config.Devices, r.Config.Platforms = 1000, 1, []string{"android"}
	r.Logins.Devices, r.Logins.OK, r.Logins.UsersActivated = 1000, 1000, 1000
	r.Logins.Latency = Latency{Count: 1000, P50: 5, P90: 9, P99: 20, Max: 41}
	r.Ledger = &LedgerCheck{Logins: 1000, LoginsMissing: 3}
	for i := range 7 {
		r.Series = append(r.Series, ActorsPoint{Seconds: float64(i + 1), Users: uint64(150 * (i + 1)), LoginsPerSecond: 150, LoginP99Ms: 20})
	}
	r.Problems = []string{`3 logins missing <script>alert(1)</script>`}

	var b strings.Builder
	if err := renderActorsHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 4 {
		t.Errorf("%d charts, want 4 (throughput, users, p99, percentiles)", n)
	}
	// Each line of each time chart has one point per second (5 lines).
	lines := strings.Split(page, `points="`)[1:]
	if len(lines) != 5 {
		t.Fatalf("%d polylines, want 5", len(lines))
	}
	for _, l := range lines {
		if pts := strings.Fields(l[:strings.IndexByte(l, '"')]); len(pts) != 7 {
			t.Errorf("a polyline with %d points, want 7: %q", len(pts), pts)
		}
	}
	// Only the login latency was measured: its four bars, no chat bars.
	if !strings.Contains(page, "login (1000)") || strings.Contains(page, "send→ack (") {
		t.Error("percentile rows are not the measured latencies")
	}
	if !strings.Contains(page, ">41.0<") {
		t.Error("the max login latency is not labelled")
	}
	if !strings.Contains(page, "3 of 1000 logins missing") || !strings.Contains(page, "NOT SOUND") {
		t.Error("the ledger's verdict or the unsound mark is missing")
	}
	if strings.Contains(page, "<script>") {
		t.Error("a problem's text reached the page unescaped")
	}
}

// With groups, mark-reads and recalls the report carries each kind: its
// summary row and percentile bars, a throughput line per kind, the
// fan-out's p99 line and its own chart of member-log entries per second.
func TestActorsHTMLKinds(t *testing.T) {
	r := &ActorsResult{}
	r.Config = ActorsConfig{Users: 300, Devices: 1, Platforms: []string{"linux"}, MsgRate: 1, Groups: 3, GroupSizes: []int{100}, GroupShare: 0.5, ReadShare: 0.1, RecallShare: 0.05}
	r.Chat.Sent, r.Chat.Acked = 800, 800
	for k, n := range []uint64{400, 400, 100, 50} {
		r.Kinds = append(r.Kinds, KindResult{Kind: kindNames[k], Sent: n, Acked: n, Ack: Latency{Count: n, P50: 1, P90: 2, P99: float64(3 + k), Max: float64(10 + k)}})
	}
	r.Groups = GroupResult{Groups: 3, Sizes: []int{100}, Memberships: 300, MemberEntries: 40000, MemberEntriesPerSecond: 12345,
		MemberPush: Latency{Count: 40000, P99: 20, Max: 30}, LastMemberPush: Latency{Count: 400, P99: 25, Max: 31}}
	r.Ledger = &LedgerCheck{Messages: 40400, GroupMessages: 400, Recalls: 120, Reads: 90}
	for i := range 4 {
		r.Series = append(r.Series, ActorsPoint{Seconds: float64(i + 1), MsgsPerSecond: 200, DirectPerSecond: 100, GroupPerSecond: 100,
			ReadsPerSecond: 25, RecallsPerSecond: 12, MemberEntriesPerSecond: 10000, FanoutP99Ms: 25})
	}
	var b strings.Builder
	if err := renderActorsHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 5 {
		t.Errorf("%d charts, want 5 (throughput, users, p99, fan-out, percentiles)", n)
	}
	// logins, msgs, 4 kinds; users; login, ack, fan-out p99; member entries.
	if n := strings.Count(page, "<polyline"); n != 11 {
		t.Errorf("%d polylines, want 11", n)
	}
	for _, want := range []string{
		">group/s<", ">reads/s<", ">recalls/s<", ">group send→last member push p99<", ">member-log entries/s<",
		"group →ack (400)", "read →ack (100)", "recall →ack (50)", "group→last member (400)", ">31.0<",
		"40000 member-log entries, 12345/s", "10 % mark-reads, 5 % recalls; 50 % of the sends to groups; 3 groups of 100 members",
		"0 of 40400 copies of acked messages missing (400 group messages), 0 duplicated; 0 of 120 recalls, 0 of 90 read positions",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("%q missing", want)
		}
	}
}

// A run with a reconnect wave: its summary row, a chart of the devices
// kicked and back online, and on every time chart a marked line at the
// kill, the first kick and the last device back (inside the time axis).
func TestActorsHTMLWave(t *testing.T) {
	r := &ActorsResult{}
	r.Config = ActorsConfig{Users: 30, Devices: 1, Platforms: []string{"linux"}, MsgRate: 1}
	r.Chat.Sent, r.Chat.Acked = 300, 300
	r.Wave = &WaveResult{KilledPID: 4242, KillAtSeconds: 3.2, Kicked: 10, ReloginsOK: 10, FirstKickSeconds: 5.1, LastBackSeconds: 6.4, Seconds: 1.3,
		Relogin: Latency{Count: 10, P50: 200, P99: 900, Max: 950}}
	for i := range 9 {
		p := ActorsPoint{Seconds: float64(i + 1), MsgsPerSecond: 30}
		if i >= 5 {
			p.Kicked, p.BackOnline = 10, 10
		}
		r.Series = append(r.Series, p)
	}
	var b strings.Builder
	if err := renderActorsHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	charts := strings.Count(page, "<h2>") - strings.Count(page, "<h2>Latency percentiles")
	for _, want := range []string{"Reconnect wave: devices kicked", ">kicked<", ">back online<", "PID 4242 killed at 3.2 s", "10 devices kicked (may reconnect), 10 back online"} {
		if !strings.Contains(page, want) {
			t.Errorf("%q missing", want)
		}
	}
	for _, mark := range []string{">kill PID 4242<", ">first kick<", ">last back online<"} {
		if n := strings.Count(page, mark); n != charts {
			t.Errorf("%q on %d of %d charts", mark, n, charts)
		}
	}
	// On a 10 s axis (9 s rounded up), the kill at 3.2 s is at 60 + 680 × 0.32.
	if !strings.Contains(page, `x1="277.6"`) {
		t.Error("the kill's line is not at 3.2 s")
	}
}

// TestHeapFiguresText: a heap that grew gives bytes per user; one that
// did not says so rather than print 0 B.
func TestHeapFiguresText(t *testing.T) {
	grew := HeapFigures{HeapBaseline: 50 << 20, HeapAfterLogins: 60 << 20, PerUserBytes: 1048.6}
	if got := grew.text("login"); got != "50.0 MiB before, 60.0 MiB after the logins: 1049 B per user" {
		t.Errorf("grown: %q", got)
	}
	fell := HeapFigures{HeapBaseline: 57 << 20, HeapAfterLogins: 55 << 20}
	if got := fell.text("activation"); !strings.HasPrefix(got, "57.0 MiB before, 55.0 MiB after the activations: no figure per user") {
		t.Errorf("fallen: %q", got)
	}
}
