package tools

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zone names work on hosts without /usr/share/zoneinfo (scratch images)
)

// CurrentTime returns the current_time tool: {"timezone": "Europe/Paris"}
// (optional, default UTC) → {"time": RFC 3339, "timezone": name}. now is the
// clock; nil means time.Now.
func CurrentTime(now func() time.Time) Tool {
	if now == nil {
		now = time.Now
	}
	return currentTime{now: now}
}

type currentTime struct{ now func() time.Time }

func (currentTime) Name() string { return "current_time" }

func (currentTime) Description() string {
	return "Returns the current date and time in RFC 3339, in an IANA time zone (default UTC)."
}

func (currentTime) Parameters() json.RawMessage {
	return json.RawMessage(`{"type":"object","properties":{"timezone":{"type":"string","description":"IANA time zone name such as Europe/Paris; default UTC"}},"additionalProperties":false}`)
}

// TimeResult is the result of current_time.
type TimeResult struct {
	Time     string `json:"time"`     // RFC 3339, with the zone's offset
	Timezone string `json:"timezone"` // the IANA name used
}

func (c currentTime) Call(_ context.Context, args json.RawMessage) (any, error) {
	var in struct {
		Timezone string `json:"timezone"`
	}
	if err := decodeArgs(args, &in); err != nil {
		return nil, err
	}
	name := strings.TrimSpace(in.Timezone)
	if name == "" {
		name = "UTC"
	}
	// "Local" would reveal the server's zone and mean nothing to the user.
	if strings.EqualFold(name, "local") || len(name) > 64 {
		return nil, fmt.Errorf("unknown time zone %q", in.Timezone)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("unknown time zone %q: use an IANA name such as Europe/Paris", in.Timezone)
	}
	return TimeResult{Time: c.now().In(loc).Format(time.RFC3339), Timezone: loc.String()}, nil
}
