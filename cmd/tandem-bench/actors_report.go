package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/tandem-im/tandem/persistence"
	"github.com/tandem-im/tandem/proto/actorpb"
	"github.com/tandem-im/tandem/proto/wire"
)

// ActorsResult is what one `tandem-bench actors` run measured.
type ActorsResult struct {
	Config      ActorsConfig `json:"config"`
	Machine     machineInfo  `json:"machine"`
	Interrupted bool         `json:"interrupted"` // Ctrl-C: the load stopped early, the rest was drained

	Logins struct {
		Devices        uint64  `json:"devices"`
		OK             uint64  `json:"ok"`
		Failed         uint64  `json:"failed"`
		Kicked         uint64  `json:"kicked"`
		UsersActivated uint64  `json:"users_activated"` // users whose first login succeeded (a fresh store: each an actor start and a store activation)
		Seconds        float64 `json:"seconds"`
		PerSecond      float64 `json:"per_second"`
		// Over the first and the last tenth of the logins.
		FirstTenthPerSecond float64 `json:"first_tenth_per_second"`
		LastTenthPerSecond  float64 `json:"last_tenth_per_second"`
		// Over each tenth of the logins in turn: the ramp at every point
		// (a tenth whose logins all ended in one instant: 0).
		TenthsPerSecond []float64 `json:"tenths_per_second"`
		Latency         Latency   `json:"latency"`
	} `json:"logins"`

	Memory HeapFigures `json:"memory"`

	// Chat: the messages, 1:1 and group together.
	Chat struct {
		Seconds        float64 `json:"seconds"`
		Sent           uint64  `json:"sent"`
		Skipped        uint64  `json:"skipped"` // the sender's device was not online
		Acked          uint64  `json:"acked"`
		Refused        uint64  `json:"refused"`          // answered with an error
		Unacked        uint64  `json:"unacked"`          // neither by the end of the drain
		AckedPerSecond float64 `json:"acked_per_second"` // from the chat's start to the last ack (drain included)
		// WorstLatenessMs: the furthest behind its schedule the sender
		// loop sent a message (the bench's own limit, if large).
		WorstLatenessMs float64 `json:"worst_lateness_ms"`
		// WorstFrameWaitMs: the longest one frame took to hand to the
		// actors (Frontend.Frame waits for a user's lookup or activation):
		// the devices queued behind it on its sender waited as long.
		WorstFrameWaitMs float64 `json:"worst_frame_wait_ms"`
		// Pushes of the messages to their recipients' devices: Expected is
		// acked × devices; FullyPushed messages reached every one.
		PushesExpected  uint64  `json:"pushes_expected"`
		Pushes          uint64  `json:"pushes"`
		FullyPushed     uint64  `json:"fully_pushed"`
		DuplicatePushes uint64  `json:"duplicate_pushes"`
		Carbons         uint64  `json:"carbons"`
		Foreign         uint64  `json:"foreign"` // frames that matched no message of the ledger
		Ack             Latency `json:"ack"`     // scheduled send → SendAck
		Push            Latency `json:"push"`    // scheduled send → Push at a recipient device
		// Recalled: messages a recall was sent for; their pushes are not
		// counted above (the recall can beat a delivery).
		Recalled uint64 `json:"recalled"`
		// Repeats: entries a device got again at or below its cursor (a
		// login's catch-up and a live push both carried them), dropped.
		Repeats uint64 `json:"repeats"`
	} `json:"chat"`

	// Wave: devices kicked with may_reconnect logging in again (nil: no
	// such kick and no -kill-pid); actors_wave.go.
	Wave *WaveResult `json:"wave,omitempty"`

	// Passivation: the wave of -passivate (nil: none); actors_passivate.go.
	Passivation *PassivationResult `json:"passivation,omitempty"`

	// Kinds: each kind of action on its own (1:1, group, read, recall).
	Kinds  []KindResult `json:"kinds"`
	Groups GroupResult  `json:"groups"`

	Ledger   *LedgerCheck      `json:"ledger,omitempty"` // nil: -no-verify
	Errors   map[string]uint64 `json:"errors,omitempty"`
	Series   []ActorsPoint     `json:"series"`
	Problems []string          `json:"problems,omitempty"`
}

// KindResult is one kind of action.
type KindResult struct {
	Kind    string `json:"kind"` // 1:1, group, read, recall or logout
	Sent    uint64 `json:"sent"`
	Skipped uint64 `json:"skipped"` // the device was offline, or (read, recall) there was nothing to read or recall yet
	Acked   uint64 `json:"acked"`   // SendAck, or Ok
	Refused uint64 `json:"refused"` // answered with an error
	Unacked uint64 `json:"unacked"` // neither by the end of the drain
	// AckedPerSecond: from the chat's start to this kind's last answer.
	AckedPerSecond float64 `json:"acked_per_second"`
	Ack            Latency `json:"ack"` // scheduled → SendAck or Ok; a logout: → logged in again
}

