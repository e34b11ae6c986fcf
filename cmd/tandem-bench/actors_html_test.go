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
	if !strings.Contains(page, "0 of 0 acked messages missing, 3 of 1000 logins missing") || !strings.Contains(page, "NOT SOUND") {
		t.Error("the ledger's verdict or the unsound mark is missing")
	}
	if strings.Contains(page, "<script>") {
		t.Error("a problem's text reached the page unescaped")
	}
}
