package chaos

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// The checker must fail, naming the user, run or seq and the invariant, on
// each kind of broken history; and pass a sound one. These histories are
// what the bugs of issue #15 leave behind.
func TestCheckFindsEachViolation(t *testing.T) {
	const u, other = "alice", "bob"
	ev := func(seq uint64, typ, run string, data string) frame {
		if data == "" {
			data = "{}"
		}
		return frame{Type: typ, Seq: seq, Epoch: "E1", RunID: run, Data: json.RawMessage(data)}
	}
	pub := func(seq uint64, user, key string) frame {
		return ev(seq, "chaos.pub", "", fmt.Sprintf(`{"u":%q,"k":%q}`, user, key))
	}
	sound := func() []frame {
		return []frame{
			pub(1, u, "p1"),
			ev(2, "user_message", "R1", ""),
			ev(3, "agent_started", "R1", ""),
			pub(4, u, "p2"),
			ev(5, "agent_message_delta", "R1", ""),
			ev(6, "agent_completed", "R1", ""),
		}
	}
	tabOf := func(evs []frame) []got {
		var out []got
		for _, f := range evs {
			out = append(out, got{frame: f, conn: 1})
		}
		return out
	}
	input := func(evs []frame, mut func(*checkInput)) checkInput {
		in := checkInput{
			histories: map[string]history{u: {Epoch: "E1", HeadSeq: evs[len(evs)-1].Seq, Events: evs}},
			tabs:      []tabView{{name: u + "/tab0", user: u, frames: tabOf(evs)}},
			pubs: []pubRec{{user: u, key: "p1", acked: true, seq: 1, epoch: "E1"},
				{user: u, key: "p2", acked: true, seq: 4, epoch: "E1"}},
			runs: []runRec{{user: u, cmid: "m1", runID: "R1", sentAt: time.Now(), ackAt: time.Now()}},
			rest: map[string]restRun{"R1": {Status: "completed", code: 200}},
		}
		if mut != nil {
			mut(&in)
		}
		return in
	}
	if vs := check(input(sound(), nil)); len(vs) != 0 {
		t.Fatalf("sound history: %v", vs)
	}
	cases := []struct {
		name     string
		in       checkInput
		inv, say string
	}{
		{"terminal append lost (no retry)", input(sound()[:5], nil), invRunEnd, "run R1 (user alice, acked"},
		{"terminal without start", input([]frame{ev(1, "user_message", "R1", ""), ev(2, "agent_error", "R1", `{"code":"node_lost"}`)},
			func(in *checkInput) {
				in.pubs = nil
				in.rest["R1"] = restRun{Status: "failed", code: 200}
			}), invRunStart, "run R1 (user alice, acked"},
		{"refused message left a run row", input(sound(), func(in *checkInput) {
			in.stored = []storedRun{{ID: "R1", User: u, Status: "completed"}, {ID: "R9", User: u, Status: "failed", ErrorCode: "agent_failed"}}
			in.rest["R9"] = restRun{Status: "failed", code: 200}
		}), invRunStart, "run R9 (user alice, stored"},
		{"REST disagrees", input(sound(), func(in *checkInput) { in.rest["R1"] = restRun{Status: "failed", code: 200} }), invRunREST, "run R1"},
		{"two terminal events", input(append(sound(), ev(7, "agent_error", "R1", `{"code":"node_lost"}`)), nil), invRunEnd, "run R1"},
		{"acked publish missing", input(sound(), func(in *checkInput) {
			in.pubs = append(in.pubs, pubRec{user: u, key: "p3", acked: true, seq: 7, epoch: "E1"})
		}), invPubOnce, "publish p3"},
		{"publish twice", input(append(sound(), pub(7, u, "p2")), nil), invPubOnce, "key p2 appears 2 times"},
		{"duplicate on a tab", input(sound(), func(in *checkInput) {
			in.tabs[0].frames = append(in.tabs[0].frames, got{frame: sound()[3], conn: 2})
		}), invSeq, "alice/tab0: seq 4"},
		{"gap on a tab", input(sound(), func(in *checkInput) {
			in.tabs[0].frames = append(in.tabs[0].frames[:2:2], in.tabs[0].frames[3:]...)
		}), invSeq, "alice/tab0: seq 4 after 2"},
		{"epoch change without loss", input(sound(), func(in *checkInput) {
			in.tabs[0].frames = append([]got{{frame: frame{Type: "resync_required", Epoch: "E1", HeadSeq: 0, Reason: "epoch"}}}, in.tabs[0].frames...)
		}), invEpoch, "alice/tab0: resync_required"},
		{"frame of another user", input(sound(), func(in *checkInput) {
			in.tabs[0].frames[0].frame = pub(1, other, "p1")
		}), invOtherUser, "alice/tab0: seq 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := check(c.in)
			for _, v := range vs {
				if v.inv == c.inv && strings.Contains(v.msg, c.say) {
					return
				}
			}
			t.Errorf("want a %q violation saying %q, got %v", c.inv, c.say, vs)
		})
	}
}
