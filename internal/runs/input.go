package runs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/agentwire/agentwire/internal/agent"
	"github.com/agentwire/agentwire/internal/store"
	"github.com/agentwire/agentwire/protocol"
)

// DefaultInputTimeout is how long a run waits for its user's answer to an
// input_required before it ends with agent_error input_timeout.
const DefaultInputTimeout = 30 * time.Minute

// Inputs carries user_input answers to the node running the run
// (runs/redis.Inputs): Ask delivers req to node and returns the reply its
// handler gave, reporting whether a node was listening; Serve calls handle
// for every request sent to node until ctx is done.
type Inputs interface {
	Ask(ctx context.Context, node string, req []byte) (reply []byte, delivered bool, err error)
	Serve(ctx context.Context, node string, handle func(req []byte) []byte)
}

// waitReq is the one input request a run waits on.
type waitReq struct {
	id      string
	kind    protocol.InputKind
	options []string
	answer  chan protocol.InputAnswer // buffered: the answer is never blocked
}

// Why an answer is not taken: each becomes one protocol error.
var (
	errAnswered     = errors.New("runs: request already answered")
	errNoRequest    = errors.New("runs: no such input request")
	errAnswerKind   = errors.New("runs: answer does not fit the request")
	errTooManyInput = errors.New("runs: the run is already waiting for input")
)

func checkInputRequest(req agent.InputRequest) error {
	switch req.Kind {
	case protocol.InputApproval, protocol.InputText:
	case protocol.InputChoice:
		if len(req.Options) == 0 || len(req.Options) > protocol.MaxOptions {
			return fmt.Errorf("runs: a choice needs 1 to %d options", protocol.MaxOptions)
		}
		for _, o := range req.Options {
			if o == "" || len(o) > protocol.MaxKeyBytes || !utf8.ValidString(o) {
				return fmt.Errorf("runs: an option must be 1 to %d bytes of UTF-8", protocol.MaxKeyBytes)
			}
		}
	default:
		return fmt.Errorf("runs: unknown input kind %q", req.Kind)
	}
	if req.Prompt == "" || len(req.Prompt) > protocol.MaxPromptBytes {
		return fmt.Errorf("runs: the prompt must be 1 to %d bytes", protocol.MaxPromptBytes)
	}
	if len(req.Schema) > 0 && (len(req.Schema) > protocol.MaxSchemaBytes || !json.Valid(req.Schema) || req.Schema[0] != '{') {
		return fmt.Errorf("runs: the schema must be a JSON object of at most %d bytes", protocol.MaxSchemaBytes)
	}
	return nil
}

// RequestInput appends input_required, suspends the run timeout in favour
// of the input timeout, and waits for the first answer (which answer
// appended as input_received), the run's end or ctx's.
func (e *emitter) RequestInput(ctx context.Context, req agent.InputRequest) (protocol.InputAnswer, error) {
	if err := checkInputRequest(req); err != nil {
		return protocol.InputAnswer{}, err
	}
	e.mu.Lock()
	if e.ended {
		e.mu.Unlock()
		return protocol.InputAnswer{}, agent.ErrRunEnded
	}
	if e.waiting != nil {
		e.mu.Unlock()
		return protocol.InputAnswer{}, errTooManyInput
	}
	w := &waitReq{id: ulid.Make().String(), kind: req.Kind, options: req.Options, answer: make(chan protocol.InputAnswer, 1)}
	err := e.appendLocked(protocol.TypeInputRequired, protocol.InputRequired{RequestID: w.id, Kind: req.Kind,
		Prompt: req.Prompt, ToolCallID: req.ToolCallID, Options: req.Options, Schema: req.Schema})
	if err != nil {
		e.mu.Unlock()
		return protocol.InputAnswer{}, err
	}
	e.waiting = w
	e.mu.Unlock()

	c := e.m.clockOf(e.runID)
	if c != nil {
		c.pause(e.m.inputTimeout)
	}
	e.m.setWaiting(e.user, e.runID, true)
	select {
	case a := <-w.answer:
		e.m.setWaiting(e.user, e.runID, false)
		if c != nil && !c.resume() {
			return protocol.InputAnswer{}, agent.ErrRunEnded // the input timeout won
		}
		return a, nil
	case <-ctx.Done():
		e.mu.Lock()
		if e.waiting == w {
			e.waiting = nil
		}
		ended := e.ended
		e.mu.Unlock()
		if ended {
			return protocol.InputAnswer{}, agent.ErrRunEnded
		}
		// The agent gave up asking (its own context), the run goes on: its
		// run timeout again, not the input timeout.
		if c != nil {
			c.resume()
		}
		e.m.setWaiting(e.user, e.runID, false)
		return protocol.InputAnswer{}, ctx.Err()
	}
}

// take gives a to the run's waiting request requestID, once: it appends
// input_received and wakes the agent. Later answers get errAnswered.
func (e *emitter) take(requestID string, a protocol.InputAnswer) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.ended:
		return agent.ErrRunEnded
	case e.answered[requestID]:
		return errAnswered
	case e.waiting == nil || e.waiting.id != requestID:
		return errNoRequest
	}
	w := e.waiting
	if a.Kind() != w.kind || (w.kind == protocol.InputChoice && !slices.Contains(w.options, *a.Choice)) {
		return errAnswerKind
	}
	if err := e.appendLocked(protocol.TypeInputReceived, protocol.InputReceived{RequestID: requestID, InputAnswer: a}); err != nil {
		return err
	}
	if e.answered == nil {
		e.answered = make(map[string]bool)
	}
	e.answered[requestID] = true
	e.waiting = nil
	w.answer <- a
	return nil
}

