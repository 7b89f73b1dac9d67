// Package store defines the durable records of agentwire: threads, their
// messages, agent runs, and idempotency keys.
//
// Every read and write is scoped to a user, the isolation boundary of the
// wire contract. A row owned by another user is reported exactly like a row
// that does not exist (ErrNotFound), so callers cannot tell the two apart and
// neither can their clients.
//
// Times are kept with millisecond precision: implementations truncate every
// time they are given to TimePrecision and return times in UTC, so a value
// read back equals the value written, truncated, on every backend.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound means the row does not exist or belongs to another user;
	// callers must not be able to tell which.
	ErrNotFound = errors.New("store: not found")
	// ErrConflict means a row with the same id already exists.
	ErrConflict = errors.New("store: conflict")
	// ErrNotRunning means FinishRun found the run already finished.
	ErrNotRunning = errors.New("store: run is not running")
	// ErrRunInProgress means DeleteThread found a run of the thread still
	// running or waiting for input: nothing was deleted.
	ErrRunInProgress = errors.New("store: the thread has a run in progress")
	// ErrInvalid means an argument is malformed: an empty id, an unknown
	// role or status, a non-positive ttl. It is a bug in the caller.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrBadCursor means a page cursor (MessageQuery.After or Before) is not
	// a message of the thread being listed.
	ErrBadCursor = errors.New("store: cursor is not in the list")
	// ErrSchemaTooNew means the database was migrated by a newer version of
	// agentwire than this one; opening it would risk corrupting it.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this program")
)

// TimePrecision is the resolution of every stored time.
const TimePrecision = time.Millisecond

// DefaultListLimit is the page size of ListThreads and ListMessages when
// given no positive limit.
const DefaultListLimit = 100

// ThreadCursor is a position in ListThreads order (UpdatedAt descending,
// then ID descending): the UpdatedAt and ID of the last thread of a page.
// The zero ThreadCursor is the start, before the newest thread.
type ThreadCursor struct {
	UpdatedAt time.Time
	ID        string
}

// ThreadQuery selects one page of a user's threads.
type ThreadQuery struct {
	// After: the page holds the threads that come after this position in
	// ListThreads order. A position, not a row: a thread updated since the
	// previous page moved to the front and is not listed again.
	After ThreadCursor
	// Limit is the most threads in the page (DefaultListLimit when <= 0).
	Limit int
}

// MessageQuery selects one page of a thread's messages. At most one of
// After and Before is set (else ErrInvalid); with neither the page starts at
// the thread's first message.
type MessageQuery struct {
	// After is a message id of the thread: the page is the messages right
	// after it, oldest first.
	After string
	// Before is a message id of the thread: the page is the messages right
	// before it (the newest Limit of them), still oldest first.
	Before string
	// Limit is the most messages in the page (DefaultListLimit when <= 0).
	Limit int
	// MaxBytes bounds the total length of the page's contents: a message
	// that would take the total over it is left for the next page, unless
	// it is the page's first one. No bound when <= 0.
	MaxBytes int
}

// PageLimit is q.Limit, or DefaultListLimit when it is not positive.
func (q MessageQuery) PageLimit() int {
	if q.Limit <= 0 {
		return DefaultListLimit
	}
	return q.Limit
}

// Admit reports whether the next message, with content of size bytes, joins
// a page that holds n messages whose contents total bytes. When it reports
// false the page is complete and more messages lie beyond it.
func (q MessageQuery) Admit(n, total, size int) bool {
	if n >= q.PageLimit() {
		return false
	}
	return n == 0 || q.MaxBytes <= 0 || total+size <= q.MaxBytes
}

// Validate reports ErrInvalid when both cursors are set.
func (q MessageQuery) Validate() error {
	if q.After != "" && q.Before != "" {
		return fmt.Errorf("%w: message query with both after and before", ErrInvalid)
	}
	return nil
}

// ActiveRunQuery selects one page of ListActiveRuns.
type ActiveRunQuery struct {
	// UserID, when set, keeps only that user's runs.
	UserID string
	// After: the page holds the active runs after this position in
	// ListActiveRuns order (the StartedAt and ID of the previous page's
	// last run); zero for the first page.
	After RunCursor
	// Limit is the most runs in the page (DefaultListLimit when <= 0).
	Limit int
}

// RunCursor is a position in ListActiveRuns order.
type RunCursor struct {
	StartedAt time.Time
	ID        string
}

