package agui

import (
	"strings"
	"testing"

	"github.com/agentwire/agentwire/protocol"
)

func TestUserFrame(t *testing.T) {
	in := RunAgentInput{ThreadID: "T", RunID: "r", Messages: []Message{
		{ID: "m1", Role: RoleUser, Content: String("first")},
		{ID: "m2", Role: RoleAssistant, Content: String("answer")},
		{ID: "m3", Role: RoleUser, Content: []byte(`[{"type":"text","text":"what is "},{"type":"image","url":"x"},{"type":"text","text":"2+2?"}]`)},
	}}
	f, perr := in.UserFrame()
	if perr != nil {
		t.Fatal(perr)
	}
	if f.Type != protocol.TypeUserMessage || f.Content != "what is 2+2?" || f.ThreadID != "T" || f.ClientMessageID != "m3" {
		t.Fatalf("frame %+v", f)
	}

	bad := map[string]RunAgentInput{
		"no user message": {Messages: []Message{{ID: "a", Role: RoleAssistant, Content: String("x")}}},
		"empty text":      {Messages: []Message{{ID: "a", Role: RoleUser, Content: String("")}}},
		"long text":       {Messages: []Message{{ID: "a", Role: RoleUser, Content: String(strings.Repeat("x", protocol.MaxContentBytes+1))}}},
		"NUL in text":     {Messages: []Message{{ID: "a", Role: RoleUser, Content: String("a\x00")}}},
		"control in id":   {Messages: []Message{{ID: "a\n", Role: RoleUser, Content: String("x")}}},
		"long thread id":  {ThreadID: strings.Repeat("t", protocol.MaxKeyBytes+1), Messages: []Message{{ID: "a", Role: RoleUser, Content: String("x")}}},
	}
	for name, in := range bad {
		if _, perr := in.UserFrame(); perr == nil || perr.Code != protocol.CodeInvalidMessage {
			t.Errorf("%s: %v, want invalid_message", name, perr)
		}
	}
}
