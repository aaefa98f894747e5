package http

import (
	"encoding/json"
	"math"
	"net/http"

	"github.com/cellar-db/cellar"
)

// timelineRoutes registers the /v1/timelines routes. Keys, members, scores
// and limits are the store's to check; handlers check the syntax.
func (s *server) timelineRoutes() {
	s.handle("POST /v1/timelines/{key}/members", ScopeWrite, s.handleTimelineAdd)
	s.handle("DELETE /v1/timelines/{key}/members/{member}", ScopeWrite, s.handleTimelineRemove)
	s.handle("GET /v1/timelines/{key}", ScopeRead, s.handleTimelineRange)
	s.handle("PUT /v1/timelines/{key}", ScopeWrite, s.handleTimelineCap)
}

type timelineMember struct {
	Key    string  `json:"key"`
	Member string  `json:"member"`
	Score  float64 `json:"score"`
}

// handleTimelineAdd serves POST /v1/timelines/{key}/members with
// {"member": "...", "score": N}.
func (s *server) handleTimelineAdd(w http.ResponseWriter, r *http.Request) error {
	key := pathSegment(r, "key")
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	member, score, err := decodeTimelineAdd(raw)
	if err != nil {
		return err
	}
	if score == 0 {
		score = 0 // -0 is stored as 0
	}
	if err := s.opts.Timelines.TimelineAdd(r.Context(), key, member, score); err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, timelineMember{Key: key, Member: member, Score: score})
	return nil
}

// handleTimelineRemove serves DELETE /v1/timelines/{key}/members/{member}.
func (s *server) handleTimelineRemove(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	removed, err := s.opts.Timelines.TimelineRemove(r.Context(), pathSegment(r, "key"), pathSegment(r, "member"))
	if err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Removed bool `json:"removed"`
	}{removed})
	return nil
}

// handleTimelineRange serves GET /v1/timelines/{key}?offset=&limit=&order=.
func (s *server) handleTimelineRange(w http.ResponseWriter, r *http.Request) error {
	key := pathSegment(r, "key")
	q, err := query(r, "offset", "limit", "order")
	if err != nil {
		return err
	}
	var offset int64
	if v, ok := q["offset"]; ok {
		if offset, err = parseUint("offset", v, 0, math.MaxInt64); err != nil {
			return err
		}
	}
	limit := int64(100)
	if v, ok := q["limit"]; ok {
		if limit, err = parseUint("limit", v, 1, cellar.MaxTimelineLimit); err != nil {
			return err
		}
	}
	desc := true
	if v, ok := q["order"]; ok {
		switch v {
		case "desc":
		case "asc":
			desc = false
		default:
			return cellar.Errorf(cellar.EINVALID, `order must be "desc" or "asc", not %q`, truncate(v, 40))
		}
	}
	items, count, err := s.opts.Timelines.TimelineRange(r.Context(), key, int(offset), int(limit), desc)
	if err != nil {
		return err
	}
	if items == nil {
		items = []cellar.TimelineItem{}
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Items []cellar.TimelineItem `json:"items"`
		Count int64                 `json:"count"`
	}{items, count})
	return nil
}

// handleTimelineCap serves PUT /v1/timelines/{key} with {"cap": N}.
func (s *server) handleTimelineCap(w http.ResponseWriter, r *http.Request) error {
	key := pathSegment(r, "key")
	raw, err := readRequest(w, r, s.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	cap, err := decodeTimelineCap(raw)
	if err != nil {
		return err
	}
	if err := s.opts.Timelines.SetTimelineCap(r.Context(), key, cap); err != nil {
		return err
	}
	s.writeJSON(w, r, http.StatusOK, struct {
		Key string `json:"key"`
		Cap int    `json:"cap"`
	}{key, cap})
	return nil
}

// decodeTimelineAdd parses {"member": "...", "score": N}: both required,
// nothing else allowed.
func decodeTimelineAdd(raw []byte) (member string, score float64, err error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return "", 0, err
	}
	seen := make(map[string]bool)
	err = d.object("request", func(name string) error {
		seen[name] = true
		var err error
		switch name {
		case "member":
			member, err = d.string("member")
		case "score":
			score, err = d.number("score")
		default:
			err = unknownMember("request", name)
		}
		return err
	})
	if err != nil {
		return "", 0, err
	}
	for _, m := range []string{"member", "score"} {
		if !seen[m] {
			return "", 0, missingMember("request", m)
		}
	}
	if err := d.end(); err != nil {
		return "", 0, err
	}
	return member, score, nil
}

// decodeTimelineCap parses {"cap": N}, N an integer literal.
func decodeTimelineCap(raw []byte) (int, error) {
	d, err := newDocDecoder(raw)
	if err != nil {
		return 0, err
	}
	var cap int64
	var haveCap bool
	err = d.object("request", func(name string) error {
		if name != "cap" {
			return unknownMember("request", name)
		}
		haveCap = true
		v, err := d.raw()
		if err != nil {
			return err
		}
		if !isNumber(v) || json.Unmarshal(v, &cap) != nil || cap < 1 || cap > cellar.MaxTimelineCap {
			return cellar.Errorf(cellar.EINVALID, "cap must be an integer in 1..%d", cellar.MaxTimelineCap)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if !haveCap {
		return 0, missingMember("request", "cap")
	}
	if err := d.end(); err != nil {
		return 0, err
	}
	return int(cap), nil
}

// number reads a JSON number at path as a float64; null, strings, and
// numbers too large (1e400) or too small (1e-400, which would be read as
// 0) for a float64 are refused.
func (d *docDecoder) number(path string) (float64, error) {
	v, err := d.raw()
	if err != nil {
		return 0, err
	}
	var f float64
	if !isNumber(v) || json.Unmarshal(v, &f) != nil || cellar.ScoreUnderflows(string(v), f) {
		return 0, cellar.Errorf(cellar.EINVALID, "%s must be a number within the range of a 64-bit float", path)
	}
	return f, nil
}

// isNumber reports whether the JSON value v is a number (json.Unmarshal
// accepts null for any type, and leaves the target alone).
func isNumber(v json.RawMessage) bool {
	return len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9')
}
