package protocol

import (
	"errors"
	"math"
	"net/url"
	"strconv"
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