// DefaultReapLimit is the number of runs ReapExpired ends when given no
// positive limit.
const DefaultReapLimit = 100

// Reap is what ReapExpired ends: the running runs whose lease expired before
// Before (the current time when zero), at most Limit of them
// (DefaultReapLimit when Limit <= 0), as failed with ErrorCode and
// ErrorMessage, their end not announced and leased to Node until LeaseUntil
// (the reaper, which announces it and then confirms it: ConfirmEnds; an
// empty Node or zero LeaseUntil keeps the run's).
type Reap struct {
	Before       time.Time
	ErrorCode    string
	ErrorMessage string
	Limit        int
	Node         string
	LeaseUntil   time.Time
}

// Thread is a conversation owned by one user.
type Thread struct {
	ID        string
	UserID    string
	Title     string
	CreatedAt time.Time
	// UpdatedAt is the time of the thread's newest message, or CreatedAt
	// before the first one.
	UpdatedAt time.Time
}

// Message roles.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one message of a thread. UserID is the thread's owner for both
// roles. RunID is the run the message belongs to: the run a user message
// started, or the run that produced an assistant answer; it may be empty.
type Message struct {
	ID        string
	ThreadID  string
	UserID    string
	Role      string // RoleUser or RoleAssistant
	Content   string
	RunID     string
	CreatedAt time.Time
}

// RunStatus is the state of a run: RunRunning (or RunWaiting while its
// agent waits for the user's answer, back and forth), then exactly one
// terminal status.
type RunStatus string

// Run statuses, as they appear on the wire.
const (
	RunRunning   RunStatus = "running"
	RunCompleted RunStatus = "completed"
	RunFailed    RunStatus = "failed"
	RunCancelled RunStatus = "cancelled"
	RunTimeout   RunStatus = "timeout"
	// RunWaiting is a running run whose agent waits for its user's answer
	// (input_required): leased, renewed and reaped like RunRunning.
	RunWaiting RunStatus = "waiting_for_input"
)

// Terminal reports whether s is one of the statuses a run ends with.
func (s RunStatus) Terminal() bool {
	switch s {
	case RunCompleted, RunFailed, RunCancelled, RunTimeout:
		return true
	}
	return false
}

// Run is one agent execution answering one user message in one thread.
type Run struct {
	ID            string
	ThreadID      string
	UserID        string
	Agent         string
	Status        RunStatus
	UserMessageID string
	StartedAt     time.Time
	EndedAt       time.Time // zero while running
	ErrorCode     string    // set by FinishRun, e.g. "agent_failed"
	ErrorMessage  string
	// Node is the id of the process running the run, and LeaseUntil the
	// time until which that process vouches for it (see RenewLeases).
	Node       string
	LeaseUntil time.Time
	// EndAnnounced says the terminal event of an ended run is confirmed in
	// the stream (always false while running).
	EndAnnounced bool
	// InputTokens and OutputTokens are the tokens the run's model calls
	// used, as its agent reported them (FinishRun); 0 when unknown.
	InputTokens  int64
	OutputTokens int64
}

// Outcome is how a run ended: what FinishRun records.
type Outcome struct {
	UserID string
	RunID  string
	// Status is the terminal status the run ends with (else ErrInvalid).
	Status RunStatus
	// EndedAt is when the run ended; zero means now.
	EndedAt time.Time
	// ErrorCode and ErrorMessage say why a run that did not complete ended,
	// e.g. "agent_failed".
	ErrorCode    string
	ErrorMessage string
	// Events are transcript events of the run (see AppendRunEvents) that
	// FinishRun stores in the same transaction when it ends the run; an
	// index already stored is skipped. They must be of UserID's run RunID.
	Events []RunEvent
	// Announced says the run's terminal event is already in the stream;
	// otherwise the run awaits ConfirmEnds, and ClaimEnds hands it out once
	// its lease expires.
	Announced bool
	// InputTokens and OutputTokens are the tokens the run used (negative
	// is ErrInvalid).
	InputTokens  int64
	OutputTokens int64
}

// EndClaim is what ClaimEnds hands out and to whom.
type EndClaim struct {
	Before     time.Time
	Node       string
	LeaseUntil time.Time
	Limit      int
}

// Claim is one claim of an idempotency key: what ClaimIdempotencyKey
// records. UserID and Key must be non-empty and TTL positive (else
// ErrInvalid).
type Claim struct {
	UserID string
	Key    string
	// Value is what a repeat of the claim within TTL gets back.
	Value []byte
	// TTL is how long the claim stays live after At.
	TTL time.Duration
	// At is the time of the claim on the caller's clock; zero means now.
	At time.Time
}

