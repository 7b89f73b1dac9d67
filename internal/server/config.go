package server

import (
	"net/http"

	"github.com/agentwire/agentwire/internal/httpx"
)

// handleConfig tells the page what this server offers before anyone logs
// in: today only whether POST /auth/dev-login exists (dev).
func handleConfig(dev bool) http.Handler {
	type response struct {
		Dev bool `json:"dev"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.JSON(w, http.StatusOK, response{Dev: dev})
	})
}
