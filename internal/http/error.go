package http

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

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
	return bodyOf(err)
}

// bodyOf is the client's view of err.
func bodyOf(err error) errorBody {
	return errorBody{Code: cellar.ErrorCode(err), Message: cellar.ErrorMessage(err)}
}

// writeError answers the request with err.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.writeBody(w, r, s.errorOf(r, err))
}

// writeBody answers the request with the error e.
func (s *server) writeBody(w http.ResponseWriter, r *http.Request, e errorBody) {
	s.writeJSON(w, r, statusOf(e.Code), errorDoc{e})
}

// writeJSON answers with v as JSON. It encodes before writing anything, so
// an encoding failure can still become a 500. HTML escaping is off: bodies
// are returned as they were written.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	buf := getBuffer()
	defer putBuffer(buf)
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.encodeFailed(w, r, err)
		return
	}
	writeBody(w, status, buf.Bytes())
}

// writeCell answers with c as writeJSON would, without its reflection and
// without compacting again what Cell.MarshalJSON wrote compact (for a
// Marshaler, encoding/json writes its output compacted, then a newline).
func (s *server) writeCell(w http.ResponseWriter, r *http.Request, status int, c cellar.Cell) {
	b, err := c.MarshalJSON()
	if err != nil {
		s.encodeFailed(w, r, err)
		return
	}
	writeBody(w, status, append(b, '\n'))
}

// encodeFailed answers 500 for a response that could not be encoded.
func (s *server) encodeFailed(w http.ResponseWriter, r *http.Request, err error) {
	s.log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path,
		"err", cellar.Internal(err, "encode response"))
	writeBody(w, http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`+"\n"))
}

// Header values every JSON response carries, shared: net/http only reads
// them, and sharing spares three allocations a response.
var (
	contentTypeJSON = []string{"application/json"}
	noSniff         = []string{"nosniff"}
)

// writeBody writes a JSON response.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	w.Write(body) // a failed write means the client left; nothing to do
}

// bufferPool holds response buffers, which would otherwise be allocated
// and grown for each response.
var bufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBuffer is the largest buffer kept for reuse: one large scan
// page must not pin megabytes for the life of the process.
const maxPooledBuffer = 64 << 10

func getBuffer() *bytes.Buffer { return bufferPool.Get().(*bytes.Buffer) }

// keepBuffer makes b, appended to buf.AvailableBuffer(), the memory of
// buf if it outgrew it, so that the pool keeps the larger of the two.
func keepBuffer(buf *bytes.Buffer, b []byte) {
	if cap(b) > buf.Cap() {
		*buf = *bytes.NewBuffer(b[:0])
	}
}

func putBuffer(b *bytes.Buffer) {
	if b.Cap() > maxPooledBuffer {
		return
	}
	b.Reset()
	bufferPool.Put(b)
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
	// Compare with every token, whatever matches, so that timing does not
	// tell which one did. A secret configured more than once has the
	// scopes of all its entries.
	known, allowed := false, false
	for i := range s.tokens {
		if subtle.ConstantTimeCompare(h[:], s.tokens[i].hash[:]) == 1 {
			known = true
			allowed = allowed || s.tokens[i].scopes[scope] || s.tokens[i].scopes[ScopeAdmin]
		}
	}
	if !known {
		return cellar.Errorf(cellar.EUNAUTHENTICATED, "unknown bearer token")
	}
	if !allowed {
		return cellar.Errorf(cellar.EPERMISSION, "token lacks the %q scope", scope)
	}
	return nil
}
