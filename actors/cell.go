package actors

import (
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"
)

// userCell is a user actor and its mailbox in one object: they live and
// die together (an activation), and one object of 480 bytes instead of
// two is one fewer for the collector to mark per activated user, in a
// size class a login's short-lived objects do not use (bench/README.md,
// "One object for a user actor and its mailbox; quiet size classes").
type userCell struct {
	a  userActor
	mb leanMailbox
}

// userCells pairs the actor and the mailbox protoactor asks for one after
// the other when it spawns: its spawner makes the actor (Props' producer)
// and then, on the same goroutine, the mailbox (Props' mailbox producer).
// The producer leaves its cell's mailbox in next; the mailbox producer
// takes it. The pairing only decides which object a mailbox lives in:
// should two spawns interleave, or a restart make an actor with no spawn
// after it, a mailbox takes another cell's slot or a fresh one, and at
// worst a cell's unused mailbox (112 bytes) lives as long as its actor.
type userCells struct {
	next atomic.Pointer[leanMailbox]
}

// actor is the user kind's producer.
func (c *userCells) actor(rt *Runtime) actor.Actor {
	cell := &userCell{a: userActor{rt: rt}}
	c.next.Store(&cell.mb)
	return &cell.a
}

// mailbox is the user kind's mailbox producer.
func (c *userCells) mailbox() actor.Mailbox {
	if mb := c.next.Swap(nil); mb != nil {
		return mb
	}
	return newLeanMailbox()
}