// setWaiting records in the store that a run waits for its user, or no
// longer does (GET /api/v1/runs/{id}: waiting_for_input). The status is
// what REST reports, not what the run relies on: a store that fails is
// logged, and a run that has ended meanwhile stays ended.
func (m *Manager) setWaiting(user, runID string, waiting bool) {
	ctx, cancel := context.WithTimeout(context.Background(), appendTimeout)
	defer cancel()
	if err := m.store.SetRunWaiting(ctx, user, runID, waiting); err != nil && !errors.Is(err, store.ErrNotRunning) {
		m.log.Warn("store the run's waiting status", "user", user, "run", runID, "waiting", waiting, "err", err)
	}
}

// clockOf returns the clock of a run running here (nil before it has one).
func (m *Manager) clockOf(runID string) *clock {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.active[runID]; a != nil {
		return a.clock
	}
	return nil
}

// UserInput answers a run's input_required (the user_input frame, POST
// /api/v1/runs/{id}/input) on any node: a run of another node gets the
// answer through Inputs, and the node running it decides, so the first
// answer wins everywhere and reaches the agent once; later ones are
// conflict, as are answers to a run that has ended.
func (m *Manager) UserInput(ctx context.Context, user string, f *protocol.Frame) (protocol.AckFrame, *protocol.Error) {
	if ack, perr, here := m.answerLocal(user, f); here {
		return ack, perr
	}
	r, err := m.store.GetRun(ctx, user, f.RunID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return protocol.AckFrame{}, perr(protocol.CodeNotFound, "no such run", f.ID)
		}
		return protocol.AckFrame{}, perr(protocol.CodeInternal, "store unavailable, retry", f.ID)
	}
	if r.Status.Terminal() || r.Node == m.node || m.inputs == nil {
		return protocol.AckFrame{}, perr(protocol.CodeConflict, "the run has ended", f.ID)
	}
	req, _ := json.Marshal(inputRequest{User: user, Frame: protocol.EncodeFrame(f)})
	for i := range sendStopTries {
		reply, delivered, err := m.inputs.Ask(ctx, r.Node, req)
		if err != nil {
			m.log.Error("send input to the run's node", "user", user, "run", r.ID, "node", r.Node, "err", err)
			return protocol.AckFrame{}, perr(protocol.CodeInternal, "answer not delivered, retry", f.ID)
		}
		if delivered {
			var rep inputReply
			if json.Unmarshal(reply, &rep) != nil {
				return protocol.AckFrame{}, perr(protocol.CodeInternal, "answer not confirmed, retry", f.ID)
			}
			if rep.Code != "" {
				return protocol.AckFrame{}, perr(rep.Code, rep.Message, f.ID)
			}
			return protocol.AckFrame{Ref: f.ID, ThreadID: r.ThreadID, RunID: r.ID}, nil
		}
		if i < sendStopTries-1 {
			select {
			case <-ctx.Done():
				return protocol.AckFrame{}, perr(protocol.CodeInternal, "answer not delivered, retry", f.ID)
			case <-time.After(sendStopPause):
			}
		}
	}
	// The node is gone: its reaper ends the run with node_lost.
	return protocol.AckFrame{}, perr(protocol.CodeConflict, "the run has ended", f.ID)
}

// inputRequest and inputReply are what Inputs carries between nodes.
type inputRequest struct {
	User  string          `json:"u"`
	Frame json.RawMessage `json:"f"`
}

type inputReply struct {
	Code    protocol.ErrorCode `json:"code,omitempty"`
	Message string             `json:"message,omitempty"`
}

// serveInput answers a user_input another node sent for a run of this one.
func (m *Manager) serveInput(req []byte) []byte {
	var in inputRequest
	if json.Unmarshal(req, &in) != nil {
		return nil
	}
	f, perr := protocol.Decode(in.Frame)
	if perr == nil {
		var here bool
		if _, perr, here = m.answerLocal(in.User, &f); !here {
			perr = &protocol.Error{Code: protocol.CodeConflict, Message: "the run has ended"}
		}
	}
	var rep inputReply
	if perr != nil {
		rep = inputReply{Code: perr.Code, Message: perr.Message}
	}
	b, _ := json.Marshal(rep)
	return b
}

// answerLocal answers a run running here; here is false when it is not.
func (m *Manager) answerLocal(user string, f *protocol.Frame) (ack protocol.AckFrame, e *protocol.Error, here bool) {
	m.mu.Lock()
	a := m.active[f.RunID]
	m.mu.Unlock()
	if a == nil || a.em.user != user {
		return ack, nil, false
	}
	switch err := a.em.take(f.RequestID, f.Answer); {
	case err == nil:
		return protocol.AckFrame{Ref: f.ID, ThreadID: a.em.threadID, RunID: f.RunID}, nil, true
	case errors.Is(err, agent.ErrRunEnded):
		return ack, perr(protocol.CodeConflict, "the run has ended", f.ID), true
	case errors.Is(err, errAnswered):
		return ack, perr(protocol.CodeConflict, "the request was already answered", f.ID), true
	case errors.Is(err, errNoRequest):
		return ack, perr(protocol.CodeNotFound, "the run is not waiting for this request", f.ID), true
	case errors.Is(err, errAnswerKind):
		return ack, perr(protocol.CodeInvalidMessage, "the answer does not fit the request (approved, text or one of its options)", f.ID), true
	default:
		return ack, perr(protocol.CodeInternal, "stream unavailable, retry", f.ID), true
	}
}
