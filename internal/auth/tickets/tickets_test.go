package tickets

import (
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/agentwire/agentwire/internal/auth"
)

// TestTickets runs in a synctest bubble: time.Sleep moves the store's
// clock (time.Now) exactly.
func TestTickets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sub     string
		life    time.Duration // of the token, from Issue
		wait    time.Duration // between Issue and the first Redeem
		want    error         // of the first Redeem
		reissue bool          // whether a second Redeem is attempted (always auth.ErrTicket)
	}{
		{"fresh", "alice", time.Hour, 0, nil, true},
		{"just before expiry", "alice", time.Hour, TTL - time.Nanosecond, nil, true},
		{"at expiry", "alice", time.Hour, TTL, auth.ErrTicket, true},
		{"after expiry", "alice", time.Hour, time.Hour / 2, auth.ErrTicket, false},
		{"token expired since", "bob", 10 * time.Second, 15 * time.Second, auth.ErrExpired, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				claims := auth.Claims{Subject: tt.sub, ExpiresAt: start.Add(tt.life)}
				s := NewMemory(0, nil)
				ticket, exp, err := s.Issue(t.Context(), claims)
				if err != nil {
					t.Fatal(err)
				}
				if !exp.Equal(start.Add(TTL)) {
					t.Fatalf("expiresAt = %v, want %v", exp, start.Add(TTL))
				}
				if b, err := base64.RawURLEncoding.DecodeString(ticket); err != nil || len(b) != 32 {
					t.Fatalf("ticket %q is not 32 bytes of base64url (%v)", ticket, err)
				}
				time.Sleep(tt.wait)
				c, err := s.Redeem(t.Context(), ticket)
				if !errors.Is(err, tt.want) || (tt.want != nil) == (err == nil) {
					t.Fatalf("Redeem err = %v, want %v", err, tt.want)
				}
				if err == nil && c != claims {
					t.Fatalf("claims = %+v, want %+v (the token's expiry, not the ticket's)", c, claims)
				}
				if tt.reissue {
					if _, err := s.Redeem(t.Context(), ticket); !errors.Is(err, auth.ErrTicket) {
						t.Fatalf("second Redeem err = %v, want auth.ErrTicket", err)
					}
				}
			})
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
	synctest.Test(t, testTicketsPurge)
}

func testTicketsPurge(t *testing.T) {
	s := NewMemory(TTL, nil)
	alice := auth.Claims{Subject: "alice", ExpiresAt: time.Now().Add(24 * time.Hour)}
	var first string
	for i := range 1000 {
		ticket, _, err := s.Issue(t.Context(), alice)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = ticket
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := s.Redeem(t.Context(), first); err != nil { // redeemed tickets are purged too
		t.Fatal(err)
	}
	time.Sleep(TTL)
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
