package protocol

import "strconv"

// CloseCode is a WebSocket close code of the contract (PROTOCOL.md section
// 6). Each value says whether a client should reconnect; a client that does
// resumes from the last seq and epoch it handled.
type CloseCode int

// Close codes. Values below 4000 are RFC 6455's; 4000 and up are agentwire's.
const (
	// CloseNormal (1000): the connection is over by agreement: the client
	// closed it, or its socket's read side ended. Do not reconnect.
	CloseNormal CloseCode = 1000
	// CloseGoingAway (1001): the server is shutting down or restarting,
	// after writing every frame queued for the connection. Reconnect with
	// resume (to another node, or to this one once it is back).
	CloseGoingAway CloseCode = 1001
	// CloseProtocolError (1002): the client sent a frame breaking RFC 6455
	// (reserved opcode or bits, an unmasked frame, bad fragmentation, a long
	// or fragmented control frame, a bad close payload). Do not reconnect:
	// fix the client.
	CloseProtocolError CloseCode = 1002
	// CloseAbnormal (1006) is never sent: it is what a client sees when the
	// connection ended without a close frame (a network failure, a killed
	// node). Reconnect with resume, with backoff.
	CloseAbnormal CloseCode = 1006
	// ClosePolicyViolation (1008): a policy failure. This version never
	// sends it (policy is checked before the upgrade); do not reconnect.
	ClosePolicyViolation CloseCode = 1008
	// CloseTooLarge (1009): a client frame over max_message_bytes. Do not
	// reconnect: fix the client.
	CloseTooLarge CloseCode = 1009
	// CloseInternalError (1011): the stream backend failed while placing
	// the connection, or a write to the socket failed. Reconnect with
	// resume, with backoff.
	CloseInternalError CloseCode = 1011
	// CloseNoPong (4000): no pong arrived within the pong timeout of a ping,
	// or a frame begun was not finished in time. Reconnect with resume.
	CloseNoPong CloseCode = 4000
	// CloseTokenExpired (4001): the token's exp passed. Get a fresh token,
	// then reconnect with resume.
	CloseTokenExpired CloseCode = 4001
	// CloseDisconnected (4003): an admin disconnected the user, or revoked
	// the token the connection came with (the admin API). Do not reconnect
	// at once: a revoked token is refused (401); get a fresh token first.
	CloseDisconnected CloseCode = 4003
	// CloseSlowConsumer (4008): the connection's outbound queue went over
	// its bound (--max-queue-bytes): the client did not read fast enough.
	// Reconnect with resume; the missed events may have left the retained
	// window, then resync_required follows.
	CloseSlowConsumer CloseCode = 4008
	// CloseTooManyErrors (4029): more than 20 error frames within 10 s. Back
	// off (seconds, not milliseconds), then reconnect with resume.
	CloseTooManyErrors CloseCode = 4029
)

// String returns the code in decimal, as the contract and the metric label
// agentwire_closes_total{code} name it.
func (c CloseCode) String() string {
	switch c {
	case CloseNormal:
		return "1000"
	case CloseGoingAway:
		return "1001"
	case CloseProtocolError:
		return "1002"
	case CloseAbnormal:
		return "1006"
	case ClosePolicyViolation:
		return "1008"
	case CloseTooLarge:
		return "1009"
	case CloseInternalError:
		return "1011"
	case CloseNoPong:
		return "4000"
	case CloseTokenExpired:
		return "4001"
	case CloseDisconnected:
		return "4003"
	case CloseSlowConsumer:
		return "4008"
	case CloseTooManyErrors:
		return "4029"
	}
	return strconv.Itoa(int(c))
}

// ErrorCode is the code of an error frame, of an HTTP error body or of an
// agent_error event (PROTOCOL.md section 10). Each value says whether the
// request may be retried as it is.
type ErrorCode string

// Codes of error frames (PROTOCOL.md section 5). The connection stays open.
const (
	// CodeBadJSON: the frame (or an HTTP body) is not one valid JSON object
	// in a UTF-8 text message. Do not retry as is.
	CodeBadJSON ErrorCode = "bad_json"
	// CodeUnknownType: the frame's type is missing, not a string or not a
	// known type. Do not retry as is.
	CodeUnknownType ErrorCode = "unknown_type"
	// CodeInvalidMessage: a field is missing, of the wrong type or out of
	// its bounds. Do not retry as is.
	CodeInvalidMessage ErrorCode = "invalid_message"
	// CodeNotFound: the thread or run (or, over HTTP, the path) does not
	// exist or belongs to another user. Do not retry.
	CodeNotFound ErrorCode = "not_found"
	// CodeRateLimited: the frame was over the connection's rate, or a resume
	// came while the previous replay was still being written; it was
	// dropped. Retry later.
	CodeRateLimited ErrorCode = "rate_limited"
	// CodeTooManyRuns: the user already has the maximum number of runs
	// running; nothing was created. Retry once a run has ended.
	CodeTooManyRuns ErrorCode = "too_many_runs"
	// CodeQuotaExceeded: the user's runs used their daily token quota
	// (--user-token-quota) today (UTC); nothing was created. Retry after
	// midnight UTC.
	CodeQuotaExceeded ErrorCode = "quota_exceeded"
	// CodeConflict (HTTP 409): a user_input for a request that was already
	// answered (the first answer wins) or whose run has ended. Do not retry.
	// Also DELETE /api/v1/threads/{id} of a thread with a run still running
	// or waiting for input: stop the run, then retry.
	CodeConflict ErrorCode = "conflict"
	// CodeInternal: a backend (store, stream, Redis) failed or the server is
	// shutting down; nothing half-done was kept. Retry (with the same
	// client_message_id).
	CodeInternal ErrorCode = "internal_error"
)

