package http

// timelineRoutes registers the /v1/timelines routes (filled in by the
// timelines work).
func (s *server) timelineRoutes() {}
