package fake

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server. The zero value is usable.
type Options struct {
	// Users maps user names to passwords. Default: {"admin": "password"}.
	Users map[string]string
	// UserTenants confines users to a tenant: a user listed here may only address that tenant
	// and its sub-tenants (a request naming any other tenant in its "tenant" header is refused
	// with 403 PermissionDeniedError), as a Datera tenant administrator is. Users not listed
	// are system administrators and may address every tenant.
	UserTenants map[string]string
	// ACLNewestFirst makes every ACL read list initiators newest grant first instead of in
	// grant order. The API documents no order for acl_policy.initiators, so tests use this to
	// show that a client does not depend on one.
	ACLNewestFirst bool
	// Tenants lists sub-tenants to create besides /root, e.g. "/root/team-a".
	Tenants []string
	// Portals are the access IPs reported for every available storage_instance. Real Datera
	// reports two bare IPs (port 3260 implied); in real iSCSI mode give "127.0.0.1:<port>" of the
	// tgtd portal. Default: two documentation addresses, 192.0.2.1 and 192.0.2.2.
	Portals []string
	// IPPools names access network IP pools besides "default".
	IPPools []string
	// TokenTTL is the absolute session lifetime (default 15 minutes, as on a real system).
	TokenTTL time.Duration
	// OnlineDelay is how long an onlined storage_instance stays op_state "unavailable" (and
	// without access IPs) before it turns "available", so polling code is exercised.
	OnlineDelay time.Duration
	// AllowUnforcedInitiators turns off the DAT-15931 rule: by default creating an initiator
	// in a sub-tenant, or the first one of a tenant, needs "force": true on v2.2.
	AllowUnforcedInitiators bool
	// AllowOfflineWithSessions turns off the rule that offlining a storage_instance with
	// active initiators needs "force": true.
	AllowOfflineWithSessions bool
	// Exporter, when set, turns on real iSCSI mode: every online storage_instance is exported
	// as a target (see TgtExporter).
	Exporter Exporter
	// Now is the clock (default time.Now); tests move it to expire sessions.
	Now func() time.Time
	// Seed seeds the fault injection's random choices (0: random).
	Seed uint64
	// Logger receives one debug line per request and errors of the exporter (default: discard).
	Logger *slog.Logger
}

// Server is an in-memory Datera API v2.1/v2.2. It is an http.Handler and is safe for
// concurrent use: one lock guards the state, so requests are linearisable.
type Server struct {
	opts    Options
	handler http.Handler
	log     *slog.Logger
	reqSeq  atomic.Int64

	mu       sync.Mutex // guards everything below
	tenants  map[string]*tenant
	sessions map[string]session
	pools    map[string]bool

	faultMu sync.Mutex // guards faults, counts, rng
	faults  map[string]*Fault
	counts  map[string]int
	rng     *rand.Rand

	routeNames []string // set once by routes
}

type session struct {
	user    string
	expires time.Time
}

// Default credentials and portals of a zero Options.
const (
	DefaultUser     = "admin"
	DefaultPassword = "password"
)

