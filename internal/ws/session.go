package ws

import (
	"context"
	"errors"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"

	"github.com/agentwire/agentwire/internal/hub"
	"github.com/agentwire/agentwire/internal/stream"
	"github.com/agentwire/agentwire/protocol"
)

// session is what a connection does with complete client messages, whatever
// the transport reads them: limits, decoding, answers. Its fields other than
// srv and hc are used only by the goroutine reading the connection
// (one at a time, see frameReader.mu).
type session struct {
	srv *Server
	hc  *hub.Conn // its User is the connection's user

	// act is made at the first message: an idle connection carries one
	// pointer, not the limiter, error log and alias bits.
	act *activity
}

// activity is the state of a connection that has sent a message.
type activity struct {
	// span is the session's span (ws.Config.Tracer): with tracing on, the
	// activity is made at connect to hold it; nil when off.
	span    trace.Span
	limiter *rate.Limiter
	errs    []time.Time // times of the latest errors, allocated on the first
	aliases uint8       // bit per deprecated alias already announced
}

// activity returns the connection's activity state, made on first use. Its
// limiter starts full, as if made at connect.
func (ss *session) activity() *activity {
	if ss.act == nil {
		cfg := &ss.srv.cfg
		ss.act = &activity{limiter: rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.RateBurst)}
	}
	return ss.act
}

// join places the connection on the user's stream and queues
// connection_established first. It reports false when the stream failed; the
// connection is then closing with 1011.
func (ss *session) join(cur protocol.Cursor) bool {
	s := ss.srv
	cfg := &s.cfg
	ctx, cancel := s.opContext()
	defer cancel()
	_, err := ss.hc.Resume(ctx, cur, func(pos stream.Position) []byte {
		return protocol.EncodeConnectionEstablished(protocol.ConnectionEstablished{
			ConnectionID:        ss.hc.ID,
			UserID:              ss.hc.User,
			Epoch:               pos.Epoch,
			HeadSeq:             pos.Head,
			HeartbeatIntervalMS: cfg.PingInterval.Milliseconds(),
			MaxMessageBytes:     int64(cfg.MaxMessageBytes),
		})
	}, resyncFrame)
	if err != nil {
		s.log.Error("join stream", "user", ss.hc.User, "conn", ss.hc.ID, "err", err)
		ss.hc.Close(protocol.CloseInternalError, "stream unavailable")
		return false
	}
	return true
}

// message handles one complete client data message (text unless binary is
// set). msg is only valid during the call.
func (ss *session) message(ctx context.Context, binary bool, msg []byte) {
	cfg := &ss.srv.cfg
	m := cfg.Metrics
	m.BytesIn.Add(float64(len(msg)))
	if binary {
		m.FramesIn.WithLabelValues("invalid").Inc()
		ss.fail(&protocol.Error{Code: protocol.CodeBadJSON, Message: "frames must be JSON text messages"})
		return
	}
	if !ss.activity().limiter.Allow() {
		m.FramesIn.WithLabelValues(protocol.CodeRateLimited.String()).Inc()
		ss.fail(&protocol.Error{Code: protocol.CodeRateLimited, Message: "too many frames: slow down"})
		return
	}
	// A text message that is not UTF-8 breaks RFC 6455, which would fail the
	// connection (1007); the contract keeps it open with a bad_json error
	// instead, as for any other frame that is not JSON.
	if !utf8.Valid(msg) {
		m.FramesIn.WithLabelValues("invalid").Inc()
		ss.fail(&protocol.Error{Code: protocol.CodeBadJSON, Message: "frame is not valid UTF-8"})
		return
	}
	f, perr := protocol.Decode(msg)
	if perr != nil {
		m.FramesIn.WithLabelValues("invalid").Inc()
		ss.fail(perr)
		return
	}
	m.FramesIn.WithLabelValues(f.Type).Inc()
	ss.handle(ctx, &f)
}