// GroupResult is the groups and the fan-out of their messages.
type GroupResult struct {
	Groups      int    `json:"groups"`
	Sizes       []int  `json:"sizes"`       // group g has Sizes[g % len] members
	Memberships uint64 `json:"memberships"` // the sum of the sizes
	// CreateSeconds: creating them through the group actors and their
	// CREATED events reaching every member device (EventPushes).
	CreateSeconds       float64 `json:"create_seconds"`
	EventPushes         uint64  `json:"event_pushes"`
	EventPushesExpected uint64  `json:"event_pushes_expected"`
	// Member pushes of acked group messages not recalled: each to every
	// device of every member, the sender's own included.
	MemberPushesExpected uint64 `json:"member_pushes_expected"`
	MemberPushes         uint64 `json:"member_pushes"`
	FullyPushed          uint64 `json:"fully_pushed"` // group messages pushed to every member device
	// MemberEntries: member pushes of all group messages ÷ devices per
	// user. A push follows the durable append to the member's log, so
	// this counts member-log entries written; per second from the first
	// group send to the last member push.
	MemberEntries          uint64  `json:"member_entries"`
	MemberEntriesPerSecond float64 `json:"member_entries_per_second"`
	MemberPush             Latency `json:"member_push"`      // scheduled send → push at a member device
	LastMemberPush         Latency `json:"last_member_push"` // scheduled send → push at its last member device
}

// ActorsPoint is one second of progress.
type ActorsPoint struct {
	Seconds                float64 `json:"t"`
	Users                  uint64  `json:"users"`
	LoginsPerSecond        uint64  `json:"logins_per_second"`
	MsgsPerSecond          uint64  `json:"msgs_per_second"` // acked messages, 1:1 and group
	DirectPerSecond        uint64  `json:"direct_per_second"`
	GroupPerSecond         uint64  `json:"group_per_second"`
	ReadsPerSecond         uint64  `json:"reads_per_second"`
	RecallsPerSecond       uint64  `json:"recalls_per_second"`
	LogoutsPerSecond       uint64  `json:"logouts_per_second"`
	Kicked                 uint64  `json:"kicked"`      // so far: devices kicked with may_reconnect
	BackOnline             uint64  `json:"back_online"` // so far: of them, logged in again
	MemberEntriesPerSecond uint64  `json:"member_entries_per_second"`
	Errors                 uint64  `json:"errors"`
	// The node's user actors (in process; a joined cluster's are not
	// seen): active at the point, passivated in the second before it.
	ActiveUsers           int64   `json:"active_users"`
	PassivationsPerSecond uint64  `json:"passivations_per_second"`
	LoginP99Ms            float64 `json:"login_p99_ms"`
	AckP99Ms              float64 `json:"ack_p99_ms"`    // messages
	FanoutP99Ms           float64 `json:"fanout_p99_ms"` // group send → last member push
}

// LedgerCheck is the end-of-run check against the store: every acked
// message in its recipients' logs exactly once (a 1:1 message in its
// recipient's, a group message in every member's, with its sender and
// message ID), an acked recall's RecallEvent in every log that gets the
// message (the sender's too) and that copy erased, an acked mark-read's
// position in the reader's log (ReadEvent) and stored conversation
// state, every successful login's LOGGED_IN device event in its user's
// log (a device logged in n times: n of them), every answered logout's
// LOGGED_OUT. A message stored twice — two entries with its message ID,
// or two message IDs with its content — counts as duplicated.
type LedgerCheck struct {
	Messages           uint64 `json:"messages"` // copies looked for
	MessagesMissing    uint64 `json:"messages_missing"`
	MessagesDuplicated uint64 `json:"messages_duplicated"`
	GroupMessages      uint64 `json:"group_messages"` // acked group messages (each looked for in every member's log)
	Recalls            uint64 `json:"recalls"`        // logs that must show an acked recall
	RecallsMissing     uint64 `json:"recalls_missing"`
	Reads              uint64 `json:"reads"` // (reader, conversation) positions acked
	ReadsMissing       uint64 `json:"reads_missing"`
	Logins             uint64 `json:"logins"`
	LoginsMissing      uint64 `json:"logins_missing"`
	Logouts            uint64 `json:"logouts"`
	LogoutsMissing     uint64 `json:"logouts_missing"`
	// -activate-only: users whose activation answered, and those of them
	// whose stored epoch is below the one their actor answered with.
	Activations        uint64   `json:"activations,omitempty"`
	ActivationsMissing uint64   `json:"activations_missing,omitempty"`
	ReadErrors         uint64   `json:"read_errors"`
	Examples           []string `json:"examples,omitempty"` // the first problems found
	Seconds            float64  `json:"seconds"`
}