// Store persists threads, messages, runs and idempotency keys.
// Implementations must be safe for concurrent use.
//
// A zero time passed to a create method means "now". IDs are opaque strings
// chosen by the caller (ULIDs) and unique per kind of row across all users.
type Store interface {
	// ListThreads returns one page of the user's threads, most recently
	// updated first (ties: greater id first): those after q.After, at most
	// q.Limit of them. more reports that threads remain after the page; the
	// last thread's UpdatedAt and ID are the cursor of the next page.
	ListThreads(ctx context.Context, userID string, q ThreadQuery) (threads []Thread, more bool, err error)
	// RenameThread sets the title of the user's thread (its UpdatedAt does
	// not change) and returns the thread as stored. ErrNotFound if the user
	// owns no such thread, ErrInvalid if !ValidTitle(title).
	RenameThread(ctx context.Context, userID, threadID, title string) (Thread, error)
	// DeleteThread deletes the user's thread with its messages, its runs
	// and their transcripts, in one transaction. ErrNotFound if the user
	// owns no such thread; ErrRunInProgress, deleting nothing, if a run of
	// it is running or waiting for input (a run must end, where its agent
	// is, before its thread can go).
	DeleteThread(ctx context.Context, userID, threadID string) error
	// AddMessage inserts m into thread m.ThreadID, which must exist and be
	// owned by m.UserID (else ErrNotFound), and moves the thread's UpdatedAt
	// forward to m.CreatedAt (never backwards). ErrConflict if the id is
	// taken.
	AddMessage(ctx context.Context, m Message) error
	// ListMessages returns one page of the messages of the user's thread
	// (see MessageQuery), oldest first (ties: insertion order). more reports
	// that messages remain beyond the page in its direction: after its last
	// message (q.Before empty) or before its first (q.Before set).
	// ErrNotFound if the user owns no such thread, else ErrBadCursor if
	// q.After or q.Before is not a message of it. Pages are read with an
	// index range scan from the cursor, whatever the thread's length.
	ListMessages(ctx context.Context, userID, threadID string, q MessageQuery) (msgs []Message, more bool, err error)
	// StartRun records a user message and the run answering it in one
	// transaction, and returns the agent's context. The thread is m.ThreadID,
	// owned by m.UserID:
	//   - newThread non-nil: it is created with its Title (see TitleFrom; a
	//     zero UpdatedAt becomes CreatedAt), its ID and UserID must be m's;
	//     ErrConflict if the id is taken;
	//   - newThread nil: it must exist and be owned by m.UserID, else
	//     ErrNotFound.
	//
	// m is inserted as by AddMessage (Role must be RoleUser, RunID must be
	// r.ID), moving the thread's UpdatedAt forward to m.CreatedAt, and r as
	// running, with its Node and LeaseUntil (r.Status, EndedAt and the error
	// fields are ignored; ThreadID and UserID must be m's, UserMessageID must
	// be m.ID). A mismatch is
	// ErrInvalid. ErrConflict if the id of the thread, m or r is taken.
	//
	// It returns the thread's messages in ListMessages order (oldest first),
	// m included as stored, at most historyLimit of the newest (all of them
	// when historyLimit <= 0), as seen by the transaction.
	//
	// Nothing is written when it fails: no thread, message or run is left
	// without the others.
	StartRun(ctx context.Context, newThread *Thread, m Message, r Run, historyLimit int) ([]Message, error)
	// DiscardRun deletes the user's running run, the user message that
	// started it and, when withThread is set, its thread if no message is
	// left in it, in one transaction: it undoes a StartRun whose message
	// was then refused. ErrNotFound if the user has no such running run.
	DiscardRun(ctx context.Context, userID, runID string, withThread bool) error
	// RenewLeases moves LeaseUntil to until for the runs among runIDs that
	// node holds and that are still running, and returns the ids among runIDs
	// that are not (ended elsewhere, or reaped as lost): node must stop
	// emitting for those.
	RenewLeases(ctx context.Context, node string, runIDs []string, until time.Time) (lost []string, err error)
	// ReapExpired ends, as failed with r.ErrorCode and r.ErrorMessage at
	// r.Before, the running runs whose lease expired before r.Before, at most
	// r.Limit of them, and returns them. Each run is returned to exactly one
	// caller, however many reap concurrently: that caller announces its end.
	ReapExpired(ctx context.Context, r Reap) ([]Run, error)
	// GetRun returns the user's run, or ErrNotFound.
	GetRun(ctx context.Context, userID, runID string) (Run, error)
	// FindRun returns the run runID whoever's it is, or ErrNotFound. Only
	// the admin API calls it: every user-facing read is GetRun, with its
	// user.
	FindRun(ctx context.Context, runID string) (Run, error)
	// ListActiveRuns returns one page of the runs that are running or
	// waiting for input, of every user (q.UserID: of that user only),
	// oldest first (StartedAt, then ID); more reports that active runs lie
	// beyond the page. For the admin API.
	ListActiveRuns(ctx context.Context, q ActiveRunQuery) (runs []Run, more bool, err error)
	// FinishRun moves the user's run o.RunID from running to o.Status, a
	// terminal status, atomically, with o.Events in its transcript: of
	// concurrent calls at most one succeeds (and stores its events).
	// ErrNotRunning if the run already ended, ErrNotFound if o.UserID has no
	// such run.
	FinishRun(ctx context.Context, o Outcome) error
	// SetRunWaiting moves the user's run from RunRunning to RunWaiting
	// (waiting) or back. Setting the status it has is not an error.
	// ErrNotRunning if the run has ended, ErrNotFound if userID has no
	// such run.
	SetRunWaiting(ctx context.Context, userID, runID string, waiting bool) error
	// ConfirmEnds records that the terminal events of the ended runs
	// runIDs are in the stream (Outcome.Announced): ClaimEnds no longer
	// returns them. Unknown and running runs are skipped.
	ConfirmEnds(ctx context.Context, runIDs []string) error
	// TokensUsed returns the tokens (input and output) of the user's runs
	// that started at or after since and have ended: what a daily token
	// quota counts.
	TokensUsed(ctx context.Context, userID string, since time.Time) (int64, error)
	// ClaimEnds hands out the ended runs whose terminal event is not
	// confirmed in the stream and whose lease expired before c.Before (their
	// node died or shut down before the stream took the event), at most
	// c.Limit of them (DefaultReapLimit when <= 0): each is leased to c.Node
	// until c.LeaseUntil, so one claimer at a time announces it, and returned.
	ClaimEnds(ctx context.Context, c EndClaim) ([]Run, error)
	// AppendRunEvents stores evs in the transcript of the user's run runID
	// (see RunEvent), in one transaction; an event whose Index the run
	// already has is skipped, so a retry is harmless. ErrNotFound if the
	// user has no such run; ErrInvalid if an event is not of that run (see
	// ValidateRunEvents).
	AppendRunEvents(ctx context.Context, userID, runID string, evs []RunEvent) error
	// ListRunEvents returns one page of the transcript of the user's run,
	// in Index order; more reports that events remain after it.
	// ErrNotFound if the user has no such run.
	ListRunEvents(ctx context.Context, userID, runID string, q RunEventQuery) (evs []RunEvent, more bool, err error)
	// RunTranscripts returns the user's runs among runIDs (other ids are
	// left out) with their transcripts, by run id: the events of each in
	// Index order, read in ascending run id order until their data totals
	// maxBytes (no bound when <= 0). A run beyond the bound has its events
	// cut short or none, and Complete false.
	RunTranscripts(ctx context.Context, userID string, runIDs []string, maxBytes int) (map[string]*Transcript, error)
	// ClaimIdempotencyKey atomically records c.Value under (c.UserID, c.Key)
	// unless a live entry exists, one recorded less than its ttl before c.At;
	// then it returns that entry's value and claimed=false. Expired entries
	// are replaced. Of concurrent claims of a free key exactly one wins.
	ClaimIdempotencyKey(ctx context.Context, c Claim) (existing []byte, claimed bool, err error)
	// ReleaseIdempotencyKey forgets a claim whose work failed, so the key
	// can be claimed again. Releasing a free key is not an error.
	ReleaseIdempotencyKey(ctx context.Context, userID, key string) error
	// ConfirmIdempotencyKey replaces the value of a claim the caller holds,
	// keeping its expiry: a claim is taken before its work is done and
	// confirmed once it is, so a concurrent repeat can tell the two apart.
	// Confirming a free key is not an error and claims nothing.
	ConfirmIdempotencyKey(ctx context.Context, userID, key string, value []byte) error
	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the store's resources. It may be called more than once.
	Close() error
}

