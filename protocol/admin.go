package protocol

import "time"

// The admin API's shapes (PROTOCOL.md section 16).

// AdminConnections answers GET /api/v1/admin/users/{user}/connections:
// the user's connections on every node that answered. Complete is false
// when a node listed as live did not answer in time (its connections are
// missing from the list).
type AdminConnections struct {
	UserID      string            `json:"user_id"`
	Connections []AdminConnection `json:"connections"`
	Nodes       []string          `json:"nodes"`
	Answered    []string          `json:"answered"`
	Complete    bool              `json:"complete"`
}

// AdminConnection is one live connection: its node, its transport
// (websocket, sse or agui), when it connected and the newest event placed
// on it (queued or written).
type AdminConnection struct {
	ID          string    `json:"id"`
	Node        string    `json:"node"`
	Transport   string    `json:"transport"`
	ConnectedAt time.Time `json:"connected_at"`
	LastSeq     uint64    `json:"last_seq"`
	Epoch       string    `json:"epoch,omitempty"`
}

// AdminRun is a running or waiting run in GET /api/v1/admin/runs (a page:
// {"runs":[…],"next":…,"has_more":…}).
type AdminRun struct {
	RunID      string     `json:"run_id"`
	ThreadID   string     `json:"thread_id"`
	UserID     string     `json:"user_id"`
	Agent      string     `json:"agent"`
	Status     string     `json:"status"`
	Node       string     `json:"node"`
	StartedAt  time.Time  `json:"started_at"`
	LeaseUntil *time.Time `json:"lease_until,omitempty"`
}

// AdminCancel answers POST /api/v1/admin/runs/{id}/cancel.
type AdminCancel struct {
	RunID    string `json:"run_id"`
	UserID   string `json:"user_id"`
	ThreadID string `json:"thread_id"`
	Node     string `json:"node"`
}

// AdminRevokeRequest is the optional body of POST
// /api/v1/admin/users/{user}/revoke.
type AdminRevokeRequest struct {
	Before *time.Time `json:"before,omitempty"`
}

// AdminUserAction answers the disconnect and revoke of a user.
type AdminUserAction struct {
	UserID        string    `json:"user_id"`
	Action        string    `json:"action"`
	RevokedBefore time.Time `json:"revoked_before,omitzero"`
}

// AdminNodes answers GET /api/v1/admin/nodes.
type AdminNodes struct {
	Nodes []string `json:"nodes"`
}