// missing is everything acked the store did not show.
func (lc *LedgerCheck) missing() uint64 {
	return lc.MessagesMissing + lc.MessagesDuplicated + lc.RecallsMissing + lc.ReadsMissing + lc.LoginsMissing + lc.LogoutsMissing +
		lc.ActivationsMissing + lc.ReadErrors
}

func (r *ActorsResult) problems() int { return len(r.Problems) }

// verdict is the ledger check in one line.
func (lc *LedgerCheck) verdict() string {
	if lc.Activations > 0 {
		return fmt.Sprintf("%d of %d activations without their epoch in the store; %d read errors", lc.ActivationsMissing, lc.Activations, lc.ReadErrors)
	}
	return fmt.Sprintf("%d of %d copies of acked messages missing (%d group messages), %d duplicated; %d of %d recalls, %d of %d read positions, %d of %d logins missing, %d of %d logouts missing; %d read errors",
		lc.MessagesMissing, lc.Messages, lc.GroupMessages, lc.MessagesDuplicated, lc.RecallsMissing, lc.Recalls, lc.ReadsMissing, lc.Reads, lc.LoginsMissing, lc.Logins, lc.LogoutsMissing, lc.Logouts, lc.ReadErrors)
}

// fill copies the counters into res.
func (r *actorsRun) fill(res *ActorsResult, loginEnd, chatStart, chatEnd time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := &res.Logins
	l.Devices, l.OK, l.Failed, l.Kicked, l.UsersActivated = uint64(len(r.online)), r.logins, r.loginFails, r.kicks, r.users
	l.Seconds = loginEnd.Seconds()
	if l.Seconds > 0 {
		l.PerSecond = float64(r.logins) / l.Seconds
	}
	tenth := float64(len(r.online)) / 10
	if d := r.marks[10]; d > 0 {
		l.FirstTenthPerSecond = tenth / d.Seconds()
	}
	if d := r.marks[100] - r.marks[90]; r.marks[100] > 0 && r.marks[90] > 0 && d > 0 {
		l.LastTenthPerSecond = tenth / d.Seconds()
	}
	if r.marks[100] > 0 {
		l.TenthsPerSecond = make([]float64, 10)
		for k := range 10 {
			if d := r.marks[10*k+10] - r.marks[10*k]; d > 0 {
				l.TenthsPerSecond[k] = tenth / d.Seconds()
			}
		}
	}
	l.Latency = latency(&r.loginLat)

	c := &res.Chat
	c.Seconds = (chatEnd - chatStart).Seconds()
	direct, group := &r.kinds[kindDirect], &r.kinds[kindGroup]
	c.Sent, c.Skipped = direct.sent+group.sent, direct.skipped+group.skipped
	c.Acked, c.Refused = direct.acked+group.acked, direct.failed+group.failed
	c.Unacked = c.Sent - c.Acked - c.Refused
	if d := max(direct.lastAck, group.lastAck) - chatStart; c.Acked > 0 && d > 0 {
		c.AckedPerSecond = float64(c.Acked) / d.Seconds()
	}
	c.WorstLatenessMs = ms(r.lateness)
	c.WorstFrameWaitMs = ms(time.Duration(r.frameWait.Load()))
	g := &res.Groups
	for k := range r.ledger {
		e := &r.ledger[k]
		if !e.acked {
			continue
		}
		if e.recalled {
			c.Recalled++
			continue
		}
		exp, got := uint64(r.expected(e)), uint64(min(e.pushes, r.expected(e)))
		c.PushesExpected += exp
		c.Pushes += got
		if e.group {
			g.MemberPushesExpected += exp
			g.MemberPushes += got
		}
	}
	c.FullyPushed, c.DuplicatePushes, c.Carbons, c.Foreign, c.Repeats = r.fullyPushed, r.dups, r.carbons, r.foreign, r.repeats
	res.Wave = r.fillWave()
	var msgAck hist
	msgAck.merge(&direct.ack)
	msgAck.merge(&group.ack)
	c.Ack, c.Push = latency(&msgAck), latency(&r.pushLat)

	res.Kinds = make([]KindResult, numKinds)
	for k := range r.kinds {
		kc := &r.kinds[k]
		kr := KindResult{Kind: kindNames[k], Sent: kc.sent, Skipped: kc.skipped, Acked: kc.acked, Refused: kc.failed,
			Unacked: kc.sent - kc.acked - kc.failed, Ack: latency(&kc.ack)}
		if d := kc.lastAck - chatStart; kc.acked > 0 && d > 0 {
			kr.AckedPerSecond = float64(kc.acked) / d.Seconds()
		}
		res.Kinds[k] = kr
	}

	g.Groups, g.Sizes = r.cfg.Groups, r.cfg.GroupSizes
	g.Memberships = r.groups.memberships()
	g.EventPushes, g.EventPushesExpected = r.groupEvents, g.Memberships*uint64(r.cfg.Devices)
	g.MemberEntries = r.groupPushes / uint64(r.cfg.Devices)
	for k := range r.ledger {
		if e := &r.ledger[k]; e.group && e.pushes >= r.expected(e) {
			g.FullyPushed++
		}
	}
	if d := r.lastGroupPush - r.firstGroupSend; r.groupPushes > 0 && d > 0 {
		g.MemberEntriesPerSecond = float64(g.MemberEntries) / d.Seconds()
	}
	g.MemberPush, g.LastMemberPush = latency(&r.memberPushLat), latency(&r.fanoutLat)
	if len(r.errs) > 0 {
		res.Errors = maps.Clone(r.errs)
	}
}

