package fake

import (
	"net/http"
	"time"
)

// AllRoutes is the route key of a Fault that applies to every request.
const AllRoutes = "*"

// Fault describes misbehaviour injected into the requests of one route. Routes are named by
// their pattern, e.g. "POST /app_instances", "PUT /app_instances/{ai}", "PUT /login",
// "GET /initiators/{id}" (see Routes), or AllRoutes. Both the AllRoutes fault and the route's own
// apply to a request, in that order; count-based fields are consumed by the requests they hit.
type Fault struct {
	// Latency delays every request before it is handled.
	Latency time.Duration

	// ErrorRate is the probability (0–1) that a request is answered with Status instead of
	// being handled.
	ErrorRate float64
	// Burst answers the next Burst requests with Status (checked before ErrorRate).
	Burst int
	// Status of injected errors. 503 (the default) carries a body of only {"message"}, as real
	// overload responses do; 500 carries "REST server is still initializing"; any other status
	// gets a full Datera error body named after it.
	Status int

	// DropRate is the probability that the connection is closed before the request is handled.
	DropRate float64
	// DropRequests closes the connection of the next DropRequests requests before handling.
	DropRequests int
	// DropResponseRate is the probability that a request is handled but its connection is closed
	// before the response is written: the client cannot tell whether it took effect.
	DropResponseRate float64
	// DropResponses does the same to the next DropResponses requests.
	DropResponses int

	// ExpireSessions makes the next ExpireSessions authenticated requests find their session
	// expired (401 AuthFailedError), forcing a re-login mid-sequence.
	ExpireSessions int
}

// SetFault installs (replaces) the fault of a route; the zero Fault removes it.
func (s *Server) SetFault(route string, f Fault) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if f == (Fault{}) {
		delete(s.faults, route)
		return
	}
	s.faults[route] = &f
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	clear(s.faults)
}

// Requests returns how many requests reached a route (including ones a fault then answered or
// dropped); AllRoutes gives the total.
func (s *Server) Requests(route string) int {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	return s.counts[route]
}

// ResetRequests zeroes the request counters.
func (s *Server) ResetRequests() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	clear(s.counts)
}

// faultPlan is what the faults decided for one request.
type faultPlan struct {
	latency       time.Duration
	dropRequest   bool
	inject        *result
	expireSession bool
	dropResponse  bool
}

func (s *Server) planFaults(route string) faultPlan {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.counts[route]++
	s.counts[AllRoutes]++
	var p faultPlan
	for _, key := range []string{AllRoutes, route} {
		f := s.faults[key]
		if f == nil {
			continue
		}
		p.latency += f.Latency
		if take(&f.DropRequests) || s.chance(f.DropRate) {
			p.dropRequest = true
		}
		if p.inject == nil && (take(&f.Burst) || s.chance(f.ErrorRate)) {
			res := injectedError(f.Status)
			p.inject = &res
		}
		if take(&f.ExpireSessions) {
			p.expireSession = true
		}
		if take(&f.DropResponses) || s.chance(f.DropResponseRate) {
			p.dropResponse = true
		}
	}
	return p
}

func take(n *int) bool {
	if *n > 0 {
		*n--
		return true
	}
	return false
}

func (s *Server) chance(p float64) bool { return p > 0 && s.rng.Float64() < p }

func injectedError(status int) result {
	switch status {
	case 0, http.StatusServiceUnavailable:
		// Real 503s may carry only a message, no error name.
		return result{status: http.StatusServiceUnavailable, raw: map[string]any{"message": "Service Unavailable: the system is busy, retry later"}}
	case http.StatusInternalServerError:
		return result{status: http.StatusInternalServerError, raw: map[string]any{"message": msgInitializing}}
	default:
		name := map[int]string{
			http.StatusBadRequest: errInvalidRequest, http.StatusUnauthorized: errAuthFailed,
			http.StatusNotFound: errNotFound, http.StatusConflict: errConflict,
			http.StatusUnprocessableEntity: errValidationFailed,
		}[status]
		if name == "" {
			name = errInternal
		}
		return fail(&apiError{status: status, name: name, message: "injected fault"})
	}
}
