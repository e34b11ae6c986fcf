package postgres

import (
	"github.com/tandem-im/tandem/persistence"
)

// writeSQL writes one group commit in one statement. Its parameters are
// column arrays, unnested into rows:
//
//	$1-$4    fence:       user, epoch, last seq before, last seq after
//	$5-$8    new entries: user, seq, time, data
//	$9-$12   rewrites:    user, seq, time, data
//	$13-$16  dedup keys:  user, key, seq, time
//	$17-$20  outbox puts: user, seq, key, data
//	$21-$23  outbox done: user, seq, key
//	$24-$27  devices:     user, device, data (NULL: keep), cursor
//	$28-$30  convs:       user, key, data
//
// fence is the set of users whose tandem_users row has the epoch and last
// seq the committer checked against (moving last_seq for the users whose
// log grows); every write of the statement is limited to those users. The
// rows are locked by the batch (lockSQL), so every user passes: the
// statement fails (tandem_check) if one did not, or if a log row was not
// inserted, so that the COMMIT sent after it cannot commit a partial batch. Within one statement each row is written
// at most once: writeSet merges the ops of a batch (later writes of a key
// win, an outbox put and done of one item leave only the last, a rewrite
// of an entry appended in the same batch changes the insert).
const writeSQL = `WITH fv AS (
	SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS v(user_id, epoch, prev_last, new_last)
), moved AS (
	UPDATE tandem_users u SET last_seq = fv.new_last
	FROM fv
	WHERE u.user_id = fv.user_id AND u.epoch = fv.epoch AND u.last_seq = fv.prev_last AND fv.new_last <> fv.prev_last
	RETURNING u.user_id
), fence AS (
	SELECT user_id FROM moved
	UNION ALL
	SELECT u.user_id FROM tandem_users u JOIN fv ON u.user_id = fv.user_id
	WHERE u.epoch = fv.epoch AND u.last_seq = fv.prev_last AND fv.new_last = fv.prev_last
), ins_log AS (
	INSERT INTO tandem_log (user_id, seq, time_ms, data)
	SELECT v.user_id, v.seq, v.time_ms, v.data
	FROM unnest($5::text[], $6::bigint[], $7::bigint[], $8::bytea[]) AS v(user_id, seq, time_ms, data)
	WHERE v.user_id IN (SELECT user_id FROM fence)
	RETURNING 1
), rewrites AS (
	UPDATE tandem_log l SET time_ms = v.time_ms, data = v.data
	FROM unnest($9::text[], $10::bigint[], $11::bigint[], $12::bytea[]) AS v(user_id, seq, time_ms, data)
	WHERE l.user_id = v.user_id AND l.seq = v.seq AND v.user_id IN (SELECT user_id FROM fence)
	RETURNING 1
), dedup AS (
	INSERT INTO tandem_dedup AS d (user_id, dedup_key, seq, time_ms)
	SELECT v.user_id, v.k, v.seq, v.time_ms
	FROM unnest($13::text[], $14::text[], $15::bigint[], $16::bigint[]) AS v(user_id, k, seq, time_ms)
	WHERE v.user_id IN (SELECT user_id FROM fence)
	ON CONFLICT (user_id, dedup_key) DO UPDATE SET seq = excluded.seq, time_ms = excluded.time_ms
	RETURNING 1
), outbox_put AS (
	INSERT INTO tandem_outbox AS o (user_id, seq, outbox_key, data)
	SELECT v.user_id, v.seq, v.k, v.data
	FROM unnest($17::text[], $18::bigint[], $19::text[], $20::bytea[]) AS v(user_id, seq, k, data)
	WHERE v.user_id IN (SELECT user_id FROM fence)
	ON CONFLICT (user_id, seq, outbox_key) DO UPDATE SET data = excluded.data
	RETURNING 1
), outbox_done AS (
	DELETE FROM tandem_outbox o
	USING unnest($21::text[], $22::bigint[], $23::text[]) AS v(user_id, seq, k)
	WHERE o.user_id = v.user_id AND o.seq = v.seq AND o.outbox_key = v.k AND v.user_id IN (SELECT user_id FROM fence)
	RETURNING 1
), devices AS (
	INSERT INTO tandem_devices AS d (user_id, device_id, data, cursor_seq)
	SELECT v.user_id, v.device_id, v.data, v.cursor_seq
	FROM unnest($24::text[], $25::text[], $26::bytea[], $27::bigint[]) AS v(user_id, device_id, data, cursor_seq)
	WHERE v.user_id IN (SELECT user_id FROM fence)
	ON CONFLICT (user_id, device_id) DO UPDATE SET cursor_seq = excluded.cursor_seq, data = coalesce(excluded.data, d.data)
	RETURNING 1
), convs AS (
	INSERT INTO tandem_convs AS c (user_id, conv_key, data)
	SELECT v.user_id, v.k, v.data
	FROM unnest($28::text[], $29::text[], $30::bytea[]) AS v(user_id, k, data)
	WHERE v.user_id IN (SELECT user_id FROM fence)
	ON CONFLICT (user_id, conv_key) DO UPDATE SET data = excluded.data
	RETURNING 1
)
SELECT tandem_check(
	(SELECT count(*) FROM fence) = coalesce(cardinality($1::text[]), 0) AND
	(SELECT count(*) FROM ins_log) = coalesce(cardinality($5::text[]), 0),
	'group commit: a user failed the fence, or a log row was not inserted')`

