package e2e

import (
	"encoding/json"
	"sync"
	"testing"
)

// TestTicketRace: 50 concurrent connects with one ticket: exactly one
// upgrade succeeds; the 49 others get 401 with error.code "unauthorized", or
// 429 "too_many_connections". (Every connect holds a place in the user's
// connection limit, 10, from before its ticket is spent until it is refused,
// and a connect refused by that limit does not spend its ticket, as
// docs/PROTOCOL.md section 2 says: on a loaded machine more than 10 are in
// flight at once.) Afterwards the ticket is spent.
func TestTicketRace(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	var tk struct {
		Ticket string `json:"ticket"`
	}
	if code := s.do("POST", "/api/v1/tickets", s.token("racer"), nil, &tk); code != 200 || tk.Ticket == "" {
		t.Fatalf("tickets: %d %+v", code, tk)
	}
	const n = 50
	type outcome struct {
		ok     bool
		status int
		code   string
		err    error
	}
	out := make([]outcome, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := wsDialer(0)
			<-start
			c, resp, err := d.Dial(s.WSURL+"?ticket="+tk.Ticket, nil)
			if err == nil {
				f, rerr := readFrame(c, 5e9)
				c.Close()
				if rerr != nil || f.Type != "connection_established" || f.UserID != "racer" {
					out[i] = outcome{err: rerr, code: string(f.raw)}
					return
				}
				out[i] = outcome{ok: true}
				return
			}
			if resp == nil {
				out[i] = outcome{err: err}
				return
			}
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&e)
			out[i] = outcome{status: resp.StatusCode, code: e.Error.Code}
		}()
	}
	close(start)
	wg.Wait()
	wins := 0
	for i, o := range out {
		switch {
		case o.ok:
			wins++
		case o.status == 401 && o.code == "unauthorized":
		case o.status == 429 && o.code == "too_many_connections":
		default:
			t.Errorf("connect #%d: status %d code %q err %v", i, o.status, o.code, o.err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d connects with one ticket succeeded, want exactly 1", wins, n)
	}
	c, resp, err := wsDialer(0).Dial(s.WSURL+"?ticket="+tk.Ticket, nil)
	if err == nil {
		c.Close()
		t.Fatal("the ticket connected again after the race")
	}
	if resp == nil || resp.StatusCode != 401 {
		t.Fatalf("a connect with the spent ticket: %v %v, want 401", resp, err)
	}
}
