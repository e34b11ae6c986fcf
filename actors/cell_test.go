package actors

import (
	"testing"
	"unsafe"
)

// TestUserCells: the mailbox asked for after an actor is that actor's
// cell's; one asked for with no actor before it (a second, or a restart
// that spawned nothing) is a fresh one, never a mailbox handed out twice.
func TestUserCells(t *testing.T) {
	var c userCells
	rt := &Runtime{}
	a := c.actor(rt).(*userActor)
	mb := c.mailbox().(*leanMailbox)
	cell := (*userCell)(unsafe.Pointer(a))
	if a.rt != rt || mb != &cell.mb {
		t.Fatalf("the mailbox after an actor is not its cell's (actor %p, mailbox %p, cell's %p)", a, mb, &cell.mb)
	}
	if again := c.mailbox().(*leanMailbox); again == mb {
		t.Fatal("a mailbox handed out twice")
	}
	// Two actors before a mailbox (spawns interleaved, or a restart): the
	// mailbox is the latest cell's, and the next one is fresh.
	c.actor(rt)
	b := c.actor(rt).(*userActor)
	if got := c.mailbox().(*leanMailbox); got != &(*userCell)(unsafe.Pointer(b)).mb {
		t.Fatal("the mailbox is not the latest cell's")
	}
	if got := c.mailbox().(*leanMailbox); got == &(*userCell)(unsafe.Pointer(b)).mb {
		t.Fatal("the latest cell's mailbox handed out twice")
	}
}

// TestHotObjectSizes: a session and a user's cell stay in size classes a
// login's short-lived objects hardly use (288 and 480 bytes; in the
// 256-byte class a session shared its spans with them, and with separate
// objects for its login ID and a cell's mailbox the collector marked a
// million online users slower: bench/README.md). A field added must keep
// them there, or move them to another class measured to be as quiet.
func TestHotObjectSizes(t *testing.T) {
	if n := unsafe.Sizeof(session{}); n > 288 {
		t.Errorf("session is %d bytes, more than its 288-byte class", n)
	}
	if n := unsafe.Sizeof(userCell{}); n > 480 {
		t.Errorf("userCell is %d bytes, more than its 480-byte class", n)
	}
}

// TestClassIndex: every class a platform maps to survives its one-byte
// form, and "" (no class) is index 0.
func TestClassIndex(t *testing.T) {
	if indexOf("") != 0 || classIndex(0).class() != "" {
		t.Fatal(`"" is not index 0`)
	}
	for p, c := range platformClass {
		if got := indexOf(c).class(); got != c {
			t.Errorf("platform %s: class %q comes back as %q", p, c, got)
		}
	}
}
