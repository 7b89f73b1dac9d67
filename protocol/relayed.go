package protocol

import "encoding/json"

// Stream event types of a run that relay what an AG-UI agent server
// reported (--agent agui) beyond the run's own vocabulary: its shared state,
// its steps, its activities, and its application events. Each has its data
// struct below. A run may emit any number of them between agent_started and
// its terminal event; they change nothing in the run's order rules.
// Publishing them needs no run: they are not reserved (RunEventType).
const (
	TypeStateSnapshot    = "state_snapshot"
	TypeStateDelta       = "state_delta"
	TypeStepStarted      = "step_started"
	TypeStepFinished     = "step_finished"
	TypeActivitySnapshot = "activity_snapshot"
	TypeActivityDelta    = "activity_delta"
	TypeCustom           = "custom"
	TypeRaw              = "raw"
)

// RelayedEventType reports whether typ is one of the relayed types above:
// the only types an agent may emit besides the run's own (agent.Emitter's
// Event method refuses the others).
func RelayedEventType(typ string) bool {
	switch typ {
	case TypeStateSnapshot, TypeStateDelta, TypeStepStarted, TypeStepFinished,
		TypeActivitySnapshot, TypeActivityDelta, TypeCustom, TypeRaw:
		return true
	}
	return false
}

// StateSnapshot is the data of state_snapshot: the agent's whole state,
// any JSON value, replacing the previous one.
type StateSnapshot struct {
	Snapshot json.RawMessage `json:"snapshot"`
}

// StateDelta is the data of state_delta: a JSON Patch (RFC 6902) array
// to apply to the state of the latest state_snapshot.
type StateDelta struct {
	Delta json.RawMessage `json:"delta"`
}

// Step is the data of step_started and step_finished: a named step of the
// agent's work.
type Step struct {
	StepName string `json:"step_name"`
}

// ActivitySnapshot is the data of activity_snapshot: structured progress
// (not conversation content) a UI renders as its own widget. Content is a
// JSON object; Replace (default true) says whether it replaces the
// activity's content.
type ActivitySnapshot struct {
	MessageID    string          `json:"message_id"`
	ActivityType string          `json:"activity_type"`
	Content      json.RawMessage `json:"content"`
	Replace      *bool           `json:"replace,omitempty"`
}

// ActivityDelta is the data of activity_delta: a JSON Patch array to apply
// to the content of the activity MessageID.
type ActivityDelta struct {
	MessageID    string          `json:"message_id"`
	ActivityType string          `json:"activity_type"`
	Patch        json.RawMessage `json:"patch"`
}

// Custom is the data of custom: an application's own event, by name, with
// any JSON value.
type Custom struct {
	Name  string          `json:"name"`
	Value json.RawMessage `json:"value"`
}

// Raw is the data of raw: an event of the agent's own framework passed
// through untranslated; Source names that framework when known.
type Raw struct {
	Event  json.RawMessage `json:"event"`
	Source string          `json:"source,omitempty"`
}

// StateSnapshot returns e's data when e is a well-formed state_snapshot.
func (e Event) StateSnapshot() (StateSnapshot, bool) {
	return decodeData[StateSnapshot](e, TypeStateSnapshot)
}

// StateDelta returns e's data when e is a well-formed state_delta.
func (e Event) StateDelta() (StateDelta, bool) { return decodeData[StateDelta](e, TypeStateDelta) }

// Step returns e's data when e is a well-formed step_started or
// step_finished.
func (e Event) Step() (Step, bool) {
	if e.Type == TypeStepFinished {
		return decodeData[Step](e, TypeStepFinished)
	}
	return decodeData[Step](e, TypeStepStarted)
}

// ActivitySnapshot returns e's data when e is a well-formed activity_snapshot.
func (e Event) ActivitySnapshot() (ActivitySnapshot, bool) {
	return decodeData[ActivitySnapshot](e, TypeActivitySnapshot)
}

// ActivityDelta returns e's data when e is a well-formed activity_delta.
func (e Event) ActivityDelta() (ActivityDelta, bool) {
	return decodeData[ActivityDelta](e, TypeActivityDelta)
}

// Custom returns e's data when e is a well-formed custom.
func (e Event) Custom() (Custom, bool) { return decodeData[Custom](e, TypeCustom) }

// Raw returns e's data when e is a well-formed raw.
func (e Event) Raw() (Raw, bool) { return decodeData[Raw](e, TypeRaw) }
