package ws

import (
	"net/http"
	"time"

	"github.com/agentwire/agentwire/internal/httpx"
	hubsse "github.com/agentwire/agentwire/internal/hub/sse"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// ServeSSE serves GET /api/v1/stream: the user's stream as
// text/event-stream, for clients that cannot hold a WebSocket (a proxy that
// blocks the upgrade). It is /ws without the client frames: the same
// checks, answers, connection limit (per node and cluster-wide), queue
// bound, token expiry, drain and shutdown, and the same frames, each one SSE
// event (data: the frame; id: <epoch>:<seq> on stream events), with a
// heartbeat comment every Config.SSEHeartbeat. The position is
// Last-Event-ID, else ?since=&epoch=. Sending is plain HTTP (POST
// /api/v1/messages, POST /api/v1/runs/{id}/stop).
func (s *Server) ServeSSE(w http.ResponseWriter, r *http.Request) {
	adm, ok := s.admit(w, r, func() (protocol.Cursor, error) {
		// EventSource reconnects to the same URL with Last-Event-ID: the
		// header, when there is one, is newer than the query.
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			return protocol.ParseEventID(id)
		}
		q := r.URL.Query()
		return protocol.ParseCursor(q.Get("since"), q.Get("epoch"))
	})
	if !ok {
		return
	}
	user := adm.claims.Subject
	c := hubsse.NewConn(s.cfg.Hub, w, newID(), user, hubsse.Options{Heartbeat: s.cfg.SSEHeartbeat, Expires: adm.claims.ExpiresAt})
	c.HC.Describe("sse", adm.claims.IssuedAt)
	limited, ok := s.place(w, r, c.HC)
	if !ok {
		return
	}
	defer s.leave(c.HC, limited)()
	if !s.redeem(w, r, adm.ticket) { // answers 401 once c is discarded
		c.Discard()
		return
	}

	ctx, cancel := s.opContext()
	_, err := c.HC.Resume(ctx, adm.cur, func(pos stream.Position) []byte {
		return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{
			ConnectionID:        c.HC.ID,
			UserID:              user,
			Epoch:               pos.Epoch,
			HeadSeq:             pos.Head,
			HeartbeatIntervalMS: s.sseHeartbeat().Milliseconds(),
			MaxMessageBytes:     int64(s.cfg.MaxMessageBytes),
		})
	}, resyncFrame)
	cancel()
	if err != nil {
		// Nothing is written yet: answer as a refused connect.
		s.log.Error("join stream", "user", user, "conn", c.HC.ID, "err", err)
		c.Discard()
		httpx.Error(w, http.StatusServiceUnavailable, protocol.CodeUnavailable, "stream backend unavailable")
		return
	}
	c.Serve(r.Context())
}

func (s *Server) sseHeartbeat() time.Duration {
	if s.cfg.SSEHeartbeat > 0 {
		return s.cfg.SSEHeartbeat
	}
	return hubsse.DefaultHeartbeat
}
