package procmem

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	m, err := Parse([]byte("Name:\ttandem\nVmRSS:\t  2048 kB\nRssAnon:\t  1024 kB\nRssFile:\t 1000 kB\nRssShmem:\t0 kB\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 2048<<10 || m.RSSAnon != 1024<<10 || m.RSSFile != 1000<<10 {
		t.Errorf("%+v", m)
	}
	if _, err := Parse([]byte("VmRSS:\t1 kB\n")); err == nil {
		t.Error("no error for a status without RssAnon")
	}
}

// This process's own status parses, with a resident set.
func TestReadSelf(t *testing.T) {
	m, err := Read(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.RSSAnon <= 0 || m.RSS < m.RSSAnon {
		t.Errorf("%+v", m)
	}
}
