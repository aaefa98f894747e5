package http

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/cellar-db/cellar"
)

// codeMethodNotAllowed is the error code of a 405. It is HTTP's alone, so
// it lives here rather than among the domain's codes.
const codeMethodNotAllowed = "method_not_allowed"

// statuses maps error codes to HTTP statuses; this is the only place that
// does. Codes not listed are 500.
var statuses = map[string]int{
	cellar.EINVALID:         http.StatusBadRequest,
	cellar.EUNAUTHENTICATED: http.StatusUnauthorized,
	cellar.EPERMISSION:      http.StatusForbidden,
	cellar.ENOTFOUND:        http.StatusNotFound,
	codeMethodNotAllowed:    http.StatusMethodNotAllowed,
	cellar.ECONFLICT:        http.StatusConflict,
	cellar.ETOOLARGE:        http.StatusRequestEntityTooLarge,
	cellar.EUNAVAILABLE:     http.StatusServiceUnavailable,
	cellar.EINTERNAL:        http.StatusInternalServerError,
}

func statusOf(code string) int {
	if st, ok := statuses[code]; ok {
		return st
	}
	return http.StatusInternalServerError
}

// errorBody is the JSON of an error, alone or as one result of a batch.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type errorDoc struct {
	Error errorBody `json:"error"`
}

// errorOf returns the client's view of err, logging what the client does
// not see: the causes of internal and unavailable errors.
func (s *server) errorOf(r *http.Request, err error) errorBody {
	code := cellar.ErrorCode(err)
	switch code {
	case cellar.EINTERNAL:
		s.log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case cellar.EUNAVAILABLE:
		s.log.WarnContext(r.Context(), "storage unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return errorBody{Code: code, Message: cellar.ErrorMessage(err)}
}

// writeError answers the request with err.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := s.errorOf(r, err)
	s.writeJSON(w, r, statusOf(e.Code), errorDoc{e})
}

// writeJSON answers with v as JSON. It encodes before writing anything, so
// an encoding failure can still become a 500. HTML escaping is off: bodies
// are returned as they were written.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path,
			"err", cellar.Internal(err, "encode response"))
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal","message":"internal error"}}` + "\n")
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(buf.Bytes()) // a failed write means the client left; nothing to do
}

// authorize checks the request's bearer token for scope. Returns
// EUNAUTHENTICATED for a missing or unknown token and EPERMISSION for a
// token without the scope.
func (s *server) authorize(r *http.Request, scope string) error {
	if s.tokens == nil {
		return nil
	}
	secret, ok := bearer(r)
	if !ok {
		return cellar.Errorf(cellar.EUNAUTHENTICATED, "missing bearer token: send Authorization: Bearer <token>")
	}
	h := sha256.Sum256([]byte(secret))
	var found *token
	// Compare with every token, whatever matches, so that timing does not
	// tell which one did.
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], s.tokens[i].hash[:]) == 1 {
			found = &s.tokens[i]
		}
	}
	if found == nil {
		return cellar.Errorf(cellar.EUNAUTHENTICATED, "unknown bearer token")
	}
	if !found.scopes[scope] && !found.scopes[ScopeAdmin] {
		return cellar.Errorf(cellar.EPERMISSION, "token lacks the %q scope", scope)
	}
	return nil
}