// Title bounds used by TitleFrom.
const (
	MaxTitleRunes = 80
	DefaultTitle  = "New conversation"
)

// TitleFrom derives a thread title from its first message: the first
// non-blank line, trimmed, cut to at most MaxTitleRunes runes including a
// trailing "…" when cut, or DefaultTitle when there is no text.
func TitleFrom(content string) string {
	line := ""
	for l := range strings.Lines(content) {
		if l = strings.TrimSpace(l); l != "" {
			line = l
			break
		}
	}
	if line == "" {
		return DefaultTitle
	}
	line = strings.ToValidUTF8(line, "\uFFFD")
	if utf8.RuneCountInString(line) <= MaxTitleRunes {
		return line
	}
	n := 0
	for i := range line {
		if n == MaxTitleRunes-1 {
			return strings.TrimRightFunc(line[:i], unicode.IsSpace) + "…"
		}
		n++
	}
	return line // unreachable: the line has more runes than MaxTitleRunes
}

// ValidTitle reports whether title can be a thread's title given by its
// owner (RenameThread): valid UTF-8, 1 to MaxTitleRunes runes, no control
// characters, not blank and without leading or trailing space.
func ValidTitle(title string) bool {
	if !utf8.ValidString(title) || strings.TrimSpace(title) != title || title == "" ||
		utf8.RuneCountInString(title) > MaxTitleRunes {
		return false
	}
	return !strings.ContainsFunc(title, unicode.IsControl)
}

