package extender

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petfabric/petfabric/pkg/placement"
)

// Metrics are the extender's Prometheus metrics, on their own registry (served on the
// plain health port, never on the scheduler-facing TLS port; pkg/serving adds the Go,
// process, build and certificate metrics to it).
type Metrics struct {
	Registry  *prometheus.Registry
	duration  *prometheus.HistogramVec
	requests  *prometheus.CounterVec
	decisions *prometheus.CounterVec
	// chunked counts full-Node requests whose items were scanned in chunks at once.
	chunked prometheus.Counter
	requeue requeueMetrics
}

// NewMetrics creates and registers the extender's own metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "petfabric_extender_request_duration_seconds",
			Help: "Time to answer a scheduler extender request, from the first byte read to the last written. path is fast for pods without Datera volumes.",
			// 25 µs .. ~0.8 s: the interesting range is well below a millisecond.
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 16),
		}, []string{"verb", "path"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_extender_requests_total",
			Help: "Scheduler extender requests by verb and HTTP status code.",
		}, []string{"verb", "code"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_extender_filter_decisions_total",
			Help: "Per-node filter decisions for pods with Datera volumes, by reason (pass, no_report, stale_report, ...); fast_path counts requests for pods without Datera volumes.",
		}, []string{"reason"}),
		chunked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_extender_chunked_scans_total",
			Help: "Full-Node requests (nodeCacheCapable: false) whose Nodes.items array was large enough to be scanned in chunks on several CPUs at once.",
		}),
	}
	m.Registry.MustRegister(m.duration, m.requests, m.decisions, m.chunked)
	m.requeue = newRequeueMetrics(m.Registry)
	// Pre-create the label values people alert on, so they read 0 rather than absent.
	for _, r := range []placement.Reason{placement.ReasonPass, placement.ReasonNoReport, placement.ReasonBadReport,
		placement.ReasonStale, placement.ReasonNotProbed, placement.ReasonUnreachable, placement.ReasonRWOHeld} {
		m.decisions.WithLabelValues(string(r))
	}
	m.decisions.WithLabelValues("fast_path")
	return m
}

// RegisterReportStats exports the number of node reports by state, computed at scrape time.
func (m *Metrics) RegisterReportStats(c *Cache, now func() time.Time) {
	m.Registry.MustRegister(&reportCollector{cache: c, now: now})
}

func (m *Metrics) observe(verb, path string, code int, took time.Duration) {
	m.duration.WithLabelValues(verb, path).Observe(took.Seconds())
	m.requests.WithLabelValues(verb, codeLabel(code)).Inc()
}

func codeLabel(code int) string {
	switch code {
	case 200:
		return "200"
	case 400:
		return "400"
	case 413:
		return "413"
	}
	return "other"
}

var reportsDesc = prometheus.NewDesc("petfabric_extender_node_reports",
	"Node reachability reports in the extender's cache by state (fresh, stale, unreadable).", []string{"state"}, nil)

type reportCollector struct {
	cache *Cache
	now   func() time.Time
}

func (r *reportCollector) Describe(ch chan<- *prometheus.Desc) { ch <- reportsDesc }

func (r *reportCollector) Collect(ch chan<- prometheus.Metric) {
	fresh, stale, bad := r.cache.ReportStats(r.now())
	ch <- prometheus.MustNewConstMetric(reportsDesc, prometheus.GaugeValue, float64(fresh), "fresh")
	ch <- prometheus.MustNewConstMetric(reportsDesc, prometheus.GaugeValue, float64(stale), "stale")
	ch <- prometheus.MustNewConstMetric(reportsDesc, prometheus.GaugeValue, float64(bad), "unreadable")
}