// soundness lists what makes the run's figures not count.
func (r *actorsRun) soundness(res *ActorsResult) []string {
	var p []string
	if res.Logins.Failed > 0 {
		p = append(p, fmt.Sprintf("%d logins failed", res.Logins.Failed))
	}
	if res.Logins.Kicked > 0 {
		p = append(p, fmt.Sprintf("%d devices were kicked", res.Logins.Kicked))
	}
	for _, k := range res.Kinds {
		if k.Unacked > 0 {
			p = append(p, fmt.Sprintf("%d %s actions neither acked nor refused after the drain", k.Unacked, k.Kind))
		}
		if k.Refused > 0 {
			p = append(p, fmt.Sprintf("%d %s actions refused", k.Refused, k.Kind))
		}
	}
	if c := res.Chat; c.Pushes < c.PushesExpected {
		p = append(p, fmt.Sprintf("%d of %d pushes of acked messages (not recalled) missing after the drain", c.PushesExpected-c.Pushes, c.PushesExpected))
	}
	if g := res.Groups; g.EventPushes < g.EventPushesExpected {
		p = append(p, fmt.Sprintf("%d of %d pushes of the groups' CREATED events missing before the chat", g.EventPushesExpected-g.EventPushes, g.EventPushesExpected))
	}
	if res.Wave != nil {
		p = append(p, res.Wave.problems(r.cfg.KillPID != 0)...)
	}
	if res.Passivation != nil {
		p = append(p, res.Passivation.problems()...)
	}
	if lc := res.Ledger; lc != nil {
		if lc.MessagesMissing > 0 {
			hint := ""
			if c := res.Chat; c.Pushes < c.PushesExpected {
				// The fan-out after an ack is asynchronous (the outbox
				// re-drives it): with pushes still outstanding, a copy may
				// have been on its way when its log was read.
				hint = "; the drain ended with pushes outstanding, so some copies may still have been on their way: a longer -drain tells a late copy from a lost one"
			}
			p = append(p, fmt.Sprintf("ack ledger: %d of %d copies of acked messages missing from their recipients' logs%s", lc.MessagesMissing, lc.Messages, hint))
		}
		if lc.MessagesDuplicated > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d copies of acked messages more than once in a log", lc.MessagesDuplicated, lc.Messages))
		}
		if lc.RecallsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d logs do not show an acked recall", lc.RecallsMissing, lc.Recalls))
		}
		if lc.ReadsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d acked read positions not durable", lc.ReadsMissing, lc.Reads))
		}
		if lc.LoginsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d logins without their device event in the log", lc.LoginsMissing, lc.Logins))
		}
		if lc.ActivationsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d activations without their epoch in the store", lc.ActivationsMissing, lc.Activations))
		}
		if lc.LogoutsMissing > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d of %d logouts without their LOGGED_OUT event in the log", lc.LogoutsMissing, lc.Logouts))
		}
		if lc.ReadErrors > 0 {
			p = append(p, fmt.Sprintf("ack ledger: %d logs could not be read", lc.ReadErrors))
		}
	}
	return p
}

// logReader reads a user's log and conversation states from the store
// (node.Node.ReadLog, ReadConvs).
type logReader interface {
	ReadLog(ctx context.Context, user string, after uint64, limit int) ([]persistence.Entry, error)
	ReadConvs(ctx context.Context, user string) ([]persistence.Conv, error)
	ReadEpoch(ctx context.Context, user string) (uint64, error)
}

// userChecks is what user u's log must show.
type userChecks struct {
	devs       []devCheck // devices that logged in
	msgs       [][]int32  // ledger indexes of acked messages it must hold a copy of
	ownRecalls []int32    // its own 1:1 messages whose recall was acked
	reads      map[string]uint64
}

// devCheck: device d logged in logins times and out logouts times.
type devCheck struct{ d, logins, logouts int }

func (uc *userChecks) empty() bool {
	return len(uc.devs) == 0 && len(uc.ownRecalls) == 0 && len(uc.reads) == 0 && !slices.ContainsFunc(uc.msgs, func(l []int32) bool { return len(l) > 0 })
}