// New returns a Server.
func New(opts Options) (*Server, error) {
	if len(opts.Users) == 0 {
		opts.Users = map[string]string{DefaultUser: DefaultPassword}
	}
	for u, p := range opts.Users {
		if !reLoginName.MatchString(u) || !rePassword.MatchString(p) {
			return nil, fmt.Errorf("fake: user %q: name or password does not match the login schema", u)
		}
	}
	if len(opts.Portals) == 0 {
		opts.Portals = []string{"192.0.2.1", "192.0.2.2"}
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 15 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	seed := opts.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger.With("component", "datera-sim"),
		tenants:  map[string]*tenant{"/root": newTenant("/root")},
		sessions: map[string]session{},
		pools:    map[string]bool{"default": true},
		faults:   map[string]*Fault{},
		counts:   map[string]int{},
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
	for _, t := range opts.Tenants {
		if err := s.addTenant(t); err != nil {
			return nil, err
		}
	}
	for u, t := range opts.UserTenants {
		if _, known := opts.Users[u]; !known {
			return nil, fmt.Errorf("fake: UserTenants names user %q, which is not in Users", u)
		}
		if s.tenants[t] == nil {
			return nil, fmt.Errorf("fake: UserTenants confines %q to tenant %q, which does not exist", u, t)
		}
	}
	for _, p := range opts.IPPools {
		if !reName.MatchString(p) {
			return nil, fmt.Errorf("fake: ip pool name %q is invalid", p)
		}
		s.pools[p] = true
	}
	s.handler = s.routes()
	return s, nil
}

func (s *Server) addTenant(path string) error {
	if !strings.HasPrefix(path, "/root/") {
		return fmt.Errorf("fake: tenant %q must be /root/<name>", path)
	}
	parent := path[:strings.LastIndex(path, "/")]
	if _, ok := s.tenants[parent]; !ok {
		return fmt.Errorf("fake: parent tenant %q of %q does not exist", parent, path)
	}
	if !reName.MatchString(path[strings.LastIndex(path, "/")+1:]) {
		return fmt.Errorf("fake: tenant name %q is invalid", path)
	}
	s.tenants[path] = newTenant(path)
	return nil
}

func (s *Server) now() time.Time { return s.opts.Now() }

// ServeHTTP implements http.Handler. Fault injection drops connections with
// panic(http.ErrAbortHandler), which net/http servers (and httptest.Server) turn into a closed
// connection; call it through a server, not directly.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Routes lists the route keys that Fault and Requests accept (besides AllRoutes).
func (s *Server) Routes() []string { return append([]string(nil), s.routeNames...) }

// ExpireSessions invalidates every session, as if their 15 minutes had passed.
func (s *Server) ExpireSessions() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.sessions)
}

// SessionCount returns the number of live sessions.
func (s *Server) SessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if s.now().Before(ss.expires) {
			n++
		}
	}
	return n
}

// SetActiveInitiators records which initiators are logged in to a storage_instance (as Datera's
// active_initiators reports): offlining it then needs force. Addressing is by tenant path,
// app_instance id or name, and storage_instance name.
func (s *Server) SetActiveInitiators(tenantPath, appInstance, storageInstance string, iqns []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tenants[tenantPath]
	if t == nil {
		return fmt.Errorf("fake: tenant %q does not exist", tenantPath)
	}
	ai := t.lookupAI(appInstance)
	if ai == nil {
		return fmt.Errorf("fake: app_instance %q does not exist", appInstance)
	}
	si := ai.si(storageInstance)
	if si == nil {
		return fmt.Errorf("fake: storage_instance %q does not exist", storageInstance)
	}
	si.activeInitiators = append([]string(nil), iqns...)
	return nil
}

// call is one request being served.
type call struct {
	r          *http.Request
	version    string
	tenantPath string
	t          *tenant // the request's tenant (authenticated routes only)
	reqID      int64
}

type handlerFunc func(*call) result

type versionKey struct{}