// Validate reports an ErrInvalid error if t lacks an id, owner or title.
func (t Thread) Validate() error {
	return required("thread", "id", t.ID, "user id", t.UserID, "title", t.Title)
}

// Validate reports an ErrInvalid error if m lacks an id, thread or owner, or
// has an unknown role.
func (m Message) Validate() error {
	if err := required("message", "id", m.ID, "thread id", m.ThreadID, "user id", m.UserID); err != nil {
		return err
	}
	if m.Role != RoleUser && m.Role != RoleAssistant {
		return fmt.Errorf("%w: message role %q", ErrInvalid, m.Role)
	}
	return nil
}

// Validate reports an ErrInvalid error if r lacks an id, thread, owner or
// agent.
func (r Run) Validate() error {
	return required("run", "id", r.ID, "thread id", r.ThreadID, "user id", r.UserID, "agent", r.Agent)
}

// ValidateStartRun reports an ErrInvalid error unless the arguments of
// Store.StartRun are valid and agree with each other: m a user message of
// r, r its run, in the same thread and of the same user as newThread when
// it is not nil.
func ValidateStartRun(newThread *Thread, m Message, r Run) error {
	if newThread != nil {
		if err := newThread.Validate(); err != nil {
			return err
		}
	}
	if err := m.Validate(); err != nil {
		return err
	}
	if err := r.Validate(); err != nil {
		return err
	}
	switch {
	case m.Role != RoleUser:
		return fmt.Errorf("%w: start run with a message of role %q", ErrInvalid, m.Role)
	case r.ThreadID != m.ThreadID || r.UserID != m.UserID:
		return fmt.Errorf("%w: start run: run and message of different threads or users", ErrInvalid)
	case m.RunID != r.ID || r.UserMessageID != m.ID:
		return fmt.Errorf("%w: start run: message and run do not refer to each other", ErrInvalid)
	case newThread != nil && (newThread.ID != m.ThreadID || newThread.UserID != m.UserID):
		return fmt.Errorf("%w: start run: new thread is not the message's", ErrInvalid)
	}
	return nil
}

// required checks that every value of the (name, value) pairs is non-empty.
func required(kind string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] == "" {
			return fmt.Errorf("%w: %s without %s", ErrInvalid, kind, pairs[i])
		}
	}
	return nil
}

// ErrUnavailable means the database could not be reached: the connection was
// refused, timed out or was lost, or the store is closed. The request may
// succeed later; an HTTP layer answers 503. Backends wrap it.
var ErrUnavailable = errors.New("store: database unavailable")

// LostRuns returns the ids of runIDs that are not in renewed, in the order
// of runIDs, or nil if there is none: what RenewLeases reports as lost once
// a backend knows which runs it renewed.
func LostRuns(runIDs, renewed []string) []string {
	kept := make(map[string]struct{}, len(renewed))
	for _, id := range renewed {
		kept[id] = struct{}{}
	}
	var lost []string
	for _, id := range runIDs {
		if _, ok := kept[id]; !ok {
			lost = append(lost, id)
		}
	}
	return lost
}
