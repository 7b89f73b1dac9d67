package chaos

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agentwire/agentwire/internal/testproc"
	"github.com/gorilla/websocket"
)

// frame is any server frame, decoded loosely.
type frame struct {
	Type     string          `json:"type"`
	Seq      uint64          `json:"seq"`
	Epoch    string          `json:"epoch"`
	TS       time.Time       `json:"ts"`
	ThreadID string          `json:"thread_id"`
	RunID    string          `json:"run_id"`
	Data     json.RawMessage `json:"data"`
	Ref      string          `json:"ref"`
	Code     string          `json:"code"`
	HeadSeq  uint64          `json:"head_seq"`
	Reason   string          `json:"reason"`
	UserID   string          `json:"user_id"`
}

// got is one frame as a tab saw it.
type got struct {
	frame
	at   time.Time
	conn int // which of the tab's connections
}

// tab is one browser tab of a user: it keeps one socket to its node, resumes
// from its last seq after every drop, and records every frame it receives.
// It deliberately does not dedupe: duplicates and gaps are what it checks.
type tab struct {
	s    *soak
	user string
	name string // user/tabN
	node func() *node

	mu       sync.Mutex
	conn     *websocket.Conn
	connN    int
	epoch    string
	last     uint64
	frames   []got // stream events and resync_required, in arrival order
	estab    []frame
	pending  map[string]chan frame // acks/errors by ref
	dialErrs map[string]int        // "status 503", "refused", …
}

func newTab(s *soak, user string, i int, node func() *node) *tab {
	return &tab{s: s, user: user, name: user + "/tab" + strconv.Itoa(i), node: node,
		pending: map[string]chan frame{}, dialErrs: map[string]int{}}
}

// run keeps the tab connected until stop is closed.
func (tb *tab) run(stop <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-stop:
			return
		default:
		}
		c, err := tb.dial()
		if err != nil {
			select {
			case <-stop:
				return
			case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff)))):
			}
			backoff = min(backoff*2, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		tb.read(c)
	}
}

// dial connects with resume from what the tab has.
func (tb *tab) dial() (*websocket.Conn, error) {
	tb.mu.Lock()
	u := tb.node().wsURL()
	if tb.epoch != "" {
		u += "?since=" + strconv.FormatUint(tb.last, 10) + "&epoch=" + tb.epoch
	}
	tb.mu.Unlock()
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tb.s.token(tb.user))
	c, resp, err := d.Dial(u, h)
	if err != nil {
		why := "no answer"
		if resp != nil {
			why = "status " + strconv.Itoa(resp.StatusCode)
		}
		tb.mu.Lock()
		tb.dialErrs[why]++
		tb.mu.Unlock()
		tb.s.countErr("connect " + why)
		return nil, err
	}
	tb.mu.Lock()
	tb.conn = c
	tb.connN++
	tb.mu.Unlock()
	tb.s.count(&tb.s.stats.connects)
	return c, nil
}

// read records frames until the connection ends.
func (tb *tab) read(c *websocket.Conn) {
	defer func() {
		tb.mu.Lock()
		if tb.conn == c {
			tb.conn = nil
		}
		for ref, ch := range tb.pending {
			close(ch)
			delete(tb.pending, ref)
		}
		tb.mu.Unlock()
		c.Close()
	}()
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			return
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			tb.s.violate(invFrame, "%s: frame is not JSON: %.200q", tb.name, b)
			continue
		}
		tb.s.count(&tb.s.stats.frames)
		now := time.Now()
		tb.mu.Lock()
		switch {
		case f.Type == "connection_established":
			if f.UserID != tb.user {
				tb.s.violate(invOtherUser, "%s: connection_established for user %q", tb.name, f.UserID)
			}
			tb.estab = append(tb.estab, f)
			if tb.epoch == "" {
				// Resume from the start of this epoch after a drop, even
				// when no event has arrived yet.
				tb.epoch = f.Epoch
			}
		case f.Type == "resync_required":
			tb.frames = append(tb.frames, got{f, now, tb.connN})
			tb.epoch, tb.last = f.Epoch, f.HeadSeq
		case f.Seq > 0:
			tb.frames = append(tb.frames, got{f, now, tb.connN})
			if tb.epoch == "" {
				tb.epoch = f.Epoch
			}
			if f.Epoch == tb.epoch && f.Seq > tb.last {
				tb.last = f.Seq
			}
		case f.Type == "ack" || f.Type == "error":
			if ch, ok := tb.pending[f.Ref]; ok {
				ch <- f
				delete(tb.pending, f.Ref)
			} else if f.Type == "error" {
				tb.s.countErr("unsolicited " + f.Code)
			}
		}
		tb.mu.Unlock()
	}
}

// drop cuts the socket abruptly: no close frame, as a lost network does.
func (tb *tab) drop() bool {
	tb.mu.Lock()
	c := tb.conn
	tb.mu.Unlock()
	if c == nil {
		return false
	}
	_ = c.UnderlyingConn().Close()
	return true
}

var errNoConn = errors.New("tab not connected")

// request sends a client frame with id and waits for its ack or error; it
// returns errNoConn when the tab has no socket or it ends first.
func (tb *tab) request(f map[string]any, id string, wait time.Duration) (frame, error) {
	ch := make(chan frame, 1)
	tb.mu.Lock()
	c := tb.conn
	if c == nil {
		tb.mu.Unlock()
		return frame{}, errNoConn
	}
	f["id"] = id
	tb.pending[id] = ch
	b, _ := json.Marshal(f)
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := c.WriteMessage(websocket.TextMessage, b)
	tb.mu.Unlock()
	if err != nil {
		_ = c.UnderlyingConn().Close()
		return frame{}, errNoConn
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return frame{}, errNoConn
		}
		return r, nil
	case <-time.After(wait):
		tb.mu.Lock()
		delete(tb.pending, id)
		tb.mu.Unlock()
		return frame{}, errors.New("no answer within " + wait.String())
	}
}

// finalResume drops the socket, then makes one last connection with resume
// from the tab's position and reads until it has head, the server's head.
func (tb *tab) finalResume(head uint64, within time.Duration) error {
	tb.drop()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		c, err := tb.dial()
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		done := make(chan struct{})
		go func() { tb.read(c); close(done) }()
		ok := testproc.WaitFor(time.Until(deadline), func() bool {
			tb.mu.Lock()
			defer tb.mu.Unlock()
			return tb.last >= head
		})
		_ = c.UnderlyingConn().Close()
		<-done
		if ok {
			return nil
		}
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return errors.New("final resume: reached seq " + strconv.FormatUint(tb.last, 10) + " of head " + strconv.FormatUint(head, 10))
}