type seqKey struct {
	user string
	seq  persistence.Seq
}

type strKey struct{ user, key string }

type outboxKey struct {
	user string
	seq  persistence.Seq
	key  string
}

// writeSet is the column arrays of one group commit, merged so that each
// row is written once.
type writeSet struct {
	fIdx                map[string]int
	fUser               []string
	fEpoch, fPrev, fNew []int64
	lIdx                map[seqKey]int
	lUser               []string
	lSeq, lTime         []int64
	lData               [][]byte
	rIdx                map[seqKey]int
	rUser               []string
	rSeq, rTime         []int64
	rData               [][]byte
	dIdx                map[strKey]int
	dUser, dKey         []string
	dSeq, dTime         []int64
	oIdx                map[outboxKey]int
	oUser, oKey         []string
	oSeq                []int64
	oData               [][]byte
	oDone               []bool
	vIdx                map[strKey]int
	vUser, vDevice      []string
	vData               [][]byte
	vCursor             []int64
	cIdx                map[strKey]int
	cUser, cKey         []string
	cData               [][]byte
}

func newWriteSet() *writeSet {
	return &writeSet{
		fIdx: map[string]int{},
		lIdx: map[seqKey]int{},
		rIdx: map[seqKey]int{},
		dIdx: map[strKey]int{},
		oIdx: map[outboxKey]int{},
		vIdx: map[strKey]int{},
		cIdx: map[strKey]int{},
	}
}

