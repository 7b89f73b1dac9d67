package protocol

import "encoding/json"

// Human-in-the-loop (PROTOCOL.md sections 3 and 4): a run asks its user with
// input_required and pauses; the first user_input frame (or POST
// /api/v1/runs/{id}/input) that answers it becomes input_received and the run
// goes on.
const (
	TypeUserInput     = "user_input"     // client frame
	TypeInputRequired = "input_required" // stream event of a run
	TypeInputReceived = "input_received" // stream event of a run
)

// InputKind is what an input_required asks for.
type InputKind string

// Input kinds.
const (
	// InputApproval asks for a yes or no: the answer's approved.
	InputApproval InputKind = "approval"
	// InputText asks for free text: the answer's text.
	InputText InputKind = "text"
	// InputChoice asks for one of options: the answer's choice.
	InputChoice InputKind = "choice"
)

// Bounds of an input request and its answer, in bytes.
const (
	// MaxPromptBytes bounds input_required's prompt.
	MaxPromptBytes = 4096
	// MaxOptions bounds input_required's options; each is at most
	// MaxKeyBytes.
	MaxOptions = 32
	// MaxSchemaBytes bounds input_required's schema.
	MaxSchemaBytes = 16384
)

// InputRequired is the data of input_required: the run waits for the answer
// to RequestID.
type InputRequired struct {
	RequestID  string          `json:"request_id"`
	Kind       InputKind       `json:"kind"`
	Prompt     string          `json:"prompt"`
	ToolCallID string          `json:"tool_call_id,omitempty"`
	Options    []string        `json:"options,omitempty"`
	Schema     json.RawMessage `json:"schema,omitempty"`
}

// InputAnswer is an answer to an input request: exactly one of its fields is
// set, the one of the request's kind. It is the answer part of the
// user_input frame and the data of input_received (with RequestID).
type InputAnswer struct {
	Approved *bool   `json:"approved,omitempty"`
	Text     *string `json:"text,omitempty"`
	Choice   *string `json:"choice,omitempty"`
}

// Kind is the kind of request the answer fits ("" when no field is set).
func (a InputAnswer) Kind() InputKind {
	switch {
	case a.Approved != nil:
		return InputApproval
	case a.Text != nil:
		return InputText
	case a.Choice != nil:
		return InputChoice
	}
	return ""
}

// InputReceived is the data of input_received: the answer the run took.
type InputReceived struct {
	RequestID string `json:"request_id"`
	InputAnswer
}

// InputRequired returns e's data when e is a well-formed input_required.
func (e Event) InputRequired() (InputRequired, bool) {
	return decodeData[InputRequired](e, TypeInputRequired)
}

// InputReceived returns e's data when e is a well-formed input_received.
func (e Event) InputReceived() (InputReceived, bool) {
	return decodeData[InputReceived](e, TypeInputReceived)
}
