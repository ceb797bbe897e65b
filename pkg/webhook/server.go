// Package webhook is petfabric's admission server: it pins Datera-bound StatefulSet claim
// templates to their class and pre-creates one pre-bound FlexVolume PV per ordinal, on
// StatefulSet CREATE/UPDATE, on the statefulsets/scale subresource, and for each Datera
// claim at PVC CREATE. Decisions are pkg/mutate's; this package does the HTTP and the writes.
package webhook

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/tools/record"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// Routes served over TLS; the MutatingWebhookConfiguration points at them.
const (
	PathStatefulSets = "/mutate/statefulsets"
	PathScale        = "/mutate/statefulsets-scale"
	PathClaims       = "/mutate/persistentvolumeclaims"
	PathPods         = "/mutate/pods"
)

// Options configure a Server.
type Options struct {
	Mutate mutate.Config
	Lookup Lookup
	PVs    PVStore
	// CreateBudget bounds the PV creation inside one admission call; the apiserver's own
	// ?timeout= shortens it further (minus a safety margin). What is left over is created by
	// the PVC hook and the reconcile loop. Default 4s.
	CreateBudget time.Duration
	// Concurrency is how many PV creates run at once. Default 16.
	Concurrency int
	// MaxCreatesPerCall caps the PVs one admission call creates (a 10,000-replica scale-up
	// must not become 10,000 creates in one call). Default 512.
	MaxCreatesPerCall int
	// Recorder receives the Events about PVs that do not fit their claims; nil: none.
	Recorder   record.EventRecorder
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// SchedulingGate turns the pod hook on: a pet created while one of its Datera claims is not
	// Bound gets mutate.SchedulingGate, which the reconcile loop removes once they all are.
	// Off: the pod hook allows every pod unchanged.
	SchedulingGate bool
	// Claims reads claims from a cache for the pod hook (never the API); nil: every claim
	// counts as not in the cache.
	Claims ClaimGetter
}

// Server handles admission reviews.
type Server struct {
	cfg          mutate.Config
	lookup       Lookup
	pvs          PVStore
	createBudget time.Duration
	concurrency  int
	maxCreates   int64
	log          *slog.Logger
	recorder     record.EventRecorder
	metrics      *metrics
	gate         bool
	claims       ClaimGetter
}

// New returns a Server.
func New(o Options) *Server {
	if o.CreateBudget == 0 {
		o.CreateBudget = 4 * time.Second
	}
	if o.Concurrency == 0 {
		o.Concurrency = 16
	}
	if o.MaxCreatesPerCall == 0 {
		o.MaxCreatesPerCall = 512
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Recorder == nil {
		o.Recorder = &record.FakeRecorder{} // discards: a nil Events channel is never written
	}
	return &Server{
		cfg: o.Mutate, lookup: o.Lookup, pvs: o.PVs,
		createBudget: o.CreateBudget, concurrency: o.Concurrency, maxCreates: int64(o.MaxCreatesPerCall),
		log: o.Logger, recorder: o.Recorder, metrics: newMetrics(o.Registerer),
		gate: o.SchedulingGate, claims: o.Claims,
	}
}

// Handler routes the admission paths. Another method on an admission path gets 405 with an
// AdmissionReview-shaped reason (the "POST /path" pattern is more specific than "/path").
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST "+PathStatefulSets, s.serveReview("statefulsets", s.admitStatefulSet))
	mux.Handle("POST "+PathScale, s.serveReview("scale", s.admitScale))
	mux.Handle("POST "+PathClaims, s.serveReview("persistentvolumeclaims", s.admitClaim))
	mux.Handle("POST "+PathPods, s.serveReview("pods", s.admitPod))
	notPOST := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		writeStatus(w, http.StatusMethodNotAllowed, "admission reviews are POSTed")
	}
	for _, p := range []string{PathStatefulSets, PathScale, PathClaims, PathPods} {
		mux.HandleFunc(p, notPOST)
	}
	return mux
}

type metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	pvCreated  prometheus.Counter
	pvPending  prometheus.Counter
	pvMismatch *prometheus.CounterVec
	podsGated  prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_webhook_admission_requests_total", Help: "Admission reviews by route and result (allowed, patched, denied, error).",
		}, []string{"route", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "petfabric_webhook_admission_duration_seconds", Help: "Admission review handling time, including PV creation.",
			Buckets: []float64{0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		pvCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_webhook_persistentvolumes_created_total", Help: "PersistentVolumes created by admission calls.",
		}),
		pvPending: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_webhook_persistentvolumes_deferred_total", Help: "PersistentVolumes left to the PVC hook and reconcile loop because the admission deadline came first.",
		}),
		pvMismatch: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_webhook_pv_mismatch_total", Help: "Existing PersistentVolumes found not to fit their claim, by reason (storage_class, capacity, access_modes, driver, volume_id, owner).",
		}, []string{"reason"}),
		podsGated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_webhook_pods_gated_total", Help: "Pods created with the petfabric.io/claims-bound scheduling gate (a Datera claim was not Bound yet).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.pvCreated, m.pvPending, m.pvMismatch, m.podsGated)
	}
	return m
}

type requestTimer struct {
	m     *metrics
	route string
	start time.Time
}

func (m *metrics) start(route string) requestTimer { return requestTimer{m, route, time.Now()} }

func (t requestTimer) observe(result string) {
	t.m.requests.WithLabelValues(t.route, result).Inc()
	t.m.latency.WithLabelValues(t.route).Observe(time.Since(t.start).Seconds())
}
