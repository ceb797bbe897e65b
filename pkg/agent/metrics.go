package agent

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/petfabric/petfabric/pkg/placement"
)

// Metrics are the agent's Prometheus metrics on their own registry.
type Metrics struct {
	Registry *prometheus.Registry
	up       *prometheus.GaugeVec
	rtt      *prometheus.GaugeVec
	probes   *prometheus.HistogramVec
	writes   *prometheus.CounterVec
	written  prometheus.Gauge
	attached prometheus.Gauge
}

// NewMetrics creates and registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petfabric_agent_portal_up",
			Help: "1 when the last iSCSI discovery probe of the portal succeeded for this node's initiator, else 0.",
		}, []string{"backstore", "portal"}),
		rtt: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "petfabric_agent_portal_rtt_seconds",
			Help: "Round-trip time the last successful probe of the portal measured.",
		}, []string{"backstore", "portal"}),
		probes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "petfabric_agent_probe_duration_seconds",
			Help:    "Duration of a whole discovery probe (connect, login, SendTargets, logout) by result (ok, refused, timeout, auth_failed, ...).",
			Buckets: prometheus.ExponentialBuckets(100e-6, 2, 16),
		}, []string{"result"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_agent_report_writes_total",
			Help: "Report Lease writes by result (success, error).",
		}, []string{"result"}),
		written: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "petfabric_agent_last_report_write_timestamp_seconds",
			Help: "Unix time of the last successful report Lease write.",
		}),
		attached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "petfabric_agent_attached_volumes",
			Help: "Volumes the FlexVolume driver has attached on this node (records in its state directory).",
		}),
	}
	m.Registry.MustRegister(m.up, m.rtt, m.probes, m.writes, m.written, m.attached,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.writes.WithLabelValues("success")
	m.writes.WithLabelValues("error")
	return m
}

func (m *Metrics) observeProbe(backstore, portal, result string, took time.Duration, rep placement.PortalReport) {
	m.probes.WithLabelValues(result).Observe(took.Seconds())
	if rep.OK {
		m.up.WithLabelValues(backstore, portal).Set(1)
		m.rtt.WithLabelValues(backstore, portal).Set(rep.RTT().Seconds())
	} else {
		m.up.WithLabelValues(backstore, portal).Set(0)
	}
}

func (m *Metrics) observeWrite(err error, _ time.Duration) {
	if err != nil {
		m.writes.WithLabelValues("error").Inc()
		return
	}
	m.writes.WithLabelValues("success").Inc()
	m.written.SetToCurrentTime()
}

// HealthHandler serves /healthz (the probe loop is running) and /metrics.
func HealthHandler(a *Agent, m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.Healthy() {
			http.Error(w, "no probe round completed recently", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	return mux
}