func (s *Server) routes() http.Handler {
	api := http.NewServeMux()
	route := func(pattern string, auth bool, h handlerFunc) {
		api.Handle(pattern, s.wrap(pattern, auth, h))
		if pattern != "/" {
			s.routeNames = append(s.routeNames, pattern)
		}
	}

	route("PUT /login", false, s.login)
	route("PUT /logout", true, s.logout)
	route("GET /system", true, s.system)
	route("GET /tenants", true, s.listTenants)
	route("POST /tenants", true, s.createTenant)
	route("GET /access_network_ip_pools", true, s.listIPPools)
	route("GET /access_network_ip_pools/{name}", true, s.getIPPool)

	route("GET /app_templates", true, s.listTemplates)
	route("POST /app_templates", true, s.createTemplate)
	route("GET /app_templates/{name}", true, s.getTemplate)

	route("GET /initiators", true, s.listInitiators)
	route("POST /initiators", true, s.createInitiator)
	route("GET /initiators/{id}", true, s.getInitiator)
	route("DELETE /initiators/{id}", true, s.deleteInitiator)

	const ai = "/app_instances/{ai}"
	const si = ai + "/storage_instances/{si}"
	const vol = si + "/volumes/{vol}"
	route("GET /app_instances", true, s.listAppInstances)
	route("POST /app_instances", true, s.createAppInstance)
	route("GET "+ai, true, s.getAppInstance)
	route("PUT "+ai, true, s.updateAppInstance)
	route("DELETE "+ai, true, s.deleteAppInstance)
	route("GET "+ai+"/metadata", true, s.getMetadata)
	route("PUT "+ai+"/metadata", true, s.putMetadata)
	route("GET "+ai+"/storage_instances", true, s.listStorageInstances)
	route("GET "+si, true, s.getStorageInstance)
	route("PUT "+si, true, s.updateStorageInstance)
	route("GET "+si+"/access", true, s.getAccess)
	route("GET "+si+"/acl_policy", true, s.getACL)
	route("PUT "+si+"/acl_policy", true, s.putACL)
	route("PUT "+si+"/acl_policy/initiators", true, s.aclOp)
	route("GET "+si+"/volumes", true, s.listVolumes)
	route("GET "+vol, true, s.getVolume)
	route("PUT "+vol, true, s.updateVolume)
	route("GET "+vol+"/performance_policy", true, s.getPerf)
	route("POST "+vol+"/performance_policy", true, s.createPerf)
	route("PUT "+vol+"/performance_policy", true, s.updatePerf)
	route("DELETE "+vol+"/performance_policy", true, s.deletePerf)
	route("/", false, func(c *call) result {
		return fail(notFound("endpoint %s %s does not exist", c.r.Method, c.r.URL.Path))
	})

	root := http.NewServeMux()
	root.HandleFunc("GET /api_versions", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"api_versions": []string{"v2", "v2.1", "v2.2"}})
	})
	for _, v := range []string{"v2.1", "v2.2"} {
		inner := http.StripPrefix("/"+v, api)
		root.Handle("/"+v+"/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inner.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), versionKey{}, v)))
		}))
	}
	root.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c := &call{r: r, version: "v2.2", tenantPath: "/root"}
		c.write(w, fail(&apiError{status: http.StatusNotFound, name: "UnsupportedVersionError",
			message: fmt.Sprintf("%s is not a supported API path; versions: v2.1, v2.2", r.URL.Path)}))
	})
	return root
}

// wrap adds, around every handler: fault injection, authentication, the state lock, logging.
func (s *Server) wrap(route string, auth bool, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		version, _ := r.Context().Value(versionKey{}).(string)
		c := &call{r: r, version: version, tenantPath: "/root", reqID: s.reqSeq.Add(1)}
		if tp := r.Header.Get("tenant"); tp != "" {
			c.tenantPath = tp
		}
		plan := s.planFaults(route)
		if plan.latency > 0 {
			select {
			case <-time.After(plan.latency):
			case <-r.Context().Done():
				return
			}
		}
		if plan.dropRequest {
			s.log.Debug("fault: dropping connection before handling", "route", route)
			panic(http.ErrAbortHandler)
		}
		var res result
		if plan.inject != nil {
			res = *plan.inject
		} else {
			res = s.serve(c, auth, plan.expireSession, h)
		}
		if plan.dropResponse {
			s.log.Debug("fault: dropping connection after handling", "route", route)
			panic(http.ErrAbortHandler)
		}
		status := res.status
		if res.err != nil {
			status = res.err.status
		}
		s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "route", route, "status", status)
		c.write(w, res)
	})
}

func (s *Server) serve(c *call, auth, expireSession bool, h handlerFunc) result {
	s.mu.Lock()
	defer s.mu.Unlock()
	if auth {
		key := c.r.Header.Get("Auth-Token")
		ss, ok := s.sessions[key]
		if ok && expireSession {
			delete(s.sessions, key)
			ok = false
		}
		if !ok || !s.now().Before(ss.expires) {
			delete(s.sessions, key)
			return fail(authFailed(msgInvalidSession))
		}
		if home, confined := s.opts.UserTenants[ss.user]; confined && c.tenantPath != home && !strings.HasPrefix(c.tenantPath, home+"/") {
			return fail(permissionDenied("user %s may not access tenant %s", ss.user, c.tenantPath))
		}
		t := s.tenants[c.tenantPath]
		if t == nil {
			return fail(notFound("tenant %s does not exist", c.tenantPath))
		}
		c.t = t
	}
	return h(c)
}

// exportCtx bounds an exporter call independently of the client connection: a half-done export
// must not be abandoned because a client gave up.
func exportCtx(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
}
