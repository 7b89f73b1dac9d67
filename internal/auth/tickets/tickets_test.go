package tickets

import (
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/auth"
)

func TestTickets(t *testing.T) {
	t.Parallel()
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	alice := auth.Claims{Subject: "alice", ExpiresAt: start.Add(time.Hour)}
	shortLived := auth.Claims{Subject: "bob", ExpiresAt: start.Add(10 * time.Second)}

	tests := []struct {
		name    string
		claims  auth.Claims
		wait    time.Duration // between Issue and the first Redeem
		want    error         // of the first Redeem
		reissue bool          // whether a second Redeem is attempted (always auth.ErrTicket)
	}{
		{"fresh", alice, 0, nil, true},
		{"just before expiry", alice, TTL - time.Nanosecond, nil, true},
		{"at expiry", alice, TTL, auth.ErrTicket, true},
		{"after expiry", alice, time.Hour / 2, auth.ErrTicket, false},
		{"token expired since", shortLived, 15 * time.Second, auth.ErrExpired, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := newFakeClock(start)
			s := NewMemory(0, clock.Now)
			ticket, exp, err := s.Issue(t.Context(), tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			if !exp.Equal(start.Add(TTL)) {
				t.Fatalf("expiresAt = %v, want %v", exp, start.Add(TTL))
			}
			if b, err := base64.RawURLEncoding.DecodeString(ticket); err != nil || len(b) != 32 {
				t.Fatalf("ticket %q is not 32 bytes of base64url (%v)", ticket, err)
			}
			clock.Advance(tt.wait)
			c, err := s.Redeem(t.Context(), ticket)
			if !errors.Is(err, tt.want) || (tt.want != nil) == (err == nil) {
				t.Fatalf("Redeem err = %v, want %v", err, tt.want)
			}
			if err == nil && c != tt.claims {
				t.Fatalf("claims = %+v, want %+v (the token's expiry, not the ticket's)", c, tt.claims)
			}
			if tt.reissue {
				if _, err := s.Redeem(t.Context(), ticket); !errors.Is(err, auth.ErrTicket) {
					t.Fatalf("second Redeem err = %v, want auth.ErrTicket", err)
				}
			}
		})
	}
}

func TestTicketsErrors(t *testing.T) {
	t.Parallel()
	s := NewMemory(time.Minute, nil)
	tests := []struct {
		name   string
		ticket string
		want   error
	}{
		{"empty", "", auth.ErrMissing},
		{"unknown", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", auth.ErrTicket},
		{"garbage", "not a ticket", auth.ErrTicket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, err := s.Redeem(t.Context(), tt.ticket); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if _, _, err := s.Issue(t.Context(), auth.Claims{Subject: "alice", ExpiresAt: time.Now().Add(-time.Second)}); !errors.Is(err, auth.ErrExpired) {
		t.Fatalf("Issue for an expired token: err = %v, want auth.ErrExpired", err)
	}
	if _, _, err := s.Issue(t.Context(), auth.Claims{ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, auth.ErrInvalid) {
		t.Fatalf("Issue without subject: err = %v, want auth.ErrInvalid", err)
	}
}

func TestTicketsRedeemRace(t *testing.T) {
	t.Parallel()
	s := NewMemory(TTL, nil)
	ticket, _, err := s.Issue(t.Context(), auth.Claims{Subject: "alice", ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	var ok, rejected atomic.Int32
	var wg sync.WaitGroup
	startGun := make(chan struct{})
	for range 50 {
		wg.Go(func() {
			<-startGun
			_, err := s.Redeem(t.Context(), ticket)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, auth.ErrTicket):
				rejected.Add(1)
			default:
				t.Errorf("Redeem: %v", err)
			}
		})
	}
	close(startGun)
	wg.Wait()
	if ok.Load() != 1 || rejected.Load() != 49 {
		t.Fatalf("successes = %d, rejections = %d; want 1 and 49", ok.Load(), rejected.Load())
	}
}

func TestTicketsPurge(t *testing.T) {
	t.Parallel()
	clock := newFakeClock(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := NewMemory(TTL, clock.Now)
	alice := auth.Claims{Subject: "alice", ExpiresAt: clock.Now().Add(24 * time.Hour)}
	var first string
	for i := range 1000 {
		ticket, _, err := s.Issue(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = ticket
		}
		clock.Advance(time.Millisecond)
	}
	if _, err := s.Redeem(t.Context(), first); err != nil { // redeemed tickets are purged too
		t.Fatal(err)
	}
	clock.Advance(TTL)
	if _, _, err := s.Issue(t.Context(), alice); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tickets) != 1 || len(s.queue) != 1 {
		t.Fatalf("after purge: %d tickets, %d queued; want 1 and 1", len(s.tickets), len(s.queue))
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeClock is a settable clock safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