func resyncFrame(e *stream.ResyncError) []byte {
	return protocol.EncodeResync(e.Position.Epoch, e.Position.Head, e.Reason)
}

func (ss *session) handle(ctx context.Context, f *protocol.Frame) {
	if f.Alias != "" {
		ss.srv.cfg.Metrics.Deprecated.WithLabelValues(f.Alias).Inc()
		if bit, act := aliasBit(f.Alias), ss.activity(); act.aliases&bit == 0 {
			act.aliases |= bit
			ss.hc.Send(protocol.EncodeDeprecation(f.Alias))
		}
	}
	if t := ss.srv.cfg.Tracer; t != nil && ss.act != nil && ss.act.span != nil && f.Type != protocol.TypePing {
		var span trace.Span
		ctx, span = t.StartRoot(trace.ContextWithSpan(ctx, ss.act.span), "frame "+f.Type, trace.SpanKindServer,
			attribute.String("agentwire.frame.type", f.Type), attribute.String("agentwire.conn.id", ss.hc.ID))
		defer span.End()
	}
	switch f.Type {
	case protocol.TypePing:
		ss.hc.Send(protocol.EncodePong(f.ID))
	case protocol.TypeResume:
		_, err := ss.hc.Resume(ctx, f.Cursor, nil, resyncFrame)
		switch {
		case errors.Is(err, hub.ErrReplayBusy):
			// Each replay is a copy of the history: one at a time.
			ss.fail(&protocol.Error{Code: protocol.CodeRateLimited, Message: "the previous resume is still being replayed", Ref: f.ID})
		case err != nil:
			ss.srv.log.Error("resume", "user", ss.hc.User, "conn", ss.hc.ID, "err", err)
			ss.fail(&protocol.Error{Code: protocol.CodeInternal, Message: "stream unavailable, retry", Ref: f.ID})
		}
	case protocol.TypeUserMessage:
		ss.reply(func() (protocol.AckFrame, *protocol.Error) { return ss.srv.cfg.Handler.UserMessage(ctx, ss.hc.User, f) })
	case protocol.TypeStopAgent:
		ss.reply(func() (protocol.AckFrame, *protocol.Error) { return ss.srv.cfg.Handler.StopAgent(ctx, ss.hc.User, f) })
	case protocol.TypeUserInput:
		ss.reply(func() (protocol.AckFrame, *protocol.Error) { return ss.srv.cfg.Handler.UserInput(ctx, ss.hc.User, f) })
	}
}

// reply sends handle's ack, or its error, before any event it caused.
func (ss *session) reply(handle func() (protocol.AckFrame, *protocol.Error)) {
	var perr *protocol.Error
	ss.hc.Reply(func() []byte {
		ack, err := handle()
		if err != nil {
			perr = err
			return nil
		}
		return protocol.EncodeAck(ack)
	})
	if perr != nil {
		ss.fail(perr)
	}
}

// fail sends an error frame and closes with 4029 when the connection has had
// more than ErrorLimit errors within ErrorWindow.
func (ss *session) fail(e *protocol.Error) {
	cfg := &ss.srv.cfg
	cfg.Metrics.ErrorsSent.WithLabelValues(e.Code.String()).Inc()
	ss.hc.Send(protocol.EncodeError(e))
	now := time.Now()
	act := ss.activity()
	if act.errs == nil {
		act.errs = make([]time.Time, 0, cfg.ErrorLimit+1)
	}
	act.errs = append(act.errs, now)
	if len(act.errs) > cfg.ErrorLimit {
		if now.Sub(act.errs[0]) <= cfg.ErrorWindow {
			ss.hc.Close(protocol.CloseTooManyErrors, "too many errors")
		}
		act.errs = append(act.errs[:0], act.errs[1:]...)
	}
}

func aliasBit(alias string) uint8 {
	for i, a := range protocol.Aliases() {
		if a == alias {
			return 1 << i
		}
	}
	return 0
}
