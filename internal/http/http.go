// Package http serves cellar's HTTP API v1 over any cellar.Store: one
// storage node or the sharding layer. docs/API.md is the contract.
//
// The handler sets every limit itself (body sizes, a deadline per request)
// so that a server built around it needs nothing but timeouts on the
// connection.
package http

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"runtime/debug"
	"strings"
	"time"

	"github.com/cellar-db/cellar"
	"github.com/cellar-db/cellar/internal/index"
	"github.com/cellar-db/cellar/internal/metrics"
	"github.com/cellar-db/cellar/internal/trigger"
)

// Defaults for Options.
const (
	DefaultMaxRequestBytes = 64 << 20
	DefaultRequestTimeout  = 5 * time.Second
)

// Scopes a Token may hold.
const (
	ScopeRead  = "read"  // GET routes and POST /v1/cells:batchGet
	ScopeWrite = "write" // PUT /v1/cells/... and POST /v1/cells:batchPut
	ScopeAdmin = "admin" // everything
)

// Options configure the handler. The zero value serves without auth,
// metrics or topology, with the default limits.
type Options struct {
	// MaxBodyBytes limits one cell body; default cellar.DefaultMaxBodyBytes.
	MaxBodyBytes int
	// MaxRequestBytes limits a whole request body (batches); default
	// DefaultMaxRequestBytes.
	MaxRequestBytes int
	// RequestTimeout is the deadline put on each request's context;
	// default DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Tokens are the bearer tokens accepted; empty turns auth off.
	Tokens []Token
	// Logger receives internal errors and panics; default slog.Default().
	Logger *slog.Logger
	// Metrics records every request and is served on GET /metrics; nil
	// means neither.
	Metrics *metrics.Metrics
	// Topology is served on GET /v1/shards; nil makes that route 404.
	Topology func() cellar.Topology
	// Ready is checked by GET /readyz; nil means always ready.
	Ready func(ctx context.Context) error
	// Counters serves /v1/counters; nil leaves those routes out.
	Counters cellar.CounterStore
	// Timelines serves /v1/timelines; nil leaves those routes out.
	Timelines cellar.TimelineStore
	// Triggers serves /v1/triggers; nil leaves those routes out.
	Triggers *trigger.Engine
	// Indexes serves /v1/indexes; nil leaves those routes out.
	Indexes *index.Manager
}

// Token is a bearer token and what it may do.
type Token struct {
	Secret string
	// Scopes are ScopeRead, ScopeWrite or ScopeAdmin (which implies the
	// others). Unknown scopes grant nothing.
	Scopes []string
}

// server is the http.Handler that NewHandler returns.
type server struct {
	store   cellar.Store
	opts    Options
	log     *slog.Logger
	metrics *metrics.Metrics
	mux     *http.ServeMux
	tokens  []token // nil: auth off
}

// token is a Token prepared for constant-time comparison.
type token struct {
	hash   [sha256.Size]byte
	scopes map[string]bool
}

// NewHandler returns the HTTP API v1 over store, with GET /metrics when
// opts.Metrics is not nil.
func NewHandler(store cellar.Store, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = cellar.DefaultMaxBodyBytes
	}
	if opts.MaxRequestBytes <= 0 {
		opts.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &server{store: store, opts: opts, log: opts.Logger, metrics: opts.Metrics, mux: http.NewServeMux()}
	if len(opts.Tokens) > 0 {
		s.tokens = prepareTokens(opts.Tokens, s.log)
	}

	s.handle("PUT /v1/cells/{row_key}/{column}/{ref_key}", ScopeWrite, s.handlePut)
	s.handle("GET /v1/cells/{row_key}/{column}/{ref_key}", ScopeRead, s.handleGet)
	s.handle("GET /v1/cells/{row_key}/{column}", ScopeRead, s.handleLatest)
	s.handle("GET /v1/rows/{row_key}", ScopeRead, s.handleRow)
	s.handle("POST /v1/cells:batchGet", ScopeRead, s.handleBatchGet)
	s.handle("POST /v1/cells:batchPut", ScopeWrite, s.handleBatchPut)
	s.handle("GET /v1/shards/{shard}/cells", ScopeRead, s.handleScan)
	s.handle("GET /v1/shards", ScopeRead, s.handleTopology)
	s.handle("GET /healthz", "", s.handleHealth)
	s.handle("GET /readyz", "", s.handleReady)
	if opts.Counters != nil {
		s.counterRoutes()
	}
	if opts.Timelines != nil {
		s.timelineRoutes()
	}
	if opts.Triggers != nil {
		s.triggerRoutes()
	}
	if opts.Indexes != nil {
		s.indexRoutes()
	}
	if opts.Metrics != nil {
		s.mux.Handle("GET /metrics", opts.Metrics.Handler())
	}
	return s
}

