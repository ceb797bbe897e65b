package reconcile

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Error reasons of the errors metric.
const (
	ReasonInvalidOptions  = "invalid_options"   // mutate.Decide refused a StatefulSet
	ReasonBuildPV         = "build_pv"          // the PV of a claim could not be built
	ReasonCreatePV        = "create_pv"         // the API refused a PV create
	ReasonConflict        = "pv_conflict"       // the PV name serves another claim
	ReasonDeletePV        = "delete_pv"         // the API refused a PV delete
	ReasonPrecondition    = "precondition"      // the PV changed since it was judged
	ReasonDateraClient    = "datera_client"     // no Datera client (credentials, endpoint)
	ReasonDateraDelete    = "datera_delete"     // Datera refused or could not be reached
	ReasonMalformedPV     = "malformed_pv"      // a managed PV without flexVolume.options.volumeID
	ReasonLeaderElection  = "leader_election"   // the elector could not be built
	ReasonClaimNotBinding = "claim_not_binding" // a claim exists whose class differs from the PV's
)

type metrics struct {
	pvsCreated      prometheus.Counter
	orphansDeleted  prometheus.Counter
	releasedDeleted prometheus.Counter
	dateraDeleted   prometheus.Counter
	errors          *prometheus.CounterVec
	isLeader        prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		pvsCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_pvs_created_total",
			Help: "PersistentVolumes the reconcile loop created for ordinals the webhook missed.",
		}),
		orphansDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_orphans_deleted_total",
			Help: "Available PersistentVolumes deleted after the grace period because no StatefulSet ordinal needs them.",
		}),
		releasedDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_released_pvs_deleted_total",
			Help: "Released or Failed PersistentVolumes with reclaim policy Delete deleted after their Datera volume.",
		}),
		dateraDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "petfabric_reconcile_datera_volumes_deleted_total",
			Help: "Datera app_instances deleted for reclaim policy Delete (including ones already gone).",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_reconcile_errors_total",
			Help: "Reconcile errors by reason.",
		}, []string{"reason"}),
		isLeader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "petfabric_reconcile_is_leader",
			Help: "1 while this replica holds the reconcile lease and runs the loop.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pvsCreated, m.orphansDeleted, m.releasedDeleted, m.dateraDeleted, m.errors, m.isLeader} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
