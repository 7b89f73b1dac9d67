package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// The invariants, checked at the end from every tab's final view (after one
// last resume) against the server's own history (GET /api/v1/events?since=0,
// with retention large enough to keep everything), the acks the clients got,
// the stored runs and GET /api/v1/runs/{id}.
const (
	invPubOnce   = "acked publish present exactly once"
	invSeq       = "seq strictly increasing, no gap, within an epoch"
	invView      = "final view equals the server's history"
	invEpoch     = "epoch changes only where history was lost, with resync_required"
	invOtherUser = "no frame of another user"
	invRunStart  = "run: exactly one agent_started, before anything else of the run"
	invRunEnd    = "run: exactly one terminal event, last"
	invRunREST   = "run: REST status agrees with the stream"
	invFrame     = "every frame is JSON"
)

var invariants = []string{invPubOnce, invSeq, invView, invEpoch, invOtherUser, invRunStart, invRunEnd, invRunREST, invFrame}

type violation struct {
	inv, msg string
}

// history is the server's stream of one user.
type history struct {
	Epoch   string  `json:"epoch"`
	HeadSeq uint64  `json:"head_seq"`
	Events  []frame `json:"events"`
}

// tabView is what one tab received over all its connections.
type tabView struct {
	name, user string
	frames     []got
}

// pubRec is one publish as its publisher saw it (retries included: one key).
type pubRec struct {
	user, key    string
	start, ackAt time.Time
	acked        bool
	seq          uint64
	epoch        string
	attempts     int
}

// runRec is one user_message a tab sent (retries included: one
// client_message_id).
type runRec struct {
	user, cmid, content string
	sentAt, ackAt       time.Time
	runID               string // from the ack
	errs                []string
}

// restRun is GET /api/v1/runs/{id}.
type restRun struct {
	Status    string `json:"status"`
	ErrorCode string `json:"error_code"`
	code      int    // HTTP status
}

// faultRec is one fault as it happened.
type faultRec struct {
	kind, target  string
	start, healed time.Time
}

type checkInput struct {
	historyLost bool // a fault that truly loses stream history happened
	histories   map[string]history
	tabs        []tabView
	pubs        []pubRec
	runs        []runRec
	stored      []storedRun // the store's run rows (nil when not readable)
	rest        map[string]restRun
	faults      []faultRec
}

func pubKey(f frame) (user, key string) {
	var d struct {
		U string `json:"u"`
		K string `json:"k"`
	}
	_ = json.Unmarshal(f.Data, &d)
	return d.U, d.K
}

func isTerminal(t string) bool { return t == "agent_completed" || t == "agent_error" }

func errCode(f frame) string {
	var d struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(f.Data, &d)
	return d.Code
}

// wantStatus is the REST status the terminal event implies.
func wantStatus(term frame) string {
	if term.Type == "agent_completed" {
		return "completed"
	}
	switch c := errCode(term); c {
	case "cancelled", "timeout":
		return c
	}
	return "failed"
}

// during names the faults whose window [start, healed+5s] overlaps [a, b].
func during(faults []faultRec, a, b time.Time) string {
	var out []string
	for _, f := range faults {
		if !a.After(f.healed.Add(5*time.Second)) && !b.Before(f.start) {
			out = append(out, f.kind+" "+f.target)
		}
	}
	if len(out) == 0 {
		return "no fault"
	}
	return strings.Join(out, ", ")
}