// verify reads every user's log that should hold something from the
// store, 4 users at a time.
func (r *actorsRun) verify(ctx context.Context, rd logReader) *LedgerCheck {
	t0 := time.Now()
	r.mu.Lock()
	ledger := slices.Clone(r.ledger)
	reads, recalls := slices.Clone(r.reads), slices.Clone(r.recalls)
	loginsOK, logoutsOK := slices.Clone(r.loginsOK), slices.Clone(r.logoutsOK)
	epochs := slices.Clone(r.epochs)
	r.mu.Unlock()
	lc := &LedgerCheck{}
	byRecipient := make([][]int32, r.cfg.Users)
	byGroup := make([][]int32, len(r.groups.size))
	for k, e := range ledger {
		switch {
		case !e.acked:
		case e.group:
			byGroup[e.recipient] = append(byGroup[e.recipient], int32(k))
			lc.GroupMessages++
		default:
			byRecipient[e.recipient] = append(byRecipient[e.recipient], int32(k))
		}
	}
	recallAcked := make([]bool, len(ledger))
	ownRecalls := make([][]int32, r.cfg.Users)
	for _, op := range recalls {
		if op.acked {
			recallAcked[op.target] = true
			if e := ledger[op.target]; !e.group {
				ownRecalls[e.sender] = append(ownRecalls[e.sender], op.target)
			}
		}
	}
	readsOf := make([]map[string]uint64, r.cfg.Users)
	for _, op := range reads {
		if !op.acked {
			continue
		}
		k := convKeyOf(&wire.Conversation{Type: wire.Conversation_DIRECT, Id: vuser(int(op.target))})
		if op.group {
			k = convKeyOf(&wire.Conversation{Type: wire.Conversation_GROUP, Id: vgroup(int(op.target))})
		}
		if readsOf[op.user] == nil {
			readsOf[op.user] = map[string]uint64{}
		}
		readsOf[op.user][k] = max(readsOf[op.user][k], op.upTo)
	}
	var mu sync.Mutex // lc
	var next int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				u := int(next)
				next++
				mu.Unlock()
				if u >= r.cfg.Users {
					return
				}
				uc := userChecks{msgs: [][]int32{byRecipient[u]}, ownRecalls: ownRecalls[u], reads: readsOf[u]}
				for _, g := range r.groups.of(u) {
					uc.msgs = append(uc.msgs, byGroup[g])
				}
				for d := range r.cfg.Devices {
					if i := u*r.cfg.Devices + d; loginsOK[i] > 0 {
						uc.devs = append(uc.devs, devCheck{d: d, logins: int(loginsOK[i]), logouts: int(logoutsOK[i])})
					}
				}
				if epochs != nil && epochs[u] > 0 {
					got := checkEpoch(ctx, rd, u, epochs[u])
					mu.Lock()
					lc.add(&got)
					mu.Unlock()
				}
				if uc.empty() {
					continue
				}
				got := checkUserLog(ctx, rd, u, &uc, ledger, recallAcked)
				mu.Lock()
				lc.add(&got)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	lc.Seconds = time.Since(t0).Seconds()
	return lc
}

// add sums one user's check into lc.
func (lc *LedgerCheck) add(got *LedgerCheck) {
	lc.Messages += got.Messages
	lc.MessagesMissing += got.MessagesMissing
	lc.MessagesDuplicated += got.MessagesDuplicated
	lc.Recalls += got.Recalls
	lc.RecallsMissing += got.RecallsMissing
	lc.Reads += got.Reads
	lc.ReadsMissing += got.ReadsMissing
	lc.Logins += got.Logins
	lc.LoginsMissing += got.LoginsMissing
	lc.Logouts += got.Logouts
	lc.LogoutsMissing += got.LogoutsMissing
	lc.Activations += got.Activations
	lc.ActivationsMissing += got.ActivationsMissing
	lc.ReadErrors += got.ReadErrors
	for _, s := range got.Examples {
		if len(lc.Examples) < 20 {
			lc.Examples = append(lc.Examples, s)
		}
	}
}

// checkEpoch: user u's actor answered its activation with epoch; the
// store must hold that epoch (or a later one) for u.
func checkEpoch(ctx context.Context, rd logReader, u int, epoch uint64) LedgerCheck {
	out := LedgerCheck{Activations: 1}
	stored, err := rd.ReadEpoch(ctx, vuser(u))
	switch {
	case err != nil:
		out.ReadErrors++
		out.Examples = append(out.Examples, fmt.Sprintf("%s: reading its epoch: %v", vuser(u), err))
	case stored < epoch:
		out.ActivationsMissing++
		out.Examples = append(out.Examples, fmt.Sprintf("%s: activated under epoch %d, the store holds %d", vuser(u), epoch, stored))
	}
	return out
}

// logCopy is what a log holds of one message.
type logCopy struct {
	sender string
	n      int  // entries of the message
	live   bool // one of them not recalled
}

