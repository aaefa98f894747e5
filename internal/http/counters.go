package http

// counterRoutes registers the /v1/counters routes (filled in by the
// counters work).
func (s *server) counterRoutes() {}
