package e2e

import (
	"encoding/json"
	"sync"
	"testing"
)

// TestTicketRace: 50 concurrent connects with one ticket: exactly one
// upgrade succeeds, the 49 others get 401 with error.code "unauthorized".
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
		default:
			t.Errorf("connect #%d: status %d code %q err %v", i, o.status, o.code, o.err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d connects with one ticket succeeded, want exactly 1", wins, n)
	}
}
