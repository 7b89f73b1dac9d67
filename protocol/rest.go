package protocol

import (
	"encoding/json"
	"time"
)

// The shapes of the HTTP API (PROTOCOL.md sections 7 and 11), as the server
// writes them and clients read them. Times are UTC; fields with no value
// are omitted, not null.

// ErrorBody is the body of every HTTP error answer:
// {"error":{"code":…,"message":…}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of an ErrorBody. Message never carries internal
// addresses or driver errors.
type ErrorDetail struct {
	Code    ErrorCode `json:"code"`
	Message string    `json:"message"`
}

// Ticket answers POST /api/v1/tickets: a single-use connect ticket for
// /ws?ticket=.
type Ticket struct {
	Ticket    string    `json:"ticket"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Thread is one conversation of the user.
type Thread struct {
	ID        string    `json:"id"`
	Title     string    `json:"title"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Message is one message of a thread; Role is "user" or "assistant". Run
// is set on a user message that started a run: that run with its steps.
type Message struct {
	ID        string         `json:"id"`
	Role      string         `json:"role"`
	Content   string         `json:"content"`
	RunID     string         `json:"run_id,omitempty"`
	CreatedAt time.Time      `json:"created_at"`
	Run       *RunTranscript `json:"run,omitempty"`
}

// RunTranscript is a run with its stored events (its transcript), each
// the frame a socket got (EncodeEvent), oldest first: every event of the
// run but the answer's deltas, which are folded into fewer
// agent_message_delta events, so a run that failed or was stopped keeps
// its partial answer. A stored event's text may end with TruncatedMarker.
// The terminal event, stored before the stream took it, has seq 0.
type RunTranscript struct {
	Run
	Events []json.RawMessage `json:"events"`
}

// TruncatedMarker ends a text that a stored transcript cut (thinking, a
// tool's arguments or result, the answer, an error message) to bound the
// run's transcript; data with no such text becomes {"truncated":true}.
const TruncatedMarker = "… [truncated]"

// RunEventsPage answers GET /api/v1/runs/{id}/events: one page of the run's
// transcript (see RunTranscript). Next ("" when none) is the after of the
// next page.
type RunEventsPage struct {
	Events  []json.RawMessage `json:"events"`
	Next    string            `json:"next"`
	HasMore bool              `json:"has_more"`
}

// Run is one agent execution (GET /api/v1/runs/{id}); Status is running,
// completed, failed, cancelled or timeout. Agent, ErrorCode and ErrorMessage
// are agentwire's additions to the contract.
type Run struct {
	ID           string     `json:"id"`
	ThreadID     string     `json:"thread_id"`
	Status       string     `json:"status"`
	Agent        string     `json:"agent,omitempty"`
	StartedAt    time.Time  `json:"started_at"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	ErrorCode    ErrorCode  `json:"error_code,omitempty"`
	ErrorMessage string     `json:"error_message,omitempty"`
	// Usage is the tokens the run used, when its agent reported them.
	Usage *Usage `json:"usage,omitempty"`
}

// ThreadsPage answers GET /api/v1/threads: Next ("" when none) is the cursor
// to pass as after; HasMore is Next != "". The server writes it item by item
// under the names ListThreads, ListNext and ListHasMore.
type ThreadsPage struct {
	Threads []Thread `json:"threads"`
	Next    string   `json:"next"`
	HasMore bool     `json:"has_more"`
}

// MessagesPage answers GET /api/v1/threads/{id}/messages, oldest first:
// Next ("" when none) is the id to pass again as after (or as before when
// paging with before).
type MessagesPage struct {
	Messages []Message `json:"messages"`
	Next     string    `json:"next"`
	HasMore  bool      `json:"has_more"`
}

// JSON member names of the paged lists, for a server that writes a page
// item by item instead of marshalling a ThreadsPage or MessagesPage.
const (
	ListThreads  = "threads"
	ListMessages = "messages"
	ListEvents   = "events"
	ListNext     = "next"
	ListHasMore  = "has_more"
)

// EventsPage answers GET /api/v1/events?since=&epoch=&limit=: the events
// after the request's Cursor up to HeadSeq, each the frame a socket gets
// (EncodeEvent). Next is the since of the next request while more remain
// (nil when none do). A position the stream cannot serve has no events,
// ResyncRequired set with its Reason, and Epoch/HeadSeq to continue from.
type EventsPage struct {
	Epoch          string            `json:"epoch"`
	HeadSeq        uint64            `json:"head_seq"`
	ResyncRequired bool              `json:"resync_required,omitempty"`
	Reason         ResyncReason      `json:"reason,omitempty"`
	Events         []json.RawMessage `json:"events"`
	Next           *uint64           `json:"next,omitempty"`
}

// PublishRequest is the body of POST /api/v1/publish (API key): one event
// appended to the stream of UserID. Data must be a JSON object (or absent).
type PublishRequest struct {
	UserID         string          `json:"user_id"`
	Type           string          `json:"type"`
	ThreadID       string          `json:"thread_id,omitempty"`
	RunID          string          `json:"run_id,omitempty"`
	Data           json.RawMessage `json:"data,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// PublishResponse answers a publish: the position of the appended event (or
// of the first one appended with the same idempotency key).
type PublishResponse struct {
	Seq   uint64 `json:"seq"`
	Epoch string `json:"epoch"`
}

// PublishBatchRequest is a batch publish: POST /api/v1/publish with
// {"events":[…]}, 1 to 1000 events (a body of at most 1 MiB), each checked
// like a single publish. One user's events are appended all or none, in
// order, with consecutive seqs.
type PublishBatchRequest struct {
	Events []PublishRequest `json:"events"`
}

// PublishResult is the outcome of one event of a batch or a publish
// stream: its position, or why it was not appended.
type PublishResult struct {
	Seq   uint64       `json:"seq,omitempty"`
	Epoch string       `json:"epoch,omitempty"`
	Error *ErrorDetail `json:"error,omitempty"`
}

// PublishBatchResponse answers a batch publish: one result per event, in
// the order of the request.
type PublishBatchResponse struct {
	Results []PublishResult `json:"results"`
}

// PublishAck is one line of the answer of POST /api/v1/publish/stream: the
// result of the I-th non-blank line of the request (counted from 0).
type PublishAck struct {
	I int `json:"i"`
	PublishResult
}

// DevLoginRequest is the body of POST /auth/dev-login (--dev only).
type DevLoginRequest struct {
	UserID string `json:"user_id"`
}

// DevLoginResponse answers a dev login with a token for UserID.
type DevLoginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}