// checkUserLog reads user u's whole log (and, for mark-reads, its
// conversation states) and checks what uc says it must show.
func checkUserLog(ctx context.Context, rd logReader, u int, uc *userChecks, ledger []ledgerEntry, recallAcked []bool) LedgerCheck {
	var out LedgerCheck
	miss := func(format string, a ...any) {
		if len(out.Examples) < 20 {
			out.Examples = append(out.Examples, fmt.Sprintf(format, a...))
		}
	}
	user := vuser(u)
	copies := map[string]*logCopy{} // message ID →
	recallEvents := map[string]bool{}
	readEvents := map[string]uint64{} // conversation key → the highest position logged
	loggedIn, loggedOut := map[string]int{}, map[string]int{}
	byContent := map[uint64]int{} // ledger index (a message's content) → entries with it, from the run's users
	var after uint64
	for {
		page, err := rd.ReadLog(ctx, user, after, 1000)
		if err != nil {
			out.ReadErrors++
			miss("reading %s's log after seq %d: %v", user, after, err)
			return out
		}
		for _, e := range page {
			after = uint64(e.Seq)
			var en wire.Entry
			if err := proto.Unmarshal(e.Data, &en); err != nil {
				continue
			}
			switch {
			case en.GetMessage() != nil:
				m := en.GetMessage()
				c := copies[m.GetMessageId()]
				if c == nil {
					c = &logCopy{sender: m.GetSender()}
					copies[m.GetMessageId()] = c
				}
				c.n++
				c.live = c.live || !m.GetRecalled()
				if len(m.GetContent()) == 8 && strings.HasPrefix(m.GetSender(), vuserPrefix) {
					byContent[binary.LittleEndian.Uint64(m.GetContent())]++
				}
			case en.GetRecall() != nil:
				recallEvents[en.GetRecall().GetMessageId()] = true
			case en.GetRead() != nil:
				k := convKeyOf(en.GetRead().GetConversation())
				readEvents[k] = max(readEvents[k], en.GetRead().GetUpToSeq())
			case en.GetDevice().GetKind() == wire.DeviceEvent_LOGGED_IN:
				loggedIn[en.GetDevice().GetDevice().GetDeviceId()]++
			case en.GetDevice().GetKind() == wire.DeviceEvent_LOGGED_OUT:
				loggedOut[en.GetDevice().GetDevice().GetDeviceId()]++
			}
		}
		if len(page) < 1000 {
			break
		}
	}
	for _, dc := range uc.devs {
		dev := vdevice(dc.d)
		out.Logins += uint64(dc.logins)
		if got := loggedIn[dev]; got < dc.logins {
			out.LoginsMissing += uint64(dc.logins - got)
			miss("%s's device %s: no LOGGED_IN event in its log for %d of its %d logins", user, dev, dc.logins-got, dc.logins)
		}
		out.Logouts += uint64(dc.logouts)
		if got := loggedOut[dev]; got < dc.logouts {
			out.LogoutsMissing += uint64(dc.logouts - got)
			miss("%s's device %s: no LOGGED_OUT event in its log for %d of its %d logouts", user, dev, dc.logouts-got, dc.logouts)
		}
	}
	for _, list := range uc.msgs {
		for _, k := range list {
			e := &ledger[k]
			sender := vuser(int(e.sender))
			c := copies[e.msgID]
			if c == nil {
				c = &logCopy{}
			}
			out.Messages++
			switch {
			case c.n == 0 && e.recalled && recallEvents[e.msgID]:
				// Recalled before it arrived: only the recall is logged.
			case c.n == 0 || c.sender != sender:
				out.MessagesMissing++
				miss("message %s from %s (seq %d in the sender's log), acked: not in %s's log", e.msgID, sender, e.seq, user)
			case c.n > 1:
				out.MessagesDuplicated++
				miss("message %s from %s: %d times in %s's log", e.msgID, sender, c.n, user)
			case byContent[uint64(k)] > 1:
				out.MessagesDuplicated++
				miss("message %s from %s: stored %d times in %s's log, under different message IDs", e.msgID, sender, byContent[uint64(k)], user)
			}
			if recallAcked[k] {
				checkRecall(&out, miss, e, c, recallEvents, user)
			}
		}
	}
	for _, k := range uc.ownRecalls {
		e := &ledger[k]
		c := copies[e.msgID]
		if c == nil {
			c = &logCopy{}
		}
		checkRecall(&out, miss, e, c, recallEvents, user)
	}
	if len(uc.reads) > 0 {
		checkReads(ctx, rd, &out, miss, user, uc.reads, readEvents)
	}
	return out
}

// checkRecall: an acked recall of e shows in user's log as its
// RecallEvent, and its copy there (if any) is erased.
func checkRecall(out *LedgerCheck, miss func(string, ...any), e *ledgerEntry, c *logCopy, recallEvents map[string]bool, user string) {
	out.Recalls++
	switch {
	case !recallEvents[e.msgID]:
		out.RecallsMissing++
		miss("recall of %s by %s, acked: no RecallEvent in %s's log", e.msgID, vuser(int(e.sender)), user)
	case c.live:
		out.RecallsMissing++
		miss("recall of %s by %s, acked: %s's copy is not erased", e.msgID, vuser(int(e.sender)), user)
	}
}