// notNil stores nil data as empty: the payload columns are NOT NULL.
func notNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// add merges o, checked against its user's state before it (st), into
// the set.
func (w *writeSet) add(o *op, st userState) {
	u := o.user
	if i, ok := w.fIdx[u]; ok {
		if o.n > 0 {
			w.fNew[i] = int64(o.last)
		}
	} else {
		w.fIdx[u] = len(w.fUser)
		w.fUser = append(w.fUser, u)
		w.fEpoch = append(w.fEpoch, int64(st.epoch))
		w.fPrev = append(w.fPrev, int64(st.last))
		next := st.last
		if o.n > 0 {
			next = o.last
		}
		w.fNew = append(w.fNew, int64(next))
	}

	for _, e := range o.entries {
		w.lIdx[seqKey{u, e.Seq}] = len(w.lUser)
		w.lUser = append(w.lUser, u)
		w.lSeq = append(w.lSeq, int64(e.Seq))
		w.lTime = append(w.lTime, e.TimeMS)
		w.lData = append(w.lData, notNil(e.Data))
	}
	for _, e := range o.rewrites {
		k := seqKey{u, e.Seq}
		if i, ok := w.lIdx[k]; ok { // appended in this batch
			w.lTime[i], w.lData[i] = e.TimeMS, notNil(e.Data)
			continue
		}
		if i, ok := w.rIdx[k]; ok {
			w.rTime[i], w.rData[i] = e.TimeMS, notNil(e.Data)
			continue
		}
		w.rIdx[k] = len(w.rUser)
		w.rUser = append(w.rUser, u)
		w.rSeq = append(w.rSeq, int64(e.Seq))
		w.rTime = append(w.rTime, e.TimeMS)
		w.rData = append(w.rData, notNil(e.Data))
	}
	for _, d := range o.dedup {
		k := strKey{u, d.Key}
		if i, ok := w.dIdx[k]; ok {
			w.dSeq[i], w.dTime[i] = int64(d.Seq), o.dedupTime
			continue
		}
		w.dIdx[k] = len(w.dUser)
		w.dUser = append(w.dUser, u)
		w.dKey = append(w.dKey, d.Key)
		w.dSeq = append(w.dSeq, int64(d.Seq))
		w.dTime = append(w.dTime, o.dedupTime)
	}
	// Puts before deletes: an item put and done in one request is gone.
	for _, x := range o.outboxPut {
		w.outbox(outboxKey{u, x.Seq, x.Key}, notNil(x.Data), false)
	}
	for _, x := range o.outboxDone {
		w.outbox(outboxKey{u, x.Seq, x.Key}, nil, true)
	}
	for _, d := range o.devices {
		k := strKey{u, d.DeviceID}
		if i, ok := w.vIdx[k]; ok {
			w.vCursor[i] = int64(d.Cursor)
			if d.Data != nil {
				w.vData[i] = d.Data
			}
			continue
		}
		w.vIdx[k] = len(w.vUser)
		w.vUser = append(w.vUser, u)
		w.vDevice = append(w.vDevice, d.DeviceID)
		w.vData = append(w.vData, d.Data) // nil: keep the stored record
		w.vCursor = append(w.vCursor, int64(d.Cursor))
	}
	for _, c := range o.convs {
		k := strKey{u, c.Key}
		if i, ok := w.cIdx[k]; ok {
			w.cData[i] = notNil(c.Data)
			continue
		}
		w.cIdx[k] = len(w.cUser)
		w.cUser = append(w.cUser, u)
		w.cKey = append(w.cKey, c.Key)
		w.cData = append(w.cData, notNil(c.Data))
	}
}

// outbox records the last action on an outbox item: put data, or done.
func (w *writeSet) outbox(k outboxKey, data []byte, done bool) {
	if i, ok := w.oIdx[k]; ok {
		w.oData[i], w.oDone[i] = data, done
		return
	}
	w.oIdx[k] = len(w.oUser)
	w.oUser = append(w.oUser, k.user)
	w.oSeq = append(w.oSeq, int64(k.seq))
	w.oKey = append(w.oKey, k.key)
	w.oData = append(w.oData, data)
	w.oDone = append(w.oDone, done)
}

// args returns writeSQL's parameters.
func (w *writeSet) args() []any {
	var pUser, pKey, dUser, dKey []string
	var pSeq, dSeq []int64
	var pData [][]byte
	for i, done := range w.oDone {
		if done {
			dUser, dSeq, dKey = append(dUser, w.oUser[i]), append(dSeq, w.oSeq[i]), append(dKey, w.oKey[i])
		} else {
			pUser, pSeq, pKey, pData = append(pUser, w.oUser[i]), append(pSeq, w.oSeq[i]), append(pKey, w.oKey[i]), append(pData, w.oData[i])
		}
	}
	return []any{
		w.fUser, w.fEpoch, w.fPrev, w.fNew,
		w.lUser, w.lSeq, w.lTime, w.lData,
		w.rUser, w.rSeq, w.rTime, w.rData,
		w.dUser, w.dKey, w.dSeq, w.dTime,
		pUser, pSeq, pKey, pData,
		dUser, dSeq, dKey,
		w.vUser, w.vDevice, w.vData, w.vCursor,
		w.cUser, w.cKey, w.cData,
	}
}