// prepareTokens hashes the secrets so that comparing them takes the same
// time whatever their length. Tokens with an empty secret are dropped: they
// would let in anyone sending "Bearer " with nothing after it.
func prepareTokens(ts []Token, log *slog.Logger) []token {
	out := make([]token, 0, len(ts))
	for i, t := range ts {
		if t.Secret == "" {
			log.Warn("ignoring API token with an empty secret", "index", i)
			continue
		}
		tk := token{hash: sha256.Sum256([]byte(t.Secret)), scopes: make(map[string]bool)}
		for _, sc := range t.Scopes {
			switch sc {
			case ScopeRead, ScopeWrite, ScopeAdmin:
				tk.scopes[sc] = true
			default:
				log.Warn("ignoring unknown API token scope", "index", i, "scope", sc)
			}
		}
		out = append(out, tk)
	}
	return out
}

// handle registers fn for pattern behind a check for scope ("" for none).
func (s *server) handle(pattern, scope string, fn func(http.ResponseWriter, *http.Request) error) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		if scope != "" {
			if err := s.authorize(r, scope); err != nil {
				if cellar.ErrorCode(err) == cellar.EUNAUTHENTICATED {
					w.Header().Set("WWW-Authenticate", `Bearer realm="cellar"`)
				}
				s.writeError(w, r, err)
				return
			}
		}
		if err := fn(w, r); err != nil {
			if sw, ok := w.(*statusWriter); ok && errors.Is(r.Context().Err(), context.Canceled) && serverFault(err) {
				// The client hung up (or its connection failed): the
				// server did not fail the request, so it is counted as
				// 499 (nginx's "client closed request"), not as the 503
				// or 500 its cancelled calls became, and logged at debug
				// level only, not as a storage failure. The error is
				// still written, whoever may read it (a wrapping handler
				// would otherwise take the implicit 200 for a success).
				// A client's mistake keeps its 4xx.
				sw.closedByClient = true
				s.log.DebugContext(r.Context(), "client hung up before the answer", "method", r.Method, "path", r.URL.Path, "err", err)
				s.writeBody(w, r, bodyOf(err))
				return
			}
			s.writeError(w, r, err)
		}
	})
}

func serverFault(err error) bool {
	code := cellar.ErrorCode(err)
	return code == cellar.EUNAVAILABLE || code == cellar.EINTERNAL
}

// statusClientClosed is the code requests whose client hung up before
// their answer are counted under.
const statusClientClosed = 499

// ServeHTTP is the one place every request passes: it records metrics,
// rejects paths the mux would redirect, answers unknown routes in JSON, sets
// the request deadline and turns a panic into a 500.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.log.ErrorContext(r.Context(), "panic serving HTTP request",
				"method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if !sw.wroteHeader {
				sw.pass = true // answer even if no route had matched
				s.writeError(sw, r, cellar.Internal(fmt.Errorf("panic: %v", v), "serve request"))
			}
		}
		s.metrics.ObserveRequest(sw.route(), sw.code(), time.Since(start))
	}()

	if raw := r.URL.RawPath; raw != "" && r.URL.EscapedPath() != raw {
		r = withRawPath(r, reescapePath(raw))
	}
	// ServeMux answers a path with "." or ".." segments or empty segments
	// with a redirect to the cleaned path, which for a PUT would address
	// another cell. Refuse such paths instead.
	p := r.URL.EscapedPath()
	if r.Method != http.MethodConnect && cleanPath(p) != p {
		s.writeError(sw, r, cellar.Errorf(cellar.EINVALID,
			`path %q is not canonical: it has empty, "." or ".." segments (percent-encode a row key of "." or ".." as %%2E)`, truncate(p, 200)))
		return
	}
	if hasSegment(p, slashSegmentEscaped) {
		// Whatever names this segment, no key may hold a U+0000; and it
		// must not be taken for the stand-in below.
		s.writeError(sw, r, cellar.Errorf(cellar.EINVALID,
			"path segment %s decodes to \"/\" and U+0000: no key may contain a control character", slashSegmentEscaped))
		return
	}
	if hasSegment(p, "%2F") {
		r = withSlashSegments(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.RequestTimeout)
	defer cancel()
	// The deadline bounds reading the body too, so that a client trickling
	// a batch cannot hold a request open past it. Writers that are not
	// connections (test recorders) cannot do this and say so; there is
	// nothing to bound then, nor for a request without a body.
	if r.Body != http.NoBody {
		deadline, _ := ctx.Deadline()
		_ = http.NewResponseController(sw).SetReadDeadline(deadline)
	}
	// The mux matches the request once, here, and records the pattern in
	// the request it hands on; sw reads it there, so that what the mux
	// itself answers to an unknown route can be answered in JSON instead.
	r2 := r.WithContext(ctx)
	sw.req = r2
	s.mux.ServeHTTP(sw, r2)
	if sw.caught == 0 {
		return
	}
	// Learn from the mux whether the path exists for other methods.
	sw.pass = true
	if sw.caught == http.StatusMethodNotAllowed {
		allow := sw.caughtHeader.Get("Allow")
		sw.Header().Set("Allow", allow)
		s.writeError(sw, r, cellar.Errorf(codeMethodNotAllowed, "method %s is not allowed here; allowed: %s", truncate(r.Method, 40), allow))
		return
	}
	s.writeError(sw, r, cellar.Errorf(cellar.ENOTFOUND, "no route for %s %s", truncate(r.Method, 40), truncate(r.URL.Path, 200)))
}