// checkReads: each acked read position of user is in its log (a
// ReadEvent at or past it) and in its stored conversation state.
func checkReads(ctx context.Context, rd logReader, out *LedgerCheck, miss func(string, ...any), user string, reads, readEvents map[string]uint64) {
	stored := map[string]uint64{}
	convs, err := rd.ReadConvs(ctx, user)
	if err != nil {
		out.ReadErrors++
		miss("reading %s's conversation states: %v", user, err)
		return
	}
	for _, c := range convs {
		var cs actorpb.ConvState
		if err := proto.Unmarshal(c.Data, &cs); err == nil {
			stored[c.Key] = cs.GetReadSeq()
		}
	}
	for _, k := range slices.Sorted(maps.Keys(reads)) {
		upTo := reads[k]
		out.Reads++
		switch {
		case readEvents[k] < upTo:
			out.ReadsMissing++
			miss("mark-read of %s's conversation %s up to seq %d, acked: its log's ReadEvents reach seq %d", user, k, upTo, readEvents[k])
		case stored[k] < upTo:
			out.ReadsMissing++
			miss("mark-read of %s's conversation %s up to seq %d, acked: its stored state reads seq %d", user, k, upTo, stored[k])
		}
	}
}

// convKeyOf is the key the actors store a conversation's state under
// (actors/conv.go).
func convKeyOf(c *wire.Conversation) string {
	if c.GetType() == wire.Conversation_GROUP {
		return "g:" + c.GetId()
	}
	return "d:" + c.GetId()
}

// loginNoun names what the run's logins figures count: logins, or with
// -activate-only activations.
func (c ActorsConfig) loginNoun() string {
	if c.ActivateOnly {
		return "activation"
	}
	return "login"
}

