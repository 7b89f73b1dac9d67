package runs

import (
	"context"
	"fmt"
	"time"

	"github.com/agentwire/agentwire/protocol"
)

// dayStart is the start of t's day in UTC: a daily quota's window.
func dayStart(t time.Time) time.Time {
	y, mo, d := t.UTC().Date()
	return time.Date(y, mo, d, 0, 0, 0, 0, time.UTC)
}

// checkQuota answers quota_exceeded when the user's runs used their daily
// token quota today, and internal_error when the store cannot say.
func (m *Manager) checkQuota(ctx context.Context, user, ref string) *protocol.Error {
	if m.tokenQuota <= 0 {
		return nil
	}
	used, err := m.store.TokensUsed(ctx, user, dayStart(m.now()))
	if err != nil {
		m.log.Error("read token usage", "user", user, "err", err)
		return perr(protocol.CodeInternal, "message not accepted: token usage unavailable, retry", ref)
	}
	if used >= m.tokenQuota {
		return perr(protocol.CodeQuotaExceeded, fmt.Sprintf("your runs used %d tokens today, the daily quota is %d: try again after midnight UTC", used, m.tokenQuota), ref)
	}
	return nil
}

// countTokens adds a run's usage to the tokens metric.
func (m *Manager) countTokens(u protocol.Usage) {
	if u != (protocol.Usage{}) {
		m.metrics.Tokens(u.InputTokens, u.OutputTokens)
	}
}