// reescapePath returns the path raw, as the client sent it, with every
// byte that may not appear raw in a path percent-encoded, and its escapes
// kept as they are. A client may send such bytes raw (net/http takes '|',
// '"', '{', '}' and others), but then url.URL drops the path as sent and
// EscapedPath encodes the decoded one again, where a "%2F" of the client's
// is already a "/" and reads as a separator: a row key "a/b|c" sent as
// "a%2Fb|c" would address the row "a" (review of 2026-12-08). With the
// bytes encoded, the escaped path is valid and keeps the client's escapes.
func reescapePath(raw string) string {
	const keep = "-._~!$&'()*+,;=:@/%"
	var b strings.Builder
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(keep, c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// withRawPath returns r with its path as sent set to raw, which decodes to
// the same path.
func withRawPath(r *http.Request, raw string) *http.Request {
	p, err := url.PathUnescape(raw)
	if err != nil || p != r.URL.Path {
		return r
	}
	u := *r.URL
	u.RawPath = raw
	r2 := r.Clone(r.Context())
	r2.URL = &u
	return r2
}

// hasSegment reports whether the escaped path p has a segment that is
// seg, ASCII letters in either case, without the allocations of
// splitting or upper-casing p.
func hasSegment(p, seg string) bool {
	for i := 0; i+1+len(seg) <= len(p); i++ {
		if p[i] == '/' && strings.EqualFold(p[i+1:i+1+len(seg)], seg) && (i+1+len(seg) == len(p) || p[i+1+len(seg)] == '/') {
			return true
		}
	}
	return false
}

// slashSegment stands in for a path segment that is exactly "%2F": Go's
// ServeMux (1.22 through at least 1.26) never matches a wildcard to a
// segment that unescapes to "/", so the row key "/" would have no route.
// The stand-in cannot be a real key (keys have no control characters),
// and ServeHTTP refuses a path that spells it (slashSegmentEscaped), so a
// wildcard holds it only where the path had "%2F"; pathSegment turns it
// back into "/".
const slashSegment = "/\x00"

// slashSegmentEscaped is slashSegment as a path segment, upper case.
const slashSegmentEscaped = "%2F%00"

// withSlashSegments returns r with every "%2F" segment replaced by the
// escaped slashSegment.
func withSlashSegments(r *http.Request) *http.Request {
	segs := strings.Split(r.URL.EscapedPath(), "/")
	for i, seg := range segs {
		if strings.EqualFold(seg, "%2F") {
			segs[i] = url.PathEscape(slashSegment)
		}
	}
	u := *r.URL
	u.RawPath = strings.Join(segs, "/")
	p, err := url.PathUnescape(u.RawPath)
	if err != nil {
		return r
	}
	u.Path = p
	r2 := r.Clone(r.Context())
	r2.URL = &u
	return r2
}

// pathSegment returns the path wildcard name, turning the stand-in for a
// "%2F" segment back into "/".
func pathSegment(r *http.Request, name string) string {
	v := r.PathValue(name)
	if v == slashSegment {
		return "/"
	}
	return v
}

// cleanPath is net/http's canonical form of a path, which ServeMux
// redirects to: no empty, "." or ".." segments, trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// statusWriter remembers the status code written, for metrics and for
// knowing whether a panic can still be answered. Once req is set and
// unless pass is, it also catches what the mux answers when no route
// matches (req.Pattern is empty then; the mux sets it before it calls a
// handler), so that ServeHTTP can answer in JSON instead: the status goes
// to caught, the headers to caughtHeader and the body nowhere.
type statusWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool

	req            *http.Request // as the mux saw it
	closedByClient bool          // the client hung up before the answer: counted as 499
	pass           bool
	caught         int
	caughtHeader   http.Header
}

// catching reports whether the mux found no route for the request.
func (w *statusWriter) catching() bool { return !w.pass && w.req != nil && w.req.Pattern == "" }

func (w *statusWriter) Header() http.Header {
	if w.catching() {
		if w.caughtHeader == nil {
			w.caughtHeader = make(http.Header)
		}
		return w.caughtHeader
	}
	return w.ResponseWriter.Header()
}

func (w *statusWriter) WriteHeader(code int) {
	if w.catching() {
		if w.caught == 0 {
			w.caught = code
		}
		return
	}
	if !w.wroteHeader && code >= 200 {
		w.status = code
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.catching() {
		if w.caught == 0 {
			w.caught = http.StatusOK
		}
		return len(b), nil
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if w.closedByClient {
		return statusClientClosed
	}
	if !w.wroteHeader {
		return http.StatusOK
	}
	return w.status
}

// route is the pattern that matched, for metrics: never the raw path, so
// that the number of series stays bounded.
func (w *statusWriter) route() string {
	if w.req == nil || w.req.Pattern == "" {
		return "unmatched"
	}
	return w.req.Pattern
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut at a rune boundary so the message stays valid UTF-8.
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "..."
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