// print writes the summary table.
func (r *ActorsResult) print(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tandem-bench actors: %s, %d users × %d devices (%v), concurrency %d",
		c.Target.describe(), c.Users, c.Devices, c.Platforms, c.Concurrency)
	if c.LoginRate > 0 {
		fmt.Fprintf(w, ", login rate %.0f/s", c.LoginRate)
	}
	if c.MsgRate > 0 {
		fmt.Fprintf(w, ", chat %.3g actions/s per user for %v", c.MsgRate, c.Duration)
	}
	if c.Ramp > 0 {
		fmt.Fprintf(w, ", ramp %v", c.Ramp)
	}
	if mix := c.mixString(); mix != "" {
		fmt.Fprintf(w, "\nmix: %s", mix)
	}
	fmt.Fprintf(w, "\nmachine: %d CPUs, GOMAXPROCS %d, load %.2f before, %.2f after, transparent huge pages %s\n", r.Machine.CPUs, r.Machine.GOMAXPROCS, r.Machine.LoadBefore[0], r.Machine.LoadAfter[0], cmp.Or(r.Machine.THP, "unknown"))
	if r.Interrupted {
		fmt.Fprintln(w, "INTERRUPTED: the load stopped early; what was in flight was drained")
	}
	l := r.Logins
	noun := c.loginNoun()
	if c.ActivateOnly {
		fmt.Fprintf(w, "\n%-28s %d of %d ok, %d failed (actor start + store activation; no login)\n", "activations", l.OK, l.Devices, l.Failed)
	} else {
		fmt.Fprintf(w, "\n%-28s %d of %d ok, %d failed, %d kicked\n", "logins", l.OK, l.Devices, l.Failed, l.Kicked)
		fmt.Fprintf(w, "%-28s %d\n", "users activated", l.UsersActivated)
	}
	fmt.Fprintf(w, "%-28s %.0f over %.1f s (first tenth %.0f, last tenth %.0f)\n", noun+"s/s", l.PerSecond, l.Seconds, l.FirstTenthPerSecond, l.LastTenthPerSecond)
	if len(l.TenthsPerSecond) > 0 {
		tenths := make([]string, len(l.TenthsPerSecond))
		for i, v := range l.TenthsPerSecond {
			tenths[i] = fmt.Sprintf("%.0f", v)
		}
		fmt.Fprintf(w, "%-28s %s\n", noun+"s/s per tenth", strings.Join(tenths, " "))
	}
	fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", noun+" latency", l.Latency.P50, l.Latency.P99, l.Latency.Max)
	fmt.Fprintf(w, "%-28s %s\n", "heap live after GC", r.Memory.text(noun))
	if ch := r.Chat; ch.Sent+ch.Skipped > 0 {
		fmt.Fprintf(w, "%-28s %d sent, %d acked, %d refused, %d unacked, %d skipped (sender offline)\n", "messages", ch.Sent, ch.Acked, ch.Refused, ch.Unacked, ch.Skipped)
		fmt.Fprintf(w, "%-28s %.0f (chat %.1f s, to the last ack); sender loop at worst %.1f ms late, a frame's hand-over at worst %.1f ms\n", "acked msgs/s", ch.AckedPerSecond, ch.Seconds, ch.WorstLatenessMs, ch.WorstFrameWaitMs)
		fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "send → ack", ch.Ack.P50, ch.Ack.P99, ch.Ack.Max)
		fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "send → push (recipient)", ch.Push.P50, ch.Push.P99, ch.Push.Max)
		fmt.Fprintf(w, "%-28s %d of %d expected (%d messages to every device), %d duplicates, %d carbons, %d foreign; %d recalled messages not counted; %d entries again at or below a cursor, dropped\n", "pushes", ch.Pushes, ch.PushesExpected, ch.FullyPushed, ch.DuplicatePushes, ch.Carbons, ch.Foreign, ch.Recalled, ch.Repeats)
		fmt.Fprintf(w, "\n%-8s %9s %9s %9s %8s %8s %10s %9s %9s %9s\n", "kind", "sent", "acked", "skipped", "refused", "unacked", "acked/s", "ack p50", "ack p99", "ack max")
		for _, k := range r.Kinds {
			fmt.Fprintf(w, "%-8s %9d %9d %9d %8d %8d %10.1f %9.2f %9.2f %9.2f\n", k.Kind, k.Sent, k.Acked, k.Skipped, k.Refused, k.Unacked, k.AckedPerSecond, k.Ack.P50, k.Ack.P99, k.Ack.Max)
		}
		fmt.Fprintln(w)
	}
	if g := r.Groups; g.Groups > 0 {
		fmt.Fprintf(w, "%-28s %d of %s members (%d memberships), created in %.1f s; CREATED pushed to %d of %d member devices\n", "groups", g.Groups, joinInts(g.Sizes), g.Memberships, g.CreateSeconds, g.EventPushes, g.EventPushesExpected)
		if g.MemberEntries > 0 {
			fmt.Fprintf(w, "%-28s %d, %.0f/s (first group send to last member push; pushes ÷ devices)\n", "member-log entries", g.MemberEntries, g.MemberEntriesPerSecond)
			fmt.Fprintf(w, "%-28s %d of %d expected, %d group messages to every member device\n", "member pushes", g.MemberPushes, g.MemberPushesExpected, g.FullyPushed)
			fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms\n", "send → member push", g.MemberPush.P50, g.MemberPush.P99, g.MemberPush.Max)
			fmt.Fprintf(w, "%-28s p50 %.2f  p99 %.2f  max %.2f ms (%d messages)\n", "send → last member push", g.LastMemberPush.P50, g.LastMemberPush.P99, g.LastMemberPush.Max, g.LastMemberPush.Count)
		}
	}
	if pw := r.Passivation; pw != nil {
		fmt.Fprintf(w, "%-28s %s\n", "passivation wave", pw.summary())
	}
	if wv := r.Wave; wv != nil {
		fmt.Fprintf(w, "%-28s %s\n", "reconnect wave", wv.summary())
	}
	if lc := r.Ledger; lc != nil {
		fmt.Fprintf(w, "%-28s %s (%.1f s)\n", "ack ledger (store)", lc.verdict(), lc.Seconds)
		for _, e := range lc.Examples {
			fmt.Fprintln(w, "  missing:", e)
		}
	} else {
		fmt.Fprintf(w, "%-28s not checked (-no-verify)\n", "ack ledger (store)")
	}
	for _, k := range slices.Sorted(maps.Keys(r.Errors)) {
		fmt.Fprintf(w, "%-28s %d\n", "error "+k, r.Errors[k])
	}
	for _, p := range r.Problems {
		fmt.Fprintln(w, "NOT SOUND:", p)
	}
}

// HeapFigures: the live heap after GC of the whole process (node and
// bench) before the first login and after the last, and the difference
// per user.
type HeapFigures struct {
	HeapBaseline    uint64  `json:"heap_baseline"`
	HeapAfterLogins uint64  `json:"heap_after_logins"`
	PerUserBytes    float64 `json:"per_user_bytes"` // 0: not measured, the heap did not grow
}

// text is the summary's line. A heap that did not grow gives no figure
// per user: what the process freed meanwhile (a stopped run's remains in
// a test binary, a cache shrinking) outweighed what the users hold, which
// happens with few users; it says so rather than print 0 B.
func (m HeapFigures) text(noun string) string {
	const mib = 1 << 20
	s := fmt.Sprintf("%.1f MiB before, %.1f MiB after the %ss: ", float64(m.HeapBaseline)/mib, float64(m.HeapAfterLogins)/mib, noun)
	if m.PerUserBytes <= 0 {
		return s + "no figure per user (the heap did not grow: the process freed more meanwhile than the users hold)"
	}
	return s + fmt.Sprintf("%.0f B per user", m.PerUserBytes)
}