// check verifies every invariant and returns the violations, each naming the
// user, run or seq concerned.
func check(in checkInput) []violation {
	var vs []violation
	add := func(inv, format string, args ...any) {
		vs = append(vs, violation{inv, fmt.Sprintf(format, args...)})
	}

	// Who owns which run, from every source.
	owner := map[string]string{}
	for _, r := range in.runs {
		if r.runID != "" {
			owner[r.runID] = r.user
		}
	}
	for _, r := range in.stored {
		owner[r.ID] = r.User
	}
	for u, h := range in.histories {
		for _, f := range h.Events {
			if f.RunID != "" && owner[f.RunID] == "" {
				owner[f.RunID] = u
			}
		}
	}
	foreign := func(user string, f frame) string {
		if f.Type == "chaos.pub" {
			if u, _ := pubKey(f); u != user {
				return "published for " + u
			}
		}
		if f.RunID != "" && owner[f.RunID] != user {
			return "of run " + f.RunID + " of " + owner[f.RunID]
		}
		return ""
	}

	// The server's history: one epoch, seq 1..head, no foreign frame, each
	// publish key at most once.
	keys := map[string]map[string][]uint64{} // user → key → seqs
	for u, h := range in.histories {
		keys[u] = map[string][]uint64{}
		for i, f := range h.Events {
			if f.Epoch != h.Epoch {
				add(invEpoch, "history of %s: seq %d has epoch %s, head epoch %s", u, f.Seq, f.Epoch, h.Epoch)
			}
			if i > 0 && f.Seq != h.Events[i-1].Seq+1 {
				add(invSeq, "history of %s: seq %d follows %d", u, f.Seq, h.Events[i-1].Seq)
			}
			if why := foreign(u, f); why != "" {
				add(invOtherUser, "history of %s: seq %d (%s) is %s", u, f.Seq, f.Type, why)
			}
			if f.Type == "chaos.pub" {
				_, k := pubKey(f)
				keys[u][k] = append(keys[u][k], f.Seq)
			}
		}
		for k, seqs := range keys[u] {
			if len(seqs) > 1 {
				add(invPubOnce, "user %s: publish key %s appears %d times (seqs %v)", u, k, len(seqs), seqs)
			}
		}
	}

	// Every acked publish, once, at the seq its ack gave.
	for _, p := range in.pubs {
		if !p.acked {
			continue
		}
		h := in.histories[p.user]
		seqs := keys[p.user][p.key]
		switch {
		case p.epoch != h.Epoch && !in.historyLost:
			add(invEpoch, "user %s: publish %s acked in epoch %s, history is epoch %s and was never lost", p.user, p.key, p.epoch, h.Epoch)
		case p.epoch != h.Epoch:
		case len(seqs) == 0:
			add(invPubOnce, "user %s: publish %s acked seq %d (after %d attempts, %s) is missing from history",
				p.user, p.key, p.seq, p.attempts, during(in.faults, p.start, p.ackAt))
		case seqs[0] != p.seq:
			add(invPubOnce, "user %s: publish %s acked seq %d but stored at seq %d", p.user, p.key, p.seq, seqs[0])
		}
	}

	// Every tab: strictly increasing seq, epoch changes only after
	// resync_required (and only if history was lost), nothing foreign, and a
	// final view equal to the history.
	for _, tv := range in.tabs {
		h := in.histories[tv.user]
		epoch, last := "", uint64(0)
		resyncTo := ""
		view := map[uint64]frame{}
		floor := uint64(0) // history below this was skipped by a resync
		for _, g := range tv.frames {
			f := g.frame
			if f.Type == "resync_required" {
				if !in.historyLost {
					add(invEpoch, "%s: resync_required (reason %s, epoch %s, head %d) on connection %d though history was never lost",
						tv.name, f.Reason, f.Epoch, f.HeadSeq, g.conn)
				}
				resyncTo, epoch, last = f.Epoch, f.Epoch, f.HeadSeq
				view, floor = map[uint64]frame{}, f.HeadSeq
				continue
			}
			if epoch == "" {
				epoch = f.Epoch
			}
			if f.Epoch != epoch {
				if resyncTo != f.Epoch {
					add(invEpoch, "%s: seq %d arrived in epoch %s after epoch %s without resync_required (connection %d)",
						tv.name, f.Seq, f.Epoch, epoch, g.conn)
				}
				epoch, last = f.Epoch, 0
				view, floor = map[uint64]frame{}, 0
			}
			switch {
			case f.Seq <= last:
				add(invSeq, "%s: seq %d (%s) after seq %d on connection %d: duplicate or out of order", tv.name, f.Seq, f.Type, last, g.conn)
			case f.Seq != last+1 && last > 0:
				add(invSeq, "%s: seq %d after %d on connection %d: gap of %d", tv.name, f.Seq, last, g.conn, f.Seq-last-1)
				last = f.Seq
			default:
				last = f.Seq
			}
			if why := foreign(tv.user, f); why != "" {
				add(invOtherUser, "%s: seq %d (%s) is %s", tv.name, f.Seq, f.Type, why)
			}
			view[f.Seq] = f
		}
		if epoch != h.Epoch {
			add(invView, "%s: final epoch %s, history epoch %s", tv.name, epoch, h.Epoch)
			continue
		}
		missing := 0
		var first uint64
		for _, e := range h.Events {
			if e.Seq <= floor {
				continue
			}
			f, ok := view[e.Seq]
			if !ok {
				if missing == 0 {
					first = e.Seq
				}
				missing++
				continue
			}
			if f.Type != e.Type || f.RunID != e.RunID || string(f.Data) != string(e.Data) {
				add(invView, "%s: seq %d is %s/%s, history has %s/%s", tv.name, e.Seq, f.Type, f.RunID, e.Type, e.RunID)
			}
		}
		if missing > 0 {
			add(invView, "%s: %d events of history missing after the final resume (first seq %d)", tv.name, missing, first)
		}
		for s := range view {
			if s > h.HeadSeq {
				add(invView, "%s: seq %d beyond the history's head %d", tv.name, s, h.HeadSeq)
			}
		}
	}

	// Runs: every run acked or stored, from its owner's history.
	type runInfo struct {
		user, how, content string
		sent, acked        time.Time
	}
	runs := map[string]*runInfo{}
	for _, r := range in.runs {
		if r.runID != "" {
			runs[r.runID] = &runInfo{user: r.user, how: "acked", content: r.content, sent: r.sentAt, acked: r.ackAt}
		}
	}
	for _, r := range in.stored {
		if runs[r.ID] == nil {
			runs[r.ID] = &runInfo{user: r.User, how: "stored (status " + r.Status + " " + r.ErrorCode + ", never acked)"}
		}
	}
	for u, h := range in.histories {
		for _, f := range h.Events {
			if f.RunID != "" && runs[f.RunID] == nil {
				runs[f.RunID] = &runInfo{user: u, how: "in history only"}
			}
		}
	}
	events := map[string][]frame{}
	for _, h := range in.histories {
		for _, f := range h.Events {
			if f.RunID != "" {
				events[f.RunID] = append(events[f.RunID], f)
			}
		}
	}
	ids := make([]string, 0, len(runs))
	for id := range runs {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		ri := runs[id]
		evs := events[id]
		desc := fmt.Sprintf("run %s (user %s, %s", id, ri.user, ri.how)
		if !ri.sent.IsZero() {
			end := ri.acked
			if len(evs) > 0 && evs[len(evs)-1].TS.After(end) {
				end = evs[len(evs)-1].TS
			}
			desc += fmt.Sprintf(", %q, during %s", ri.content, during(in.faults, ri.sent, end))
		}
		desc += ")"
		var started, terms []frame
		firstRun := -1 // first event of the run other than the user_message echo
		for i, f := range evs {
			if f.Type == "user_message" {
				if started != nil {
					add(invRunStart, "%s: user_message echo at seq %d after agent_started", desc, f.Seq)
				}
				continue
			}
			if firstRun < 0 {
				firstRun = i
			}
			if f.Type == "agent_started" {
				started = append(started, f)
			}
			if isTerminal(f.Type) {
				terms = append(terms, f)
			}
		}
		switch {
		case len(started) == 0:
			add(invRunStart, "%s: no agent_started (%d events of the run in history)", desc, len(evs))
		case len(started) > 1:
			add(invRunStart, "%s: %d agent_started (seqs %d, %d)", desc, len(started), started[0].Seq, started[1].Seq)
		case evs[firstRun].Type != "agent_started":
			add(invRunStart, "%s: first event is %s at seq %d, agent_started at seq %d", desc, evs[firstRun].Type, evs[firstRun].Seq, started[0].Seq)
		}
		rest, haveRest := in.rest[id]
		switch {
		case len(terms) == 0 && len(evs) == 0:
			add(invRunEnd, "%s: no terminal event (nothing of the run in the stream; REST status %s)", desc, rest.Status)
		case len(terms) == 0:
			l := evs[len(evs)-1]
			add(invRunEnd, "%s: no terminal event (last: %s at seq %d; REST status %s)", desc, l.Type, l.Seq, rest.Status)
		case len(terms) > 1:
			add(invRunEnd, "%s: %d terminal events (%s seq %d, %s seq %d)", desc, len(terms), terms[0].Type, terms[0].Seq, terms[1].Type, terms[1].Seq)
		case evs[len(evs)-1].Seq != terms[0].Seq:
			l := evs[len(evs)-1]
			add(invRunEnd, "%s: %s at seq %d after the terminal %s at seq %d", desc, l.Type, l.Seq, terms[0].Type, terms[0].Seq)
		}
		switch {
		case !haveRest:
			add(invRunREST, "%s: GET /api/v1/runs not read", desc)
		case rest.code != 200:
			add(invRunREST, "%s: GET /api/v1/runs answered %d", desc, rest.code)
		case len(terms) == 1 && rest.Status != wantStatus(terms[0]):
			add(invRunREST, "%s: REST status %s (%s), stream ended with %s %s", desc, rest.Status, rest.ErrorCode, terms[0].Type, errCode(terms[0]))
		case len(terms) == 0 && rest.Status == "running":
			add(invRunREST, "%s: REST status still running at the end", desc)
		}
	}
	return vs
}