// Codes of HTTP error bodies (PROTOCOL.md sections 7 and 10), besides
// CodeBadJSON, CodeNotFound and CodeInternal.
const (
	// CodeInvalidJSON (400): a publish body that is not valid UTF-8. Do not
	// retry as is.
	CodeInvalidJSON ErrorCode = "invalid_json"
	// CodeInvalidRequest (400): a field or query parameter out of its rules.
	// Do not retry as is.
	CodeInvalidRequest ErrorCode = "invalid_request"
	// CodeBadRequest (400): /ws without a valid WebSocket handshake. Do not
	// retry as is.
	CodeBadRequest ErrorCode = "bad_request"
	// CodeUnauthorized (401): a missing, invalid or expired token, ticket or
	// API key. Retry with fresh credentials.
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeForbiddenOrigin (403): /ws from an origin not allowed. Do not
	// retry.
	CodeForbiddenOrigin ErrorCode = "forbidden_origin"
	// CodeForbidden (403): valid credentials of the wrong kind for the
	// endpoint, e.g. a publish API key or a user's token on the admin API.
	// Do not retry.
	CodeForbidden ErrorCode = "forbidden"
	// CodeMethodNotAllowed (405): a known path with another method; the
	// Allow header names the right one. Do not retry as is.
	CodeMethodNotAllowed ErrorCode = "method_not_allowed"
	// CodeReservedType (409): publishing an agent event type without a
	// run_id. Do not retry as is.
	CodeReservedType ErrorCode = "reserved_type"
	// CodeBatchAborted: an event of a batch publish not appended because
	// another event of the same user in the batch was refused.
	CodeBatchAborted ErrorCode = "batch_aborted"
	// CodeRunNotRunning (409): publishing an agent event to a run that is not
	// running on the answering node. Do not retry.
	CodeRunNotRunning ErrorCode = "run_not_running"
	// CodeTooLarge (413): a request body over 128 KiB, or publish data over
	// 64 KiB. Do not retry as is.
	CodeTooLarge ErrorCode = "too_large"
	// CodeTooManyConnections (429): /ws over the per-user connection limit.
	// Retry once a connection has closed.
	CodeTooManyConnections ErrorCode = "too_many_connections"
	// CodeTooManyRequests (429): too many list reads of the user in flight on
	// a node. Retry after Retry-After.
	CodeTooManyRequests ErrorCode = "too_many_requests"
	// CodeNoSigningKey (501): dev login on a server with no HS256 secret. Do
	// not retry.
	CodeNoSigningKey ErrorCode = "no_signing_key"
	// CodeUnavailable (503): the store, the stream backend or Redis
	// coordination failed. Retry (publish with the same idempotency_key).
	CodeUnavailable ErrorCode = "unavailable"
	// CodeShuttingDown (503): /ws while the server drains. Retry, on another
	// node or once it is back.
	CodeShuttingDown ErrorCode = "shutting_down"
)

// Codes of agent_error events (PROTOCOL.md section 4): how a run ended. The
// run is over; sending the message again starts a new one.
const (
	// CodeCancelled: stop_agent, or the server shut down during the run.
	CodeCancelled ErrorCode = "cancelled"
	// CodeTimeout: the run took longer than --run-timeout.
	CodeTimeout ErrorCode = "timeout"
	// CodeAgentFailed: the agent failed, returned without finishing, or its
	// service answered badly.
	CodeAgentFailed ErrorCode = "agent_failed"
	// CodeNodeLost: the node running the run died; another node ended it.
	CodeNodeLost ErrorCode = "node_lost"
	// CodeInputTimeout: the run asked its user (input_required) and no
	// answer came within --input-timeout.
	CodeInputTimeout ErrorCode = "input_timeout"
)

// String returns the code as it goes on the wire.
func (c ErrorCode) String() string { return string(c) }

// ResyncReason says why a resume position could not be served
// (resync_required, and GET /api/v1/events). The client reloads its state
// over REST and continues from the head_seq it is given.
type ResyncReason string

// Resync reasons.
const (
	// ReasonEpochChanged: the stream's history was lost (its epoch differs
	// from the client's); seq numbering restarted.
	ReasonEpochChanged ResyncReason = "epoch_changed"
	// ReasonTooOld: events after the client's since are no longer retained.
	ReasonTooOld ResyncReason = "history_expired"
	// ReasonAhead: the client's since is beyond the stream's head.
	ReasonAhead ResyncReason = "since_ahead_of_head"
)
