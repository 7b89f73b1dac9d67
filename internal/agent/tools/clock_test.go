package tools

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCurrentTime(t *testing.T) {
	t.Parallel()
	fixed := time.Date(2024, 7, 1, 10, 30, 0, 0, time.UTC)
	tool := CurrentTime(func() time.Time { return fixed })
	tests := []struct {
		args, time, zone string
	}{
		{``, "2024-07-01T10:30:00Z", "UTC"},
		{`{}`, "2024-07-01T10:30:00Z", "UTC"},
		{`{"timezone":""}`, "2024-07-01T10:30:00Z", "UTC"},
		{`{"timezone":"Europe/Paris"}`, "2024-07-01T12:30:00+02:00", "Europe/Paris"},
		{`{"timezone":"America/New_York"}`, "2024-07-01T06:30:00-04:00", "America/New_York"},
		{`{"timezone":"Asia/Kolkata"}`, "2024-07-01T16:00:00+05:30", "Asia/Kolkata"},
	}
	for _, tt := range tests {
		got, err := tool.Call(context.Background(), json.RawMessage(tt.args))
		if err != nil {
			t.Errorf("%s: %v", tt.args, err)
			continue
		}
		want := TimeResult{Time: tt.time, Timezone: tt.zone}
		if got != want {
			t.Errorf("%s: got %+v, want %+v", tt.args, got, want)
		}
	}
	for _, bad := range []string{"Mars/Olympus", "Local", "../../etc/passwd", "/etc/localtime", strings.Repeat("A", 100)} {
		args, _ := json.Marshal(map[string]string{"timezone": bad})
		if _, err := tool.Call(context.Background(), args); err == nil || !strings.Contains(err.Error(), "unknown time zone") {
			t.Errorf("%q: err = %v, want unknown time zone", bad, err)
		}
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := Default()
	if r.Len() != 2 {
		t.Fatalf("Len = %d", r.Len())
	}
	names := []string{}
	for _, tool := range r.List() {
		names = append(names, tool.Name())
	}
	if strings.Join(names, ",") != "calculator,current_time" {
		t.Errorf("List order = %v", names)
	}
	if _, ok := r.Get("calculator"); !ok {
		t.Error("Get(calculator) missing")
	}
	if _, ok := r.Get("nope"); ok {
		t.Error("Get(nope) found")
	}
	b, err := json.Marshal(r.Schemas())
	if err != nil {
		t.Fatal(err)
	}
	var schemas []struct {
		Type     string `json:"type"`
		Function struct {
			Name       string         `json:"name"`
			Parameters map[string]any `json:"parameters"`
		} `json:"function"`
	}
	if err := json.Unmarshal(b, &schemas); err != nil {
		t.Fatal(err)
	}
	if len(schemas) != 2 || schemas[0].Type != "function" || schemas[0].Function.Name != "calculator" || schemas[0].Function.Parameters["type"] != "object" {
		t.Errorf("Schemas = %s", b)
	}

	var nilReg *Registry
	if nilReg.Len() != 0 || nilReg.List() != nil || nilReg.Schemas() != nil {
		t.Error("nil registry is not empty")
	}
	if _, ok := nilReg.Get("calculator"); ok {
		t.Error("nil registry Get found a tool")
	}

	defer func() {
		if recover() == nil {
			t.Error("duplicate name did not panic")
		}
	}()
	New(Calculator(), Calculator())
}
