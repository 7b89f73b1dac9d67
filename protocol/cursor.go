package protocol

import (
	"bytes"
	"errors"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// Cursor is a client's position in its user's stream: the last seq it has
// and the epoch that seq belongs to. It is what the ?since=&epoch= query of
// /ws and GET /api/v1/events and the resume frame carry.
//
// The zero Cursor asks for everything still retained, in any epoch. A Cursor
// with None set is no position at all: no replay, continue live from the
// stream's head (a connect without since and epoch).
type Cursor struct {
	Seq   uint64 // the last seq the client has; 0: none yet
	Epoch string // the epoch of Seq; "" matches any
	None  bool   // no position: Seq and Epoch are ignored
}

// ErrBadSince is ParseCursor's error for a since that is not a decimal
// integer in [0, 2^64-1].
var ErrBadSince = errors.New("since must be a non-negative integer")

// ParseCursor reads a position from the text of a ?since=&epoch= query
// ("" for an absent parameter). since alone, or epoch alone (from the start
// of the retained history), is a position; neither is None.
func ParseCursor(since, epoch string) (Cursor, error) {
	if since == "" {
		return Cursor{Epoch: epoch, None: epoch == ""}, nil
	}
	n, err := parseSeq(since)
	if err != nil {
		return Cursor{}, ErrBadSince
	}
	return Cursor{Seq: n, Epoch: epoch}, nil
}

// SetQuery sets the since and epoch parameters of q to c, as a client
// connects or polls with it: since always (0 too), epoch when known, and
// nothing for None. ParseCursor reads them back.
func (c Cursor) SetQuery(q url.Values) {
	if c.None {
		return
	}
	q.Set("since", strconv.FormatUint(c.Seq, 10))
	if c.Epoch != "" {
		q.Set("epoch", c.Epoch)
	}
}

// errSeqRange is parseSeq's error for digits beyond 2^64-1.
var errSeqRange = errors.New("since exceeds 18446744073709551615")

// parseSeq is the one parser of a since: a non-empty run of decimal digits
// whose value fits in 64 bits. It reads the query parameter and the resume
// frame's JSON integer alike. It fails with ErrBadSince or errSeqRange.
func parseSeq[T string | []byte](s T) (n uint64, err error) {
	if len(s) == 0 {
		return 0, ErrBadSince
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, ErrBadSince
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, errSeqRange
		}
		n = n*10 + d
	}
	return n, nil
}

// EventID is the SSE id of the stream event seq of epoch, "<epoch>:<seq>":
// what GET /api/v1/stream writes on every stream event and what a client's
// Last-Event-ID carries back (ParseEventID reads it).
func EventID(epoch string, seq uint64) string {
	return epoch + ":" + strconv.FormatUint(seq, 10)
}

// ErrBadEventID is ParseEventID's error for an id that is not
// "<epoch>:<seq>".
var ErrBadEventID = errors.New("Last-Event-ID must be <epoch>:<seq>")

// ParseEventID reads a Last-Event-ID, "<epoch>:<seq>" (the seq after the
// last colon), as the position to resume after. "" is None: no position.
func ParseEventID(id string) (Cursor, error) {
	if id == "" {
		return Cursor{None: true}, nil
	}
	i := strings.LastIndexByte(id, ':')
	if i < 0 {
		return Cursor{}, ErrBadEventID
	}
	n, err := parseSeq(id[i+1:])
	if err != nil {
		return Cursor{}, ErrBadEventID
	}
	return Cursor{Seq: n, Epoch: id[:i]}, nil
}

// FrameCursor reads the position of a stream event's frame, as EncodeEvent
// writes it ({"type":…,"seq":…,"epoch":…, …}), without decoding the rest.
// ok is false for any other frame (connection_established, ack,
// resync_required …).
func FrameCursor(frame []byte) (c Cursor, ok bool) {
	const typ, seq, epoch = `{"type":`, `,"seq":`, `,"epoch":"`
	b, found := bytes.CutPrefix(frame, []byte(typ))
	if !found || len(b) == 0 || b[0] != '"' {
		return Cursor{}, false
	}
	i := stringEnd(b, 0) // just past the type's closing quote
	if i >= len(b) || b[i-1] != '"' {
		return Cursor{}, false
	}
	if b, found = bytes.CutPrefix(b[i:], []byte(seq)); !found {
		return Cursor{}, false
	}
	j := 0
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		j++
	}
	n, err := parseSeq(b[:j])
	if err != nil {
		return Cursor{}, false
	}
	if b, found = bytes.CutPrefix(b[j:], []byte(epoch)); !found {
		return Cursor{}, false
	}
	k := bytes.IndexByte(b, '"')
	if k < 0 || bytes.IndexByte(b[:k], '\\') >= 0 {
		return Cursor{}, false // epochs are never escaped (see the stream backends)
	}
	return Cursor{Seq: n, Epoch: string(b[:k])}, true
}
