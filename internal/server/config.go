package server

import "net/http"

// handleConfig tells the page what this server offers before anyone logs
// in: today only whether POST /auth/dev-login exists.
func handleConfig(d *Deps) http.Handler {
	type response struct {
		Dev bool `json:"dev"`
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, response{Dev: d.DevLogin})
	})
}
